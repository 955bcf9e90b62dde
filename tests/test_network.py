"""Loading networks: names, weights sources, preprocessing, layer order."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from actstats.errors import ActstatsError
from actstats.net.network import load_network, state_dict_sha256
from actstats.net.preprocessing import Preprocessing


def _quiet(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return load_network(*args, **kwargs)


def test_weights_files_and_none(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="random weights"):
        net = load_network("resnet18", "none")
    assert net.preprocessing == Preprocessing()  # from the architecture's weights recipe
    assert net.categories and len(net.categories) == 1000
    state = net.module.state_dict()
    torch.save(state, tmp_path / "w.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    for name in ("w.pth", "w.safetensors"):
        assert _quiet("resnet18", str(tmp_path / name)).weights_sha256 == net.weights_sha256
    (tmp_path / "bad.pth").write_bytes(b"garbage")
    with pytest.raises(ActstatsError, match=r"bad.pth: not a loadable state dict"):
        _quiet("resnet18", str(tmp_path / "bad.pth"))
    with pytest.raises(ActstatsError, match=r"nope.pth: no such file; use imagenet, none"):
        _quiet("resnet18", str(tmp_path / "nope.pth"))
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(ActstatsError, match=r"other.pth: does not fit the model"):
        _quiet("resnet18", str(tmp_path / "other.pth"))


def test_seeded_init_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    _quiet("squeezenet1_0", "none")
    assert torch.equal(torch.rand(1), expected)
    assert state_dict_sha256(_quiet("squeezenet1_0", "none").module) == state_dict_sha256(
        _quiet("squeezenet1_0", "none").module
    )


def test_imagenet_offline_says_how_to_pass_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*_a, **_k):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(
        ActstatsError,
        match=r"--weights imagenet: could not download .*"
        r"pass --weights PATH",
    ):
        load_network("resnet18", "imagenet")


@pytest.mark.parametrize(
    ("model", "match"),
    [
        ("vgg99", r"not a torchvision classification model.*available include"),
        ("no_such_pkg:f", r"cannot import 'no_such_pkg'"),
        ("actstats.demo.digits:nothing", r"has no callable 'nothing'"),
        ("actstats.demo.digits:read_me", r"has no callable"),
    ],
)
def test_model_errors(model: str, match: str) -> None:
    with pytest.raises(ActstatsError, match=match):
        load_network(model)


def test_layer_names_order_and_defaults() -> None:
    net = load_network("actstats.demo.digits:digits_vgg")
    assert net.default_layers() == [f"pool{i}" for i in range(1, 6)] + ["fc6", "fc7", "fc8"]
    shapes = net.layer_shapes(["fc8", "features.9", "conv1_1", "pool5"])
    assert list(shapes) == ["conv1_1", "features.9", "pool5", "fc8"]
    assert shapes["fc8"] == (10,) and shapes["features.9"] == (32, 8, 8)
    with pytest.raises(ActstatsError, match=r"unknown layer 'conv6_1'.*see `actstats layers"):
        net.module_name("conv6_1")
    res = _quiet("resnet18", "none", preprocessing=Preprocessing(resize=64, crop=64))
    assert res.default_layers() == ["layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        acts = res.activations(x, ["layer3.1", "flatten"])  # a module and an FX-only node
        assert torch.allclose(
            acts["flatten"],
            torch.flatten(res.module.avgpool(res.module.layer4(acts["layer3.1"])), 1),
            atol=1e-5,
        )


def test_vgg16_default_layers_and_size_proportional_regularizers() -> None:
    """VGG16 (random weights: none can be fetched here) gets its stage outputs by default,
    and the synthesis regularizers scale with the input side."""
    from actstats.synth import default_config

    vgg = _quiet("vgg16", "none", preprocessing=Preprocessing(resize=32, crop=32))
    names = [f"pool{i}" for i in range(1, 6)] + ["fc6", "fc7", "fc8"]
    assert vgg.default_layers() == names
    shapes = vgg.layer_shapes(vgg.default_layers())
    assert shapes["pool1"] == (64, 16, 16) and shapes["fc6"] == (4096,)
    for method in ("suppress", "ancestral"):
        config = default_config(method)
        assert (config.at_size(32).jitter, config.at_size(32).blur_sigma) == (2, 0.5)
        assert (config.at_size(224).jitter, config.at_size(224).blur_sigma) == (14, 3.5)
    assert default_config("suppress", jitter=3).at_size(224).jitter == 3  # pixels stay pixels
