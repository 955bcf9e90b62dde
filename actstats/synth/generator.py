"""The deep generator prior of DGN-AM: an up-convolutional decoder from a layer's code to pixels.

Dosovitskiy & Brox (2016, "Generating images with perceptual similarity
metrics based on deep networks") train a decoder ``G`` that inverts a layer of
an encoder network ``E``; Nguyen et al. (2016, DGN-AM) then search ``G``'s input
code ``h`` for the image ``G(h)`` a neuron prefers. :class:`UpConvGenerator` is
that decoder sized for any code width and image size: two fully connected
layers, a reshape to a small map, then up-convolutions (4x4, stride 2) that
double the map until it covers the image, each followed by a 3x3 convolution,
leaky ReLUs (slope 0.3 as in the paper) and a sigmoid to pixels in ``[0, 1]``.

The code is standardized inside ``G`` with the store's per-unit mean and
standard deviation of the layer (buffers ``code_mean``/``code_std``), which
also give DGN-AM's clip box (:meth:`UpConvGenerator.code_bounds`).

The architecture is fixed here and described by :class:`GeneratorArch` (plain
numbers), so a generator file never names code to import: loading builds this
class from the numbers and fills it with tensors.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from actstats.errors import ActstatsError

__all__ = ["ARCHITECTURE", "Discriminator", "GeneratorArch", "UpConvGenerator"]

#: The one architecture a generator file may name.
ARCHITECTURE = "upconv-v1"
_SLOPE = 0.3
_MIN_START = 4
_MAX_UPSAMPLINGS = 5


@dataclass(frozen=True)
class GeneratorArch:
    """The numbers that fix :class:`UpConvGenerator`'s shapes.

    ``code_dim`` is the layer's (stored, reduced) width, ``image_size`` the
    encoder's input crop, ``width`` the channels of the last up-convolution
    (earlier stages double it, up to 8x), ``hidden`` the fully connected width.
    """

    code_dim: int
    image_size: int
    width: int = 32
    hidden: int = 256

    def __post_init__(self) -> None:
        for name in ("code_dim", "image_size", "width", "hidden"):
            if int(getattr(self, name)) < 1:
                raise ActstatsError(f"generator {name} {getattr(self, name)}: must be >= 1")

    @property
    def upsamplings(self) -> int:
        """How many times the start map doubles (the start map is at least 4x4)."""
        k = 0
        while k < _MAX_UPSAMPLINGS and self.image_size / 2 ** (k + 1) >= _MIN_START:
            k += 1
        return k

    @property
    def start(self) -> int:
        """Side of the first map; ``start * 2**upsamplings >= image_size``."""
        return math.ceil(self.image_size / 2**self.upsamplings)

    def channels(self) -> list[int]:
        """Channels of the start map and after each up-convolution."""
        k = self.upsamplings
        return [self.width * min(2 ** (k - i), 8) for i in range(k + 1)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers (the manifest's ``arch``)."""
        return asdict(self)


class UpConvGenerator(nn.Module):
    """``G(h)``: codes (n, code_dim) -> images in ``[0, 1]`` (n, 3, image_size, image_size)."""

    def __init__(self, arch: GeneratorArch) -> None:
        super().__init__()
        self.arch = arch
        ch = arch.channels()
        self.register_buffer("code_mean", torch.zeros(arch.code_dim, dtype=torch.float64))
        self.register_buffer("code_std", torch.ones(arch.code_dim, dtype=torch.float64))
        self.fc = nn.Sequential(
            nn.Linear(arch.code_dim, arch.hidden),
            nn.LeakyReLU(_SLOPE),
            nn.Linear(arch.hidden, ch[0] * arch.start**2),
            nn.LeakyReLU(_SLOPE),
        )
        layers: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise(ch):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1),
                nn.LeakyReLU(_SLOPE),
                nn.Conv2d(c_out, c_out, 3, padding=1),
                nn.LeakyReLU(_SLOPE),
            ]
        layers.append(nn.Conv2d(ch[-1], 3, 3, padding=1))
        self.up = nn.Sequential(*layers)

    def set_code_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """The store's per-unit mean and standard deviation of the code layer (float64)."""
        self.code_mean.copy_(torch.as_tensor(mean, dtype=torch.float64))
        self.code_std.copy_(torch.as_tensor(std, dtype=torch.float64).clamp_min(1e-6))

    def code_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """DGN-AM's clip box per unit: ``[0, max(mean + 3 std, 0)]`` (float64)."""
        upper = (self.code_mean + 3.0 * self.code_std).clamp_min(0.0)
        return torch.zeros_like(upper), upper

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """Images in ``[0, 1]`` for codes in the layer's own units."""
        z = (codes - self.code_mean.to(codes)) / self.code_std.to(codes)
        x = self.fc(z).view(len(codes), -1, self.arch.start, self.arch.start)
        x = torch.sigmoid(self.up(x))
        size = self.arch.image_size
        if x.shape[-1] != size:  # the map overshoots sizes that are not 4 * 2**k: centre crop
            top = (x.shape[-1] - size) // 2
            x = x[..., top : top + size, top : top + size]
        return x


class Discriminator(nn.Module):
    """Real-vs-generated logits (n,) of images in ``[0, 1]``: strided convs, a linear head.

    The adversarial part of Dosovitskiy & Brox's loss; only training uses it.
    """

    def __init__(self, image_size: int, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, size = 3, image_size
        c_out = width
        while size > _MIN_START:
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c_in, c_out, size = c_out, min(c_out * 2, 8 * width), (size + 1) // 2
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """One logit per image: > 0 means "looks real"."""
        return self.head(self.body(2.0 * images - 1.0).mean(dim=(2, 3))).squeeze(1)
