"""Image-specific class saliency (Simonyan, Vedaldi & Zisserman 2014, sec. 3).

The score ``S_c`` of a unit is, near an image ``I0``, close to the linear
function ``w^T I + b`` with ``w = dS_c/dI`` at ``I0``; the magnitude of ``w``
says which pixels the score depends on most. The map is ``M_ij = max_c |w_cij|``
over colour channels. SmoothGrad (Smilkov et al. 2017) averages ``w`` over
noisy copies of the image, which removes much of the gradient's pixel-scale
noise without moving where the mass is.

The unit is read through :meth:`actstats.net.network.Network.activations`, so any
neuron ``fc8:207``, ``conv5_3:12`` or ``conv5_3:12@3,4`` works, not only logits.
"""

from __future__ import annotations

import numpy as np
import torch

from actstats.errors import ActstatsError
from actstats.net.network import Network, ResolvedNeuron
from actstats.net.reduce import unit_value

__all__ = ["SALIENCY_KINDS", "clip_percentile", "saliency_map", "unit_gradient"]

#: What a map shows per pixel: ``gradient``, Simonyan et al.'s ``max_c |dS/dI_c|`` (where
#: the score is sensitive, either way); ``input-gradient``, the positive part of
#: ``sum_c I_c dS/dI_c`` with ``I`` the normalized input (input x gradient, Shrikumar et
#: al. 2016, against the normalization's mean colour): the pixels whose departure from
#: that mean raises the score to first order. It seeds the window-search localizer
#: (:func:`actstats.explain.search.localize_by_search`), where it measured better.
SALIENCY_KINDS = ("gradient", "input-gradient")


def clip_percentile(saliency: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """A map scaled to [0, 1] by its ``percentile``-th value, larger values clipped to 1.

    Gradient maps are heavy-tailed: a handful of pixels hold most of the range,
    so dividing by the maximum leaves nearly everything black. Clipping at the
    99th percentile, as is usual for Simonyan et al.'s Fig. 2-style pictures,
    shows where the mass is. A map that is zero at the percentile (all but a few
    pixels zero) falls back to its maximum.
    """
    if not 0 < percentile <= 100:
        raise ActstatsError(f"percentile {percentile}: must be in (0, 100]")
    m = np.abs(np.asarray(saliency, dtype=np.float64))
    top = float(np.percentile(m, percentile))
    if not top > 0:
        top = float(m.max())
    return np.clip(m / top, 0.0, 1.0) if top > 0 else np.zeros_like(m)


def unit_gradient(network: Network, inputs: torch.Tensor, neuron: ResolvedNeuron) -> torch.Tensor:
    """``dS/dI`` of the unit for each image of a batch of network inputs: (N, 3, H, W).

    Each image's unit depends only on that image, so the gradient of the
    batch sum is every image's own gradient.
    """
    x = inputs.detach().to(network.device).requires_grad_(True)
    with torch.enable_grad():
        score = unit_value(
            network.activations(x, [neuron.layer])[neuron.layer],
            neuron.index,
            neuron.yx,
            neuron.layout,
        )
        (grad,) = torch.autograd.grad(score.sum(), x)
    return grad


def saliency_map(
    network: Network,
    inputs: torch.Tensor,
    neuron: ResolvedNeuron,
    *,
    smoothgrad: int = 0,
    noise: float = 0.15,
    seed: int = 0,
    kind: str = "gradient",
) -> torch.Tensor:
    """Saliency ``max_c |dS/dI|`` per pixel (``kind`` ``input-gradient``: the positive
    part of ``sum_c I_c dS/dI_c``; see :data:`SALIENCY_KINDS`), shape (N, H, W), on the CPU.

    Parameters
    ----------
    inputs : tensor of shape (N, 3, H, W)
        Preprocessed (normalized) network inputs.
    neuron : ResolvedNeuron
        The unit whose score is explained (Simonyan use the class logit, not the
        softmax, so the map does not depend on the other classes' scores).
    smoothgrad : int
        0 for the plain gradient; N > 0 averages the gradient over N copies with
        Gaussian noise added.
    noise : float
        SmoothGrad's noise level as a fraction of each image's value range
        (0.1-0.2 in the paper).
    seed : int
        Seeds the SmoothGrad noise.
    kind : str
        One of :data:`SALIENCY_KINDS`.
    """
    if inputs.dim() != 4 or inputs.shape[1] != 3:
        raise ActstatsError(
            f"inputs of shape {tuple(inputs.shape)}: expected (N, 3, H, W) network inputs"
        )
    if smoothgrad < 0:
        raise ActstatsError(f"--smoothgrad {smoothgrad}: must be >= 0 (0 = plain gradient)")
    if kind not in SALIENCY_KINDS:
        raise ActstatsError(f"--kind {kind!r}: use one of {', '.join(SALIENCY_KINDS)}")
    if smoothgrad == 0:
        grad = unit_gradient(network, inputs, neuron)
    else:
        generator = torch.Generator().manual_seed(seed)
        span = (inputs.flatten(1).amax(1) - inputs.flatten(1).amin(1)).view(-1, 1, 1, 1)
        grad = torch.zeros_like(inputs, device=network.device)
        for _ in range(smoothgrad):
            eps = torch.randn(inputs.shape, generator=generator) * noise * span
            grad += unit_gradient(network, inputs + eps, neuron)
        grad /= smoothgrad
    if kind == "input-gradient":
        return torch.relu((grad * inputs.to(grad.device)).sum(1)).detach().cpu()
    return grad.abs().amax(1).detach().cpu()
