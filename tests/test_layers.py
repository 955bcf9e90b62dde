"""VGG aliases, neuron specs and the `actstats layers` command."""

from __future__ import annotations

import pytest
import torchvision
from typer.testing import CliRunner

import actstats.cli
from actstats.errors import ActstatsError
from actstats.net.names import NeuronSpec, parse_neuron, vgg_aliases


def test_vgg16_aliases_are_post_relu_and_logits() -> None:
    aliases = vgg_aliases(torchvision.models.vgg16())
    assert aliases["conv1_1"] == "features.1" and aliases["conv4_3"] == "features.22"
    assert aliases["conv5_3"] == "features.29" and aliases["pool5"] == "features.30"
    assert (aliases["fc6"], aliases["fc7"], aliases["fc8"]) == (
        "classifier.1",
        "classifier.4",
        "classifier.6",
    )
    bn = vgg_aliases(torchvision.models.vgg11_bn())
    assert bn["conv1_1"] == "features.2" and bn["fc8"] == "classifier.6"
    assert vgg_aliases(torchvision.models.resnet18()) == {}


def test_parse_neuron() -> None:
    assert parse_neuron("fc8:207") == NeuronSpec("fc8", index=207)
    assert parse_neuron("conv5_3:12@3,4") == NeuronSpec("conv5_3", index=12, yx=(3, 4))
    assert parse_neuron("fc8:golden_retriever").class_name == "golden_retriever"
    with pytest.raises(ActstatsError, match=r"expected LAYER:INDEX"):
        parse_neuron("fc8")


def test_layers_command() -> None:
    runner = CliRunner()
    result = runner.invoke(actstats.cli.app, ["layers", "actstats.demo.digits:digits_vgg"])
    assert result.exit_code == 0, result.output
    assert "conv4_1" in result.output and "features.12" in result.output
    assert "32x4x4" in result.output
    result = runner.invoke(actstats.cli.app, ["layers", "resnet18", "--input-size", "64"])
    assert result.exit_code == 0 and "layer3.1.conv1" in result.output
    result = runner.invoke(actstats.cli.app, ["layers", "vgg99"])
    assert result.exit_code == 1 and "not a torchvision classification model" in result.output


def test_vgg16_layers_come_from_meta_tensors() -> None:
    """No weights are built or hashed: VGG16's table takes well under a second."""
    from actstats.net.network import network_layers

    net, rows = network_layers("vgg16")
    assert net.device.type == "meta" and net.weights_sha256 == ""
    by_name = {r.name: r for r in rows}
    assert by_name["features.29"].shape == (512, 14, 14)
    assert (
        str(by_name["features.29"].layout) == "NCHW" and by_name["features.29"].alias == "conv5_3"
    )
    assert by_name["classifier.6"].shape == (1000,) and str(by_name["classifier.6"].layout) == "NC"


@pytest.mark.parametrize("width", [60, 80, 200])
def test_layers_table_never_cuts_names(width: int) -> None:
    from rich.console import Console

    from actstats.cli.layers import layers_table
    from actstats.net.network import network_layers

    net, rows = network_layers("vit_b_16")
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(layers_table(net, rows, None, width))
    text = console.export_text()
    assert "…" not in text
    lines = [line for line in text.splitlines() if "encoder_layer_11.mlp.3" in line]
    if width >= 80:  # wide enough once the least needed columns are left out: one line each
        assert lines
    if width < 200:
        assert "left out for width" in text
    else:
        assert "NTC:1+14x14" in text and "cls+grid:2 (3,840)" in text


def test_a_model_meta_cannot_build_falls_back_to_random_weights_offline() -> None:
    """RegNet's builder reads tensor values (fails on meta): CPU, random weights, no download."""
    from actstats.net.network import network_layers

    net, rows = network_layers("regnet_x_400mf")
    assert net.device.type == "cpu" and net.weights == "none"
    assert {r.name: str(r.layout) for r in rows}["trunk_output"] == "NCHW"
