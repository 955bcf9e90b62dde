"""A session: a fitted model file bound to its network and the choice of class.

The one road from a model file to images (as torchvision's ``get_model`` is the
one road to a network): :func:`open_session` loads the model file, rebuilds the
network it records (with the preprocessing its statistics were collected with) or
the one the caller names, and refuses a network whose weights or preprocessing
differ. :meth:`Session.class_for_neuron` and :meth:`Session.class_for_image` choose
whose statistics drive a neuron or an image (``--class``, else the output unit's
class folder, by category name or ImageNet wnid, else the pooled ``__all__`` model);
:meth:`Session.class_stats` hands them to synthesis with the recorded reductions.
``sample``, ``explain`` and the demo all open a session.

A model file is data and may come from anyone: the network it records is rebuilt
only when it is a torchvision name (looked up in torchvision's registry). A
``package.module:factory`` it records is never imported -- that would run
whatever code the file names (``os:abort``); the user trusts a factory by
naming it with ``--network`` (:func:`network_name`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from actstats.errors import ActstatsError
from actstats.io.modelfile import load_models
from actstats.net.names import folder_for_output
from actstats.net.network import Network, ResolvedNeuron, load_network
from actstats.net.preprocessing import Preprocessing
from actstats.net.reduce import Reduction, stored_reduction
from actstats.stats.modelset import ALL_CLASSES, ModelSet
from actstats.synth.jobs import ClassStats

__all__ = [
    "Session",
    "check_network",
    "class_stats",
    "network_name",
    "open_session",
    "recorded_reductions",
]


def network_name(given: str | None, models: ModelSet, where: str | os.PathLike) -> str:
    """The network to rebuild: ``given`` (``--network``), else the model file's if it is
    a torchvision name; a factory the file names is refused, never imported."""
    if given:
        return given
    recorded = models.provenance.get("model")
    if not isinstance(recorded, str) or not recorded:
        raise ActstatsError(f"{where}: the model file records no network; pass --network")
    if ":" in recorded:
        raise ActstatsError(
            f"{where}: the model file names the factory {recorded!r}; actstats never imports "
            f"code a file names: pass --network {recorded} if you trust it"
        )
    return recorded


def check_network(models: ModelSet, network: Network) -> None:
    """Refuse a network that is not the one the model file was fitted with."""
    prov = models.provenance
    recorded = prov.get("weights_sha256")
    if recorded and recorded != network.weights_sha256:
        raise ActstatsError(
            f"--weights: network weights sha256 {network.weights_sha256[:12]}... differ from "
            f"the model file's {recorded[:12]}... (fitted with {prov.get('model')} "
            f"{prov.get('weights')}); pass the same --network/--weights or refit"
        )
    pre = prov.get("preprocessing")
    if pre and Preprocessing.from_dict(pre) != network.preprocessing:
        raise ActstatsError(
            f"preprocessing {network.preprocessing.to_dict()} differs from the model file's "
            f"{pre}; use the network the statistics were collected with"
        )


@dataclass
class Session:
    """A model file and the network it was fitted with, checked against each other."""

    models: ModelSet
    network: Network

    @property
    def class_folders(self) -> list[str]:
        """The class folders the model file holds (without the pooled ``__all__``)."""
        return [c for c in self.models.classes if c != ALL_CLASSES]

    def _available(self) -> str:
        folders = self.class_folders
        return ", ".join(folders[:20]) + (" ..." if len(folders) > 20 else "")

    def check_class(self, class_name: str) -> str:
        """``class_name`` if the model file has it, else a clear error."""
        if class_name not in self.models.classes:
            raise ActstatsError(
                f"--class {class_name!r}: not in the model file; available: {self._available()}"
            )
        return class_name

    def class_for_neuron(self, neuron: ResolvedNeuron, class_name: str | None = None) -> str:
        """The class whose statistics drive ``neuron``.

        ``class_name`` when given; for an output unit the class folder that
        corresponds to it (its category name, or its ImageNet wnid); for other units
        the statistics pooled over every class (``__all__``) when fitted.
        """
        if class_name is not None:
            return self.check_class(class_name)
        if neuron.label is not None:
            found = folder_for_output(self.class_folders, neuron.index, neuron.label)
            if found is not None:
                return found
            raise ActstatsError(
                f"--neuron {neuron}: no class folder corresponds to output {neuron.index} "
                f"({neuron.label!r}); pass --class NAME (available: {self._available()})"
            )
        if ALL_CLASSES in self.models.classes:
            return ALL_CLASSES
        raise ActstatsError(
            f"--neuron {neuron}: not an output unit, so no class corresponds to it; "
            f"pass --class NAME (available: {self._available()})"
        )

    def class_for_image(self, inputs: torch.Tensor, class_name: str | None = None) -> str:
        """``class_name``, else the class folder of the output the network predicts for
        ``inputs`` (by category name or ImageNet wnid), else the pooled model."""
        if class_name is not None:
            return self.check_class(class_name)
        network = self.network
        with torch.inference_mode():
            index = int(network.module(inputs.to(network.device)).argmax(1)[0])
        cats = network.categories or []
        label = cats[index] if index < len(cats) else None
        found = folder_for_output(self.class_folders, index, label)
        if found is not None:
            return found
        if ALL_CLASSES in self.models.classes:
            return ALL_CLASSES
        raise ActstatsError(
            f"--class: the predicted output {index} has no class folder in the model file; "
            f"pass --class NAME (available: {self._available()})"
        )

    def class_stats(self, class_name: str) -> ClassStats:
        """One class's statistics with the reductions the model file recorded."""
        return class_stats(self.models, class_name)


def recorded_reductions(models: ModelSet) -> dict[str, Reduction]:
    """The reduction each stored layer was collected with, bound to its recorded layout
    (``full`` where unrecorded; the layout from the shape for older files)."""
    return {
        entry["name"]: stored_reduction(entry)
        for entry in models.provenance.get("layers", [])
        if isinstance(entry, dict)
    }


def class_stats(models: ModelSet, class_name: str) -> ClassStats:
    """One class's statistics with the reductions the model file recorded."""
    cm = models[class_name]
    return ClassStats(class_name, cm, recorded_reductions(models), list(cm.layers))


def open_session(
    models_path: str | os.PathLike,
    *,
    network: str | None = None,
    weights: str | None = None,
    device: str = "auto",
) -> Session:
    """Load a model file and its network, checked against each other.

    ``network``/``weights`` default to what the model file's provenance records (a
    factory only when passed as ``network``: see :func:`network_name`); the network
    gets the preprocessing the statistics were collected with (a store may have been
    collected at another input size than the weights' recipe).
    """
    models = load_models(models_path)
    prov = models.provenance
    network = network_name(network, models, models_path)
    pre = prov.get("preprocessing")
    net = load_network(
        network,
        weights or prov.get("weights"),
        device=device,
        preprocessing=Preprocessing.from_dict(pre) if pre else None,
    )
    check_network(models, net)
    return Session(models, net)
