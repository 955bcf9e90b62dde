"""Image preprocessing as plain, recordable data.

The store and every model file record the preprocessing that produced their
activations, so it is a small dataclass that round-trips through JSON, builds
the torchvision transform, and knows the valid pixel range after
normalization (for clipping during synthesis).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T  # noqa: N812 - torchvision convention

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Preprocessing"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """Resize the short side to ``resize``, center-crop ``crop``, normalize.

    The default is the ImageNet recipe torchvision's classification weights use.
    """

    resize: int = 256
    crop: int = 224
    mean: tuple[float, ...] = field(default=IMAGENET_MEAN)
    std: tuple[float, ...] = field(default=IMAGENET_STD)
    interpolation: str = "bilinear"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict`."""
        return cls(
            resize=int(data["resize"]),
            crop=int(data["crop"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            interpolation=str(data.get("interpolation", "bilinear")),
        )

    @classmethod
    def from_torchvision(cls, transforms: Any) -> Preprocessing:
        """Read torchvision's ``ImageClassification`` preset (``weights.transforms()``)."""
        resize = transforms.resize_size
        crop = transforms.crop_size
        return cls(
            resize=int(resize[0] if isinstance(resize, (list, tuple)) else resize),
            crop=int(crop[0] if isinstance(crop, (list, tuple)) else crop),
            mean=tuple(float(v) for v in transforms.mean),
            std=tuple(float(v) for v in transforms.std),
            interpolation=InterpolationMode(transforms.interpolation).value,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form recorded in stores and model files."""
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    def transform(self) -> T.Compose:
        """PIL RGB image -> normalized float32 tensor of shape (3, crop, crop)."""
        return T.Compose(
            [
                T.PILToTensor(),
                T.Resize(
                    self.resize, interpolation=InterpolationMode(self.interpolation), antialias=True
                ),
                T.CenterCrop(self.crop),
                T.ToDtype(torch.float32, scale=True),
                T.Normalize(self.mean, self.std),
            ]
        )

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.transform()(image)

    def pixel_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Lowest and highest normalized value per channel, shape (1, 3, 1, 1) each."""
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (0.0 - mean) / std, (1.0 - mean) / std

    def normalize(self, images01: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (N, 3, H, W) -> network input."""
        mean = torch.tensor(self.mean, device=images01.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images01.device).view(1, -1, 1, 1)
        return (images01 - mean) / std

    def denormalize(self, inputs: torch.Tensor) -> torch.Tensor:
        """Network input -> images in [0, 1] (clamped), for saving and display."""
        mean = torch.tensor(self.mean, device=inputs.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=inputs.device).view(1, -1, 1, 1)
        return (inputs * std + mean).clamp(0.0, 1.0)

    def to_uint8(self, inputs: torch.Tensor) -> np.ndarray:
        """Network inputs (N, 3, H, W) -> uint8 images (N, H, W, 3), for PNGs and metrics."""
        img01 = self.denormalize(inputs.detach().cpu().float())
        return (img01.permute(0, 2, 3, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
