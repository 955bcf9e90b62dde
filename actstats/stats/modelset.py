"""The fitted-model API: :class:`ModelSet` (per class) of :class:`ClassModels` (per layer).

Arrays in, arrays out: reading and writing model files is :mod:`actstats.io.modelfile`.

>>> import actstats
>>> models = actstats.load("run/models")                       # doctest: +SKIP
>>> g = models["golden_retriever"]["conv4_3"]                  # doctest: +SKIP
>>> c = models["golden_retriever"].conditional("conv4_3", given="conv5_1")  # doctest: +SKIP
>>> c.sample(z_conv5_1, random_state=0)                        # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Union

from actstats.errors import ActstatsError
from actstats.stats.chain import ConditionalMixture, JointModel, UnitConditionalGaussian
from actstats.stats.gaussian import GaussianLayerModel
from actstats.stats.mixture import MixtureLayerModel

__all__ = ["ALL_CLASSES", "KINDS", "ClassModels", "LayerModel", "ModelSet"]

#: Key of the model pooled over every class.
ALL_CLASSES = "__all__"

LayerModel = Union[GaussianLayerModel, MixtureLayerModel]  # noqa: UP007 (runtime alias, py3.10)
#: Model kinds by the name written in the model file.
KINDS = {"gaussian": GaussianLayerModel, "mixture": MixtureLayerModel, "joint": JointModel}


class ClassModels(Mapping):
    """The fitted models of one class: ``cm[layer]`` and conditionals.

    ``cm[layer]`` is the mixture model when one was fitted (``--mixture``), else the
    Gaussian; :meth:`gaussian` and :meth:`mixture` ask for one explicitly.
    """

    def __init__(
        self,
        name: str,
        layers: list[str],
        gaussians: dict[str, GaussianLayerModel],
        mixtures: dict[str, MixtureLayerModel] | None = None,
        joints: dict[tuple[str, str], JointModel] | None = None,
    ) -> None:
        self.name = name
        self.layers = [n for n in layers if n in gaussians]
        self.gaussians = dict(gaussians)
        self.mixtures = dict(mixtures or {})
        self.joints = dict(joints or {})

    def __getitem__(self, layer: str) -> LayerModel:
        if layer in self.mixtures:
            return self.mixtures[layer]
        return self.gaussian(layer)

    def __iter__(self) -> Iterator[str]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def gaussian(self, layer: str) -> GaussianLayerModel:
        """The Gaussian model of ``layer``."""
        if layer not in self.gaussians:
            raise ActstatsError(
                f"class {self.name!r} has no model of layer {layer!r}; available: "
                f"{', '.join(self.layers)}"
            )
        return self.gaussians[layer]

    def mixture(self, layer: str) -> MixtureLayerModel:
        """The mixture model of ``layer`` (fitted with ``--mixture``)."""
        if layer not in self.mixtures:
            raise ActstatsError(
                f"class {self.name!r} has no mixture for layer {layer!r}; fit with --mixture K"
            )
        return self.mixtures[layer]

    def joint(self, layer_a: str, layer_b: str) -> tuple[JointModel, str, str]:
        """The joint model of two adjacent layers and the sides ("a"/"b") of each."""
        if (layer_a, layer_b) in self.joints:
            return self.joints[(layer_a, layer_b)], "a", "b"
        if (layer_b, layer_a) in self.joints:
            return self.joints[(layer_b, layer_a)], "b", "a"
        pairs = ", ".join(f"{a}|{b}" for a, b in self.joints) or "none"
        raise ActstatsError(
            f"no joint model of {layer_a} and {layer_b} (only adjacent stored layers are "
            f"modelled jointly; available: {pairs})"
        )

    def conditional(
        self, layer: str, given: str | tuple[str, int]
    ) -> ConditionalMixture | UnitConditionalGaussian:
        """Distribution of ``layer``'s activations given another layer or one unit.

        Parameters
        ----------
        layer : str
            Target layer.
        given : str or (str, int)
            An adjacent layer (``p(z_k | z_k+1)`` or ``p(z_k+1 | z_k)`` from the joint
            model), or ``(unit_layer, index)``: the same layer (Gaussian conditioning of the
            other units, exact for any covariance form) or an adjacent layer.

        Returns
        -------
        An object with ``mean(given_values)`` and
        ``sample(given_values, n_samples=None, random_state=None)``; given values are
        activations of the given layer (n, D_given) or a unit's scalar values (n,).
        """
        if isinstance(given, tuple):
            unit_layer, index = given[0], int(given[1])
            if unit_layer == layer:
                if layer in self.mixtures:
                    return self._mixture_unit_conditional(layer, index)
                return UnitConditionalGaussian(self.gaussian(layer), index)
            joint, t_side, g_side = self.joint(layer, unit_layer)
            return joint.conditional(t_side, (g_side, index))
        joint, t_side, g_side = self.joint(layer, given)
        return joint.conditional(t_side, g_side)

    def _mixture_unit_conditional(self, layer: str, index: int) -> ConditionalMixture:
        import numpy as np

        m = self.mixture(layer)
        if not 0 <= index < m.n_features_:
            raise ActstatsError(f"unit index {index} is out of range for {layer} ({m.n_features_})")
        return ConditionalMixture(
            m.weights_,
            m.means_,
            m.covariances_,
            m.basis_[index][:, None],
            np.array([m.basis_mean_[index]]),
            m.basis_.T,
            m.basis_mean_,
            lambda v: np.asarray(v, dtype=np.float64).reshape(-1, 1),
        )

    def __repr__(self) -> str:
        return f"ClassModels({self.name!r}, layers={self.layers})"


class ModelSet(Mapping):
    """All fitted models: ``models[class_key]`` -> :class:`ClassModels`.

    Attributes
    ----------
    classes : list of str
        Class keys (class folder names, plus ``"__all__"`` for the pooled model).
    layers : list of str
        Layer names, shallow to deep.
    provenance : dict
        Store path, model name, weights sha256, layers, preprocessing, class names,
        actstats version and fit options.
    """

    def __init__(self, classes: dict[str, ClassModels], layers: list[str], provenance: dict):
        self._classes = dict(classes)
        self.classes = list(classes)
        self.layers = list(layers)
        self.provenance = dict(provenance)

    def __getitem__(self, key: str) -> ClassModels:
        try:
            return self._classes[str(key)]
        except KeyError:
            shown = ", ".join(self.classes[:20]) + (" ..." if len(self.classes) > 20 else "")
            raise ActstatsError(f"no models for class {key!r}; available: {shown}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.classes)

    def __len__(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return f"ModelSet({len(self.classes)} classes, layers={self.layers})"
