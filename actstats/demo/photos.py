"""Class folders of real photos for a real ImageNet network, made from photos that ship in wheels.

scikit-image, scikit-learn and matplotlib install a few photographs with their
data; five of them show an ImageNet class plainly (checked by eye, and by the
network under study, EfficientNet-Lite1, which ranks the class first on the
whole photo). :func:`write_photo_folders` cuts each into square crops of
several scales and positions, some mirrored, and writes three disjoint splits
as ImageNet-style folders named by WordNet id: ``fit`` (statistics), ``validation``
(choosing defaults) and ``test`` (reported numbers). Each class has one or two
source photos, so the splits differ in crop, not in scene: a realism number
measured against ``test`` says "looks like this photo", not "like the class".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["PHOTO_CLASSES", "SPLITS", "PhotoClass", "crop_boxes", "write_photo_folders"]

SPLITS = ("fit", "validation", "test")


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, name)()

    return load


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)

    return load


@dataclass(frozen=True)
class PhotoClass:
    """An ImageNet class (output index, WordNet id, name) and the photos that show it."""

    index: int
    wnid: str
    name: str
    photos: tuple[Callable[[], np.ndarray], ...]


PHOTO_CLASSES: tuple[PhotoClass, ...] = (
    PhotoClass(285, "n02124075", "Egyptian cat", (_skimage("chelsea"),)),
    PhotoClass(967, "n07920052", "espresso", (_skimage("coffee"),)),
    PhotoClass(698, "n03877845", "palace", (_sklearn("china.jpg"),)),
    PhotoClass(665, "n03785016", "moped", (_skimage("stereo_motorcycle"),)),
    PhotoClass(872, "n04485082", "tripod", (_skimage("camera"),)),
)


def crop_boxes(
    height: int, width: int, n: int, rng: np.random.RandomState, *, min_scale: float = 0.5
) -> list[tuple[int, int, int, bool]]:
    """``n`` square crops ``(top, left, side, mirrored)``: side a fraction in
    ``[min_scale, 1]`` of the short side, anywhere inside the photo."""
    short = min(height, width)
    boxes = []
    for _ in range(n):
        side = round(short * rng.uniform(min_scale, 1.0))
        top = int(rng.randint(0, height - side + 1))
        left = int(rng.randint(0, width - side + 1))
        boxes.append((top, left, side, bool(rng.rand() < 0.5)))
    return boxes


def _rgb_photos(cls: PhotoClass) -> list[np.ndarray]:
    out = []
    for load in cls.photos:
        data = load()
        images = data if isinstance(data, tuple) else (data,)  # stereo pairs: both views
        for img in images:
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
                continue  # e.g. the stereo pair's float disparity map
            rgb = np.stack([img] * 3, axis=-1) if img.ndim == 2 else img[..., :3]
            out.append(rgb)
    return out


def write_photo_folders(
    root: str | Path,
    counts: Sequence[int] = (64, 16, 16),
    *,
    size: int = 256,
    classes: Sequence[PhotoClass] = PHOTO_CLASSES,
    seed: int = 0,
) -> dict[str, Path]:
    """Write ``root/<split>/<wnid>/<k>.png`` crops (``size`` px) for each split.

    ``counts`` are the crops per class of ``fit``, ``validation`` and ``test``.
    Returns ``{split: folder}``. Deterministic for a given ``seed``; an existing
    file is left as it is (so a second call costs nothing).
    """
    root = Path(root)
    rng = np.random.RandomState(seed)
    folders = {split: root / split for split in SPLITS}
    for cls in classes:
        photos = _rgb_photos(cls)
        for split, n in zip(SPLITS, counts, strict=True):
            out = folders[split] / cls.wnid
            out.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                photo = photos[rng.randint(len(photos))]
                (top, left, side, mirror) = crop_boxes(*photo.shape[:2], 1, rng)[0]
                path = out / f"{k:04d}.png"
                if path.exists():
                    continue
                crop = Image.fromarray(photo[top : top + side, left : left + side])
                crop = crop.resize((size, size), Image.Resampling.BICUBIC)
                if mirror:
                    crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                tmp = path.with_suffix(".tmp.png")
                crop.save(tmp)
                tmp.replace(path)
    return folders
