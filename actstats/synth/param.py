"""Image parameterizations: each returns ``(params, image_fn)``.

``params`` is the list of leaf tensors the optimizer updates; ``image_fn()``
builds the batch of network inputs (N, 3, H, W), already normalized with the
network's :class:`~actstats.net.preprocessing.Preprocessing`. Keeping the inputs in
normalized space makes Simonyan's "zero image" the literal zero tensor.

Pixel parameters are projected after each step by hooks (:func:`clip_pixels`,
:func:`blur_pixels`) that the render loop calls; the decorrelated FFT
parameterization needs no clipping (a sigmoid keeps it in range).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F  # noqa: N812

from actstats.errors import ActstatsError
from actstats.net.preprocessing import Preprocessing

__all__ = ["ImageFn", "StepHook", "blur_pixels", "clip_pixels", "fft_image", "pixel_image"]

ImageFn = Callable[[], torch.Tensor]
#: ``hook(params, step)``: run under ``no_grad`` after each optimizer step.
StepHook = Callable[[list[torch.Tensor], int], None]

# Lucent's ImageNet colour correlation (square root of the RGB covariance).
_COLOR_CORRELATION_SVD_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]]
)


def pixel_image(
    n: int,
    size: int,
    *,
    device: torch.device,
    init: str = "zero",
    std: float = 0.01,
    generator: torch.Generator | None = None,
    start: torch.Tensor | None = None,
) -> tuple[list[torch.Tensor], ImageFn]:
    """One free value per normalized pixel.

    ``init``: ``zero`` (the dataset-mean image, Simonyan's start), ``noise``
    (Gaussian of ``std``), or give ``start`` (N, 3, size, size) to continue from
    an image.
    """
    if start is not None:
        x = start.detach().clone().to(device)
    elif init == "zero":
        x = torch.zeros(n, 3, size, size, device=device)
    elif init == "noise":
        x = torch.randn(n, 3, size, size, generator=generator).to(device) * std
    else:
        raise ActstatsError(f"init {init!r}: use zero or noise")
    x.requires_grad_(True)
    return [x], lambda: x


def fft_image(
    n: int,
    size: int,
    preprocessing: Preprocessing,
    *,
    device: torch.device,
    std: float = 0.01,
    decay: float = 1.0,
    decorrelate: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[list[torch.Tensor], ImageFn]:
    """Fourier coefficients scaled by 1/frequency, decorrelated colours, sigmoid to [0, 1].

    Gradient steps then move low frequencies as fast as high ones, which removes
    much of the high-frequency noise of pixel-space ascent (Olah et al. 2017).
    """
    freqs = _rfft2d_freqs(size, size).to(device)
    scale = 1.0 / torch.clamp(freqs, min=1.0 / size) ** decay
    spectrum = (torch.randn(n, 3, *freqs.shape, 2, generator=generator) * std).to(device)
    spectrum.requires_grad_(True)
    corr = _COLOR_CORRELATION_SVD_SQRT.to(device)
    corr = corr / corr.norm(dim=0).max()

    def image_fn() -> torch.Tensor:
        coeffs = torch.view_as_complex(spectrum) * scale
        img = torch.fft.irfft2(coeffs, s=(size, size), norm="ortho") / 4.0
        if decorrelate:
            img = torch.einsum("ij,njhw->nihw", corr, img)
        return preprocessing.normalize(torch.sigmoid(img))

    return [spectrum], image_fn


def _rfft2d_freqs(h: int, w: int) -> torch.Tensor:
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


def clip_pixels(preprocessing: Preprocessing) -> StepHook:
    """Clamp pixel parameters to the valid normalized range (``pixel_bounds``)."""
    low, high = preprocessing.pixel_bounds()

    def hook(params: list[torch.Tensor], step: int) -> None:
        x = params[0]
        x.copy_(torch.maximum(torch.minimum(x, high.to(x)), low.to(x)))

    return hook


def blur_pixels(sigma: float, every: int) -> StepHook:
    """Gaussian-blur pixel parameters every ``every`` steps (Yosinski et al. 2015)."""
    radius = max(1, round(2 * sigma))
    coords = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel1d = torch.exp(-0.5 * (coords / sigma) ** 2)
    kernel1d = kernel1d / kernel1d.sum()

    def hook(params: list[torch.Tensor], step: int) -> None:
        if every <= 0 or (step + 1) % every:
            return
        x = params[0]
        k = kernel1d.to(x)
        c = x.shape[1]
        xp = F.pad(x, (radius, radius, radius, radius), mode="reflect")
        xp = F.conv2d(xp, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        xp = F.conv2d(xp, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
        x.copy_(xp)

    return hook
