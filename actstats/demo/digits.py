"""The embedded default: scikit-learn's digits as class folders, and two small nets.

Nothing is downloaded: :func:`write_digit_folders` turns the 1,797 8x8 digits
that scikit-learn ships into ``root/<class>/*.png`` (upsampled to 32x32 RGB),
the same layout as ImageNet. :func:`digits_vgg` is a VGG-shaped network (so it
gets VGG layer names: ``conv1_1`` .. ``pool5``, ``fc6``, ``fc7``, ``fc8``) and
:func:`digits_judge` a differently built one used only to judge realism.
:func:`train_classifier` trains either in seconds on a CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image
from torch import nn

from actstats.net.preprocessing import Preprocessing

__all__ = [
    "BACKGROUNDS",
    "DIGITS_JUDGE_LAYERS",
    "DIGITS_NET_LAYERS",
    "DIGITS_PREPROCESSING",
    "DIGIT_NAMES",
    "SPLITS",
    "DigitsVGG",
    "digit_scenes",
    "digits_judge",
    "digits_vgg",
    "load_digit_folder_tensors",
    "train_classifier",
    "write_digit_folders",
]

#: Layers of :func:`actstats.demo.digits.digits_vgg` where Fréchet distances are measured.
DIGITS_NET_LAYERS = ("conv1_1", "conv2_1", "conv3_2", "conv4_1", "conv5_1", "fc6", "fc7")
#: Layers of :func:`actstats.demo.digits.digits_judge`: its three conv blocks (the last,
#: averaged, is the head's input).
DIGITS_JUDGE_LAYERS = ("body.2", "body.6", "body.10")
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
IMAGE_SIZE = 32
#: (start, step) of each split over a class's samples in scikit-learn's order.
SPLITS = {"fit": (0, 2), "holdout": (1, 2), "validation": (1, 4), "test": (3, 4)}
DIGITS_PREPROCESSING = Preprocessing(
    resize=IMAGE_SIZE, crop=IMAGE_SIZE, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
)


def write_digit_folders(
    root: str | Path,
    *,
    per_class: int | None = None,
    classes: tuple[str, ...] = DIGIT_NAMES,
    split: str = "fit",
) -> Path:
    """Write one split of scikit-learn's digits as ``root/<name>/<i>.png`` (32x32 RGB).

    Splits (:data:`SPLITS`, per class in scikit-learn's order): ``fit`` the even-numbered
    samples (the networks, the judge and the statistics learn from them); the odd ones are
    ``holdout``, alternately ``validation`` (for choosing defaults) and ``test`` (for the
    reported numbers), so no reported number is measured on an image anything learned
    from or was tuned on.
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: use one of {', '.join(SPLITS)}")
    start, step = SPLITS[split]
    from sklearn.datasets import load_digits

    root = Path(root)
    digits = load_digits()
    for label, name in enumerate(DIGIT_NAMES):
        if name not in classes:
            continue
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        idx = np.flatnonzero(digits.target == label)[start::step]
        for i in idx[:per_class]:
            pixels = (digits.images[i] / 16.0 * 255.0).astype(np.uint8)
            img = Image.fromarray(pixels, mode="L").resize(
                (IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR
            )
            img.convert("RGB").save(folder / f"{i:04d}.png")
    return root


def load_digit_folder_tensors(root: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """All images under ``root/<digit name>/`` as normalized inputs and labels."""
    xs, ys = [], []
    for label, name in enumerate(DIGIT_NAMES):
        for path in sorted((Path(root) / name).glob("*.png")):
            xs.append(DIGITS_PREPROCESSING(Image.open(path).convert("RGB")))
            ys.append(label)
    return torch.stack(xs), torch.tensor(ys)


class DigitsVGG(nn.Module):
    """VGG16's shape at 32x32: five conv blocks with max pooling, three fc layers.

    ``features``/``classifier`` Sequentials give it VGG names (``fc8`` is the logits).
    """

    actstats_categories: ClassVar[list[str]] = list(DIGIT_NAMES)
    actstats_preprocessing = DIGITS_PREPROCESSING

    def __init__(
        self,
        widths: tuple[int, ...] = (16, 32, 32, 32, 32),
        hidden: int = 64,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for block, width in enumerate(widths):
            for _ in range(2 if block == 2 else 1):
                layers += [nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU()]
                c_in = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(c_in, hidden),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (n, 10) of a batch (n, 3, 32, 32); ``features``/``classifier`` as in VGG."""
        return self.classifier(torch.flatten(self.features(x), 1))


def digits_vgg() -> DigitsVGG:
    """Factory for ``--model actstats.demo.digits:digits_vgg`` (seeded random init)."""
    torch.manual_seed(0)
    return DigitsVGG()


class _Judge(nn.Module):
    """A differently built classifier: 5x5 convs, batch norm, global average pooling."""

    actstats_categories: ClassVar[list[str]] = list(DIGIT_NAMES)
    actstats_preprocessing = DIGITS_PREPROCESSING

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 24, 5, padding=2),
            nn.BatchNorm2d(24),
            nn.ELU(),
            nn.AvgPool2d(2),
            nn.Conv2d(24, 48, 5, padding=2),
            nn.BatchNorm2d(48),
            nn.ELU(),
            nn.AvgPool2d(2),
            nn.Conv2d(48, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ELU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.body(x)), 1))


def digits_judge() -> nn.Module:
    """Factory for the judge network (``actstats.demo.digits:digits_judge``), seed 1."""
    torch.manual_seed(1)
    return _Judge()


def train_classifier(
    module: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int = 30,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 2e-3,
    max_shift: int = 2,
) -> float:
    """Train ``module`` in place with Adam and random shifts; return training accuracy.

    Deterministic for a given ``seed`` on the CPU.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * ((len(inputs) + batch_size - 1) // batch_size)
    )
    module.train()
    low = float(inputs.min())
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=gen)
        for start in range(0, len(inputs), batch_size):
            idx = order[start : start + batch_size]
            x = inputs[idx]
            if max_shift:
                dy, dx = torch.randint(-max_shift, max_shift + 1, (2,), generator=gen).tolist()
                x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
                x = _blank_wrapped(x, dy, dx, low)
            loss = nn.functional.cross_entropy(module(x), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    module.eval()
    with torch.no_grad():
        return float((module(inputs).argmax(1) == labels).float().mean())


def _blank_wrapped(x: torch.Tensor, dy: int, dx: int, value: float) -> torch.Tensor:
    """Fill the rows/columns that ``torch.roll`` wrapped around with background."""
    x = x.clone()
    if dy > 0:
        x[:, :, :dy] = value
    elif dy < 0:
        x[:, :, dy:] = value
    if dx > 0:
        x[:, :, :, :dx] = value
    elif dx < 0:
        x[:, :, :, dx:] = value
    return x


#: scikit-image's bundled photographs (no download), the natural backgrounds of
#: :func:`digit_scenes`.
BACKGROUNDS = (
    "astronaut",
    "camera",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "grass",
    "gravel",
    "brick",
    "clock",
)


def _photos() -> list[np.ndarray]:
    import skimage.data

    photos = []
    for name in BACKGROUNDS:
        img = np.asarray(getattr(skimage.data, name)())
        photos.append(np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3])
    return photos


def digit_scenes(
    digits: np.ndarray,
    *,
    size: int = IMAGE_SIZE,
    scale: tuple[float, float] = (0.45, 0.75),
    darken: float = 0.6,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Paste each digit onto a natural background at a random scale and position.

    ``digits`` are (n, h, w, 3) uint8 digit images (white ink on black). Each becomes
    a ``size`` x ``size`` scene: a random crop (64 to 256 px) of one of scikit-image's
    photographs (:data:`BACKGROUNDS`), resized and darkened by ``darken``, with the digit
    resized to a side of ``scale`` times ``size`` and composited as ink (its brightness is
    the alpha) at a random position. Localization then has a real answer that is not the
    whole frame.

    Returns
    -------
    scenes : ndarray of shape (n, size, size, 3), uint8
    boxes : ndarray of shape (n, 4), int
        The ink's box ``(x0, y0, x1, y1)`` (half-open) where the ink is above half.
    """
    rng = np.random.default_rng(seed)
    photos = _photos()
    scenes = np.empty((len(digits), size, size, 3), np.uint8)
    boxes = np.empty((len(digits), 4), int)
    for i, digit in enumerate(np.asarray(digits)):
        photo = photos[rng.integers(len(photos))]
        side = int(rng.integers(64, min(256, *photo.shape[:2]) + 1))
        y, x = (int(rng.integers(0, d - side + 1)) for d in photo.shape[:2])
        crop = Image.fromarray(photo[y : y + side, x : x + side]).resize((size, size))
        canvas = np.asarray(crop, dtype=np.float64) * darken
        s = round(size * rng.uniform(*scale))
        ink = Image.fromarray(digit).convert("L").resize((s, s), Image.Resampling.BILINEAR)
        alpha = np.asarray(ink, dtype=np.float64)[..., None] / 255.0
        y0, x0 = (int(rng.integers(0, size - s + 1)) for _ in range(2))
        patch = canvas[y0 : y0 + s, x0 : x0 + s]
        canvas[y0 : y0 + s, x0 : x0 + s] = alpha * 255.0 + (1.0 - alpha) * patch
        scenes[i] = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
        ys, xs = np.nonzero(alpha[..., 0] > 0.5)
        boxes[i] = (x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1)
    return scenes, boxes
