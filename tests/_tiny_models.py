"""One small, seeded member of each torchvision family with a non-CNN layout, as factories.

``package.module:factory`` specs (``_tiny_models:vit``) so that collect, fit and
sample rebuild the same network (the seed fixes its weights, hence its sha256).
Built from torchvision's own classes (VisionTransformer, SwinTransformer, MaxVit,
ConvNeXt) with few, narrow blocks and 32 px inputs; the layouts are those of the
full-size models (see benchmarks/families.py for the sweep over every model).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision
from torch import nn
from torchvision.models import ConvNeXt, MaxVit, SwinTransformer, VisionTransformer
from torchvision.models.convnext import CNBlockConfig
from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformerBlockV2

SIZE = 32
PREPROCESSING = {
    "resize": 36,
    "crop": SIZE,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}


def _seeded(build: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = build()
    module.actstats_preprocessing = dict(PREPROCESSING)
    return module


def vit() -> nn.Module:
    """ViT: 1 class token + 4x4 patch tokens of width 16."""
    return _seeded(
        lambda: VisionTransformer(
            image_size=SIZE,
            patch_size=8,
            num_layers=2,
            num_heads=2,
            hidden_dim=16,
            mlp_dim=32,
            num_classes=10,
        )
    )


def swin() -> nn.Module:
    """Swin (v1): channels-last stages of 8x8x8 and 4x4x16."""
    return _seeded(
        lambda: SwinTransformer(
            patch_size=[4, 4],
            embed_dim=8,
            depths=[1, 1],
            num_heads=[1, 2],
            window_size=[2, 2],
            num_classes=10,
        )
    )


def swin_v2() -> nn.Module:
    """Swin v2 blocks and patch merging."""
    return _seeded(
        lambda: SwinTransformer(
            patch_size=[4, 4],
            embed_dim=8,
            depths=[1, 1],
            num_heads=[1, 2],
            window_size=[2, 2],
            num_classes=10,
            block=SwinTransformerBlockV2,
            downsample_layer=PatchMergingV2,
        )
    )


def maxvit() -> nn.Module:
    """MaxViT: NCHW between blocks, window partitions (N, G, P, C) inside them."""
    return _seeded(
        lambda: MaxVit(
            input_size=(SIZE, SIZE),
            stem_channels=8,
            partition_size=2,
            block_channels=[8, 16],
            block_layers=[1, 1],
            head_dim=4,
            stochastic_depth_prob=0.0,
            num_classes=10,
        )
    )


def convnext() -> nn.Module:
    """ConvNeXt: NCHW blocks whose MLP runs channels-last between two Permutes."""
    return _seeded(
        lambda: ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 1)], num_classes=10)
    )


def resnet18() -> nn.Module:
    """torchvision's resnet18 itself (random weights) at 32 px."""
    return _seeded(lambda: torchvision.models.resnet18(num_classes=10))


def mobilenet_v3_small() -> nn.Module:
    """torchvision's mobilenet_v3_small (squeeze-excitation, hardswish) at 32 px."""
    return _seeded(lambda: torchvision.models.mobilenet_v3_small(num_classes=10))
