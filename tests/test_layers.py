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
