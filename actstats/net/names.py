"""Layer and neuron names.

Two vocabularies name a layer:

* VGG aliases (``conv1_1`` .. ``conv5_3``, ``pool1`` .. ``pool5``, ``fc6``,
  ``fc7``, ``fc8``) for any network built like torchvision's VGG: a
  ``features`` Sequential of Conv2d/ReLU/MaxPool2d blocks and a ``classifier``
  Sequential of Linear layers. Conv and hidden fc aliases point at the ReLU
  *after* the layer (post-activation); the last fc alias points at the logits.
  Blocks are numbered by max-pooling stages, so VGG16 gets its paper names and
  a small VGG-style net gets the same kind of names.
* Module names as ``print(model)`` shows them (``features.28``, ``layer3.1``).

A neuron is ``LAYER:INDEX`` (``fc8:207``), a conv channel ``conv5_3:12``
(spatial mean) or ``conv5_3:12@3,4`` (one position), or ``LAYER:CLASSNAME``.

A class is named by its folder: a category name (``golden_retriever``, compared
case-, space- and dash-insensitively by :func:`normalize_class_name`) or an ImageNet
WordNet id (``n02099601``), mapped to output indices by the standard ImageNet-1k
order shipped in ``actstats/resources/imagenet_wnids.txt`` (:func:`output_index`,
:func:`folder_for_output`). This is the one class-name normaliser.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from torch import nn

from actstats.errors import ActstatsError
from actstats.resources import read_text

__all__ = [
    "NeuronSpec",
    "folder_for_output",
    "imagenet_wnids",
    "normalize_class_name",
    "output_index",
    "parse_neuron",
    "vgg_aliases",
]

_WNID_RE = re.compile(r"^n\d{8}$")


def vgg_aliases(model: nn.Module) -> dict[str, str]:
    """Map VGG aliases to module names for a VGG-shaped ``model``.

    Returns an empty dict when the model has no ``features``/``classifier``
    Sequentials.

    >>> import torchvision
    >>> aliases = vgg_aliases(torchvision.models.vgg16())
    >>> aliases["conv4_3"], aliases["pool5"], aliases["fc8"]
    ('features.22', 'features.30', 'classifier.6')
    """
    features = getattr(model, "features", None)
    classifier = getattr(model, "classifier", None)
    if not isinstance(features, nn.Sequential) or not isinstance(classifier, nn.Sequential):
        return {}
    aliases: dict[str, str] = {}
    block, conv_in_block = 1, 0
    pending: str | None = None  # alias of the last conv, waiting for its ReLU
    for name, module in features.named_children():
        if isinstance(module, nn.Conv2d):
            conv_in_block += 1
            pending = f"conv{block}_{conv_in_block}"
            aliases[pending] = f"features.{name}"
        elif isinstance(module, (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU)) and pending:
            aliases[pending] = f"features.{name}"
            pending = None
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            aliases[f"pool{block}"] = f"features.{name}"
            block, conv_in_block, pending = block + 1, 0, None
    if not aliases:
        return {}
    linears = [n for n, m in classifier.named_children() if isinstance(m, nn.Linear)]
    children = list(classifier.named_children())
    first_fc = block  # VGG16: 5 pooling stages, so the first fc is fc6
    for i, lin_name in enumerate(linears):
        alias = f"fc{first_fc + i}"
        target = f"classifier.{lin_name}"
        if i < len(linears) - 1:
            pos = [n for n, _ in children].index(lin_name)
            for n, m in children[pos + 1 :]:
                if isinstance(m, nn.Linear):
                    break
                if isinstance(m, (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU)):
                    target = f"classifier.{n}"
                    break
        aliases[alias] = target
    return aliases


@dataclass(frozen=True)
class NeuronSpec:
    """A unit of a layer: ``layer`` plus either ``index`` or ``class_name``.

    ``yx`` picks one spatial position of a conv channel; without it the
    channel's spatial mean is the unit.
    """

    layer: str
    index: int | None = None
    class_name: str | None = None
    yx: tuple[int, int] | None = None

    def __str__(self) -> str:
        unit = str(self.index) if self.index is not None else str(self.class_name)
        pos = f"@{self.yx[0]},{self.yx[1]}" if self.yx else ""
        return f"{self.layer}:{unit}{pos}"


_NEURON_RE = re.compile(r"^(?P<layer>[^:@\s]+):(?P<unit>[^@\s]+)(?:@(?P<y>\d+),(?P<x>\d+))?$")


def parse_neuron(text: str) -> NeuronSpec:
    """Parse ``"fc8:207"``, ``"conv5_3:12@3,4"`` or ``"fc8:golden_retriever"``.

    Only the syntax is checked here; whether the layer, index or class exists
    is checked against a network by :meth:`actstats.net.network.Network.resolve_neuron`.

    >>> parse_neuron("conv5_3:12@3,4")
    NeuronSpec(layer='conv5_3', index=12, class_name=None, yx=(3, 4))
    """
    match = _NEURON_RE.match(text.strip())
    if not match:
        raise ActstatsError(
            f"--neuron {text!r}: expected LAYER:INDEX, LAYER:INDEX@Y,X or LAYER:CLASSNAME "
            "(e.g. fc8:207, conv5_3:12, fc8:golden_retriever)"
        )
    unit = match["unit"]
    yx = (int(match["y"]), int(match["x"])) if match["y"] is not None else None
    if unit.isdigit():
        return NeuronSpec(match["layer"], index=int(unit), yx=yx)
    return NeuronSpec(match["layer"], class_name=unit, yx=yx)


# ------------------------------------------------------------------ class names
def normalize_class_name(name: str) -> str:
    """The comparison key of a class name: ``Golden-Retriever`` = ``golden_retriever``."""
    return name.lower().replace("_", " ").replace("-", " ").strip()


@cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in output order (index 207 = ``n02099601``)."""
    return tuple(read_text("imagenet_wnids.txt").split())


def output_index(name: str, categories: Sequence[str] | None) -> int | None:
    """The output unit of a class named by a wnid or a category name; None where unknown.

    A wnid maps through the ImageNet-1k order unless ``categories`` is a list of
    another length (a network that is not an ImageNet-1k classifier).
    """
    wnids = imagenet_wnids()
    if _WNID_RE.match(name) and name in wnids and len(categories or wnids) == len(wnids):
        return wnids.index(name)
    keys = [normalize_class_name(c) for c in categories or []]
    key = normalize_class_name(name)
    return keys.index(key) if key in keys else None


def folder_for_output(folders: Sequence[str], index: int, label: str | None) -> str | None:
    """The class folder of output unit ``index`` (category ``label``); None where none is.

    A folder named like the label (normalized) wins; folders that are all wnids map
    through the ImageNet-1k order.
    """
    by_name = {normalize_class_name(f): f for f in folders}
    if label is not None and normalize_class_name(label) in by_name:
        return by_name[normalize_class_name(label)]
    wnids = imagenet_wnids()
    if folders and all(_WNID_RE.match(f) for f in folders) and index < len(wnids):
        return wnids[index] if wnids[index] in folders else None
    return None
