"""The render loop, parameterizations and transforms."""

from __future__ import annotations

import numpy as np
import torch
from test_objectives import TINY_PRE, tiny_network

from actstats.synth import objectives as obj
from actstats.synth.param import blur_pixels, clip_pixels, fft_image, pixel_image
from actstats.synth.render import render
from actstats.synth.transforms import compose, flip, jitter, scale_rotate


def _run(seed: int, **kwargs):
    net = tiny_network()
    gen = torch.Generator().manual_seed(seed)
    param = pixel_image(3, 8, device=net.device, init="noise", std=0.3, generator=gen)
    target = -1.0 * obj.unit("fc3", 1)
    return render(
        net,
        target + 0.01 * obj.l2(),
        param,
        steps=6,
        generator=gen,
        transforms=compose(jitter(1), flip()),
        track={"target": target},
        **kwargs,
    )


def test_histories_progress_and_determinism() -> None:
    calls = []
    a = _run(0, progress=lambda s, t, loss: calls.append((s, t)))
    b = _run(0)
    c = _run(1)
    assert a.images.shape == (3, 3, 8, 8) and a.loss_history.shape == (6, 3)
    assert a.tracked["target"].shape == (6, 3) and a.steps == 6 and a.seconds > 0
    assert calls == [(s, 6) for s in range(1, 7)]
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)


def test_batched_images_are_independent() -> None:
    """A per-image loss: one image's gradient does not depend on the others."""
    net = tiny_network()
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    term = -1.0 * obj.unit("fc3", 0)
    term({**net.activations(x, ["fc3"]), obj.INPUT: x}).sum().backward()
    single = x[:1].detach().clone().requires_grad_(True)
    term({**net.activations(single, ["fc3"]), obj.INPUT: single}).sum().backward()
    assert torch.allclose(x.grad[:1], single.grad, atol=1e-6)


def test_clip_keeps_pixels_in_range_and_blur_smooths() -> None:
    low, high = TINY_PRE.pixel_bounds()
    x = torch.randn(2, 3, 8, 8) * 5
    clip_pixels(TINY_PRE)([x], 0)
    assert torch.all(x >= low - 1e-6) and torch.all(x <= high + 1e-6)
    y = torch.randn(1, 3, 8, 8)
    before = (y[..., 1:] - y[..., :-1]).abs().mean()
    blur_pixels(1.0, every=2)([y], 0)  # not a blur step
    blur_pixels(1.0, every=2)([y], 1)
    assert (y[..., 1:] - y[..., :-1]).abs().mean() < before


def test_fft_image_is_in_range_and_optimizable() -> None:
    net = tiny_network()
    params, image_fn = fft_image(
        2, 8, TINY_PRE, device=net.device, generator=torch.Generator().manual_seed(0)
    )
    low, high = TINY_PRE.pixel_bounds()
    img = image_fn()
    assert img.shape == (2, 3, 8, 8) and torch.all(img >= low) and torch.all(img <= high)
    result = render(net, -1.0 * obj.unit("fc3", 3), (params, image_fn), steps=10, lr=0.1)
    assert np.all(result.loss_history[-1] < result.loss_history[0])


def test_transforms_keep_shape_and_are_seeded() -> None:
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    t = compose(jitter(2), flip(0.5))
    a = t(x, torch.Generator().manual_seed(0))
    b = t(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert torch.equal(flip(1.0)(x, torch.Generator()), x.flip(3))
    assert torch.equal(jitter(0)(x, torch.Generator()), x)


def test_scale_rotate_matches_scipy_affine_transform() -> None:
    """Each image is zoomed and rotated about its centre by its own draw, as scipy does it."""
    from scipy import ndimage

    rng = np.random.RandomState(0)
    x = torch.from_numpy(rng.rand(3, 1, 33, 33))
    assert torch.equal(scale_rotate(0.0, 0.0)(x, torch.Generator()), x)
    out = scale_rotate(0.2, 30.0)(x, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # the same draws, in the transform's order
    zoom = 1.0 + 0.2 * (2 * torch.rand(3, generator=g, dtype=torch.float64) - 1)
    angle = np.deg2rad(30.0 * (2 * torch.rand(3, generator=g, dtype=torch.float64) - 1).numpy())
    centre = np.array([16.0, 16.0])
    for i in range(3):
        assert abs(float(zoom[i]) - 1.0) > 1e-3 and abs(angle[i]) > 1e-3  # a real draw
        c, s = np.cos(angle[i]) / float(zoom[i]), np.sin(angle[i]) / float(zoom[i])
        matrix = np.array([[c, s], [-s, c]])  # output (row, col) -> input (row, col)
        ref = ndimage.affine_transform(
            x[i, 0].numpy(), matrix, offset=centre - matrix @ centre, order=1, mode="mirror"
        )
        inner = slice(8, 25)  # away from the borders, where the two pad differently
        np.testing.assert_allclose(out[i, 0, inner, inner].numpy(), ref[inner, inner], atol=1e-9)


def test_param_auto_resolves_by_input_size_and_bad_params_are_refused() -> None:
    import pytest

    from actstats.errors import ActstatsError
    from actstats.synth.methods.base import FFT_MIN_SIZE, RenderConfig, image_param

    auto = RenderConfig(param="auto")
    assert auto.at_size(FFT_MIN_SIZE - 1).param == "pixel"
    assert auto.at_size(FFT_MIN_SIZE).param == "fft"
    assert RenderConfig(param="fft").at_size(8).param == "fft"  # an explicit choice stays
    net = tiny_network()  # 8 px: auto gives one free value per pixel
    (params, _), _ = image_param(net, 2, auto, torch.Generator().manual_seed(0))
    assert params[0].shape == (2, 3, 8, 8)
    with pytest.raises(ActstatsError, match="param 'bogus': use pixel, fft or auto"):
        image_param(net, 2, RenderConfig(param="bogus"), torch.Generator())
