"""Load a network and read its activations.

A network is named by a torchvision classification model (``vgg16``) with
``weights`` ``imagenet`` (torchvision's weights API), a local state-dict file
(``.pth``/``.pt`` loaded with ``weights_only=True``, or ``.safetensors``) or
``none`` (random init); or by ``package.module:factory``, a callable returning
the user's own ``nn.Module``.

:class:`Network` reads activations through forward hooks on modules (which
works for every model and keeps autograd intact, as synthesis needs), and
falls back to torchvision's FX feature extraction for graph nodes that are not
modules (``flatten``, ``add``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from actstats.errors import ActstatsError
from actstats.net.layout import Layout, detect_layouts, layout_from_shape
from actstats.net.names import NeuronSpec, output_index, vgg_aliases
from actstats.net.preprocessing import Preprocessing

__all__ = [
    "LayerInfo",
    "Network",
    "ResolvedNeuron",
    "load_network",
    "network_layers",
    "resolve_device",
    "state_dict_sha256",
]


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``/``cuda``/``cuda:N``/``meta`` as given.

    ``meta`` builds a network without memory or weights, enough for shapes and layouts.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ActstatsError(f"--device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ActstatsError(f"--device {device}: no CUDA device is available; use --device cpu")
    return dev


def state_dict_sha256(module: nn.Module) -> str:
    """SHA-256 over parameter/buffer names, dtypes, shapes and bytes, in key order.

    Identifies the weights independently of the file they came from, so a
    store, a model file and a sampling run can check they use the same network.
    """
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


@dataclass(frozen=True)
class LayerInfo:
    """One row of ``actstats layers``."""

    alias: str | None
    name: str
    kind: str
    shape: tuple[int, ...]
    params: int
    layout: Layout = field(default_factory=lambda: Layout("other"))

    @property
    def size(self) -> int:
        """Number of activation values per image."""
        n = 1
        for s in self.shape:
            n *= s
        return n


@dataclass(frozen=True)
class ResolvedNeuron:
    """A neuron checked against a network: the layer's name and module, the index."""

    layer: str
    module: str
    index: int
    yx: tuple[int, int] | None = None
    label: str | None = None
    layout: Layout | None = None
    shape: tuple[int, ...] | None = None

    def __str__(self) -> str:
        pos = f"@{self.yx[0]},{self.yx[1]}" if self.yx else ""
        return f"{self.layer}:{self.index}{pos}"


@dataclass
class Network:
    """A model in eval mode plus everything needed to name and read its layers."""

    module: nn.Module
    name: str
    weights: str
    preprocessing: Preprocessing
    categories: list[str] | None = None
    weights_sha256: str = ""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    aliases: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.module.eval().requires_grad_(False)
        for m in self.module.modules():  # hooks must see a tensor nobody overwrites
            if hasattr(m, "inplace"):
                m.inplace = False
        self.module.to(self.device)
        if not self.aliases:
            self.aliases = vgg_aliases(self.module)
        if not self.weights_sha256 and self.device.type != "meta":
            self.weights_sha256 = state_dict_sha256(self.module)
        self._modules = dict(self.module.named_modules())
        self._layouts: dict[str, tuple[tuple[int, ...], Layout]] | None = None
        self._fx_nodes: list[str] | None = None
        self._finish_order: list[str] | None = None
        self._fx_extractors: dict[tuple[str, ...], nn.Module] = {}
        self._outputs: dict[str, bool] = {}

    # ----------------------------------------------------------------- names
    def layer_names(self) -> list[str]:
        """Aliases first (in network order), then every named module."""
        names = list(self.aliases)
        names += [n for n in self._modules if n and n not in names]
        return names

    def module_name(self, layer: str) -> str:
        """The module (or FX node) that ``layer`` names; an alias is translated."""
        if layer in self.aliases:
            return self.aliases[layer]
        if layer in self._modules and layer:
            return layer
        if layer in self._graph_nodes():
            return layer
        choices = ", ".join(list(self.aliases) or list(self._modules)[1:12])
        raise ActstatsError(
            f"unknown layer {layer!r} for model {self.name}; available: {choices}, ...; "
            f"see `actstats layers {self.name}`"
        )

    def alias_of(self, module_name: str) -> str | None:
        """The alias that names ``module_name``, if any."""
        for alias, target in self.aliases.items():
            if target == module_name:
                return alias
        return None

    def _graph_nodes(self) -> list[str]:
        if self._fx_nodes is None:
            try:
                from torchvision.models.feature_extraction import get_graph_node_names

                self._fx_nodes = get_graph_node_names(self.module)[1]
            except Exception:  # FX tracing fails in many ways; forward hooks take over
                self._fx_nodes = []
        return self._fx_nodes

    # ------------------------------------------------------------ activations
    def activations(
        self, inputs: torch.Tensor, layers: Iterable[str], *, run_to_end: bool = False
    ) -> dict[str, torch.Tensor]:
        """Activations of ``layers`` for a batch of preprocessed ``inputs``.

        Differentiable (no ``no_grad`` inside); callers wrap in
        ``torch.inference_mode`` when they only read. The forward pass stops
        after the deepest requested module unless ``run_to_end``.
        """
        layers = list(layers)
        targets = {layer: self.module_name(layer) for layer in layers}
        if any(t not in self._modules for t in targets.values()):
            return self._fx_activations(inputs, targets)
        out: dict[str, torch.Tensor] = {}
        wanted = set(targets.values())
        handles = []

        def make_hook(mod_name: str):
            def hook(_module: nn.Module, _inp: Any, output: torch.Tensor) -> None:
                out[mod_name] = output
                if not run_to_end and wanted.issubset(out):
                    raise _StopForwardError

            return hook

        for mod_name in wanted:
            handles.append(self._modules[mod_name].register_forward_hook(make_hook(mod_name)))
        try:
            self.module(inputs)
        except _StopForwardError:
            pass
        finally:
            for h in handles:
                h.remove()
        return {layer: out[t] for layer, t in targets.items()}

    def _fx_activations(
        self, inputs: torch.Tensor, targets: dict[str, str]
    ) -> dict[str, torch.Tensor]:
        from torchvision.models.feature_extraction import create_feature_extractor

        nodes = tuple(sorted(set(targets.values())))
        extractor = self._fx_extractors.get(nodes)
        if extractor is None:  # tracing costs far more than a small batch's forward
            extractor = create_feature_extractor(self.module, return_nodes=list(nodes))
            self._fx_extractors[nodes] = extractor
        feats = extractor(inputs)
        return {layer: feats[t] for layer, t in targets.items()}

    def _probe(self, size: int | None = None, batch: int = 1) -> torch.Tensor:
        size = size or self.preprocessing.crop
        return torch.zeros(batch, 3, size, size, device=self.device)

    def module_layouts(self) -> dict[str, tuple[tuple[int, ...], Layout]]:
        """Every module's output shape (one image) and layout, in forward order.

        One forward pass of two images, made once per network (see
        :func:`actstats.layout.detect_layouts`).
        """
        if self._layouts is None:
            self._layouts = detect_layouts(self.module, self._probe(batch=2))
        return self._layouts

    def layer_layout(self, layer: str) -> Layout:
        """The layout of ``layer``'s output: from the module graph, else from its shape."""
        found = self.module_layouts().get(self.module_name(layer))
        if found is not None:
            return found[1]
        return layout_from_shape(self.output_shape(layer))

    def layer_info(self, input_size: int | None = None) -> list[LayerInfo]:
        """Every module whose output is a batch of tensors (blocks and leaves, in the order
        their outputs are computed) with its alias, shape (one image), layout and parameters."""
        if input_size in (None, self.preprocessing.crop):
            found = self.module_layouts()
        else:
            found = detect_layouts(self.module, self._probe(input_size, batch=2))
        rows = []
        for name, (shape, layout) in found.items():
            mod = self._modules[name]
            params = sum(p.numel() for p in mod.parameters())
            rows.append(
                LayerInfo(self.alias_of(name), name, type(mod).__name__, shape, params, layout)
            )
        return rows

    def layer_shapes(self, layers: Iterable[str]) -> dict[str, tuple[int, ...]]:
        """One image's activation shape per layer, ordered shallow to deep.

        The order is :meth:`layer_depth`'s, so stores and fitted models list layers
        the way ancestral sampling walks them.
        """
        layers = list(dict.fromkeys(layers))
        found = self.module_layouts()
        shapes = {layer: found.get(self.module_name(layer), (None,))[0] for layer in layers}
        missing = [layer for layer, shape in shapes.items() if shape is None]
        if missing:  # FX-only graph nodes (flatten, add): one forward reads them
            with torch.inference_mode():
                acts = self.activations(self._probe(), missing, run_to_end=True)
            shapes.update({layer: tuple(acts[layer].shape[1:]) for layer in missing})
        return {layer: shapes[layer] for layer in sorted(layers, key=self.layer_depth)}

    def layer_depth(self, layer: str) -> int:
        """Where ``layer``'s output is computed in the forward pass: larger is deeper.

        The one notion of depth (priors "below the target", chain order, the code
        layer): a module's rank is when its forward finishes (a container after its
        children); with an FX graph, the last graph node inside the module. Raises
        for a layer the network does not have.
        """
        target = self.module_name(layer)
        nodes = self._graph_nodes()
        if nodes:  # a module's output is the last graph node inside it
            name = target
            while name:  # inside a module FX keeps whole (ViT's MLP block): its node's rank
                found = [i for i, n in enumerate(nodes) if n == name or n.startswith(name + ".")]
                if found:
                    return max(found)
                name = name.rpartition(".")[0]
        return self._forward_order().index(target)

    def _forward_order(self) -> list[str]:
        """Module names in the order their forward passes finish (one traced pass, cached)."""
        if self._finish_order is None:
            order: list[str] = []
            handles = [
                m.register_forward_hook(lambda _m, _i, _o, n=n: order.append(n))
                for n, m in self._modules.items()
                if n
            ]
            size = self.preprocessing.crop
            try:
                with torch.inference_mode():
                    self.module(torch.zeros(1, 3, size, size, device=self.device))
            finally:
                for h in handles:
                    h.remove()
            self._finish_order = list(dict.fromkeys(order))
        return self._finish_order

    def default_layers(self) -> list[str]:
        """Layers collected when none are named: each stage's output, shallow to deep.

        VGG-shaped nets: every pooling stage and every fc layer (VGG16: pool1 ..
        pool5, fc6, fc7, fc8). Channels-first nets (every layer NCHW or a vector):
        the last module at each spatial resolution a forward pass goes through (a
        stage ends where the resolution drops; ResNet: layer1 .. layer4), the last
        spatial map, its global pooling (the code ``code-prior`` optimizes: ResNet's
        avgpool), then the module that computes the output (the logits). Priors on
        every stage constrain the image from edges to objects; three deep layers
        left real-network samples as textures. Nets with channels-last or token
        layers (Swin, ViT, MaxViT, ConvNeXt), whose resolutions a 4-D NCHW shape
        does not tell: the last three top-level children that hold parameters and
        run (MaxViT: blocks.2, blocks.3, classifier).
        """
        if self.aliases:
            return [a for a in self.aliases if a.startswith(("pool", "fc"))]
        called = self.module_layouts()
        if all(layout.kind in ("NCHW", "NC") for _, layout in called.values()):
            return _stage_outputs(self.module, self.preprocessing.crop, self.device)
        return self._called_children(self.module, "", called)[-3:]

    def is_output(self, layer: str) -> bool:
        """Whether ``layer``'s output is what the network returns (its logits).

        Read from the graph with one forward pass of a random image (batch 1): the
        layer's hooked output must be the returned tensor, or equal to it. So ``fc8``
        of a VGG and ``net._fc`` of a factory model whose ``forward`` ends in
        ``return self._fc(x)`` are recognised without class names.
        """
        key = self.module_name(layer)
        if key not in self._outputs:
            size = self.preprocessing.crop
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(1, 3, size, size, generator=gen).to(self.device)
            with torch.inference_mode():
                out = self.module(x)
                act = self.activations(x, [layer], run_to_end=True)[layer]
            self._outputs[key] = isinstance(out, torch.Tensor) and (
                act is out or (act.shape == out.shape and bool(torch.equal(act, out)))
            )
        return self._outputs[key]

    def _called_children(self, module: nn.Module, prefix: str, called: dict[str, Any]) -> list[str]:
        """Children holding parameters whose forward runs; a container that is never
        called itself (MaxViT's ``blocks`` ModuleList) is replaced by its children."""
        out = []
        for n, m in module.named_children():
            name = prefix + n
            if not any(True for _ in m.parameters()):
                continue
            out += [name] if name in called else self._called_children(m, name + ".", called)
        return out

    def output_shape(self, layer: str) -> tuple[int, ...]:
        """Shape of one image's activation at ``layer`` (no batch axis)."""
        found = self.module_layouts().get(self.module_name(layer))
        if found is not None:
            return found[0]
        with torch.inference_mode():
            return tuple(self.activations(self._probe(), [layer])[layer].shape[1:])

    # --------------------------------------------------------------- neurons
    def resolve_neuron(self, spec: NeuronSpec) -> ResolvedNeuron:
        """Check ``spec`` against this network: layer exists, index in range, class known."""
        module = self.module_name(spec.layer)
        shape = self.output_shape(spec.layer)
        layout = self.layer_layout(spec.layer)
        if layout.kind == "other":
            raise ActstatsError(
                f"--neuron {spec}: {spec.layer} has shape {list(shape)} and no known channel "
                "axis; choose another layer (see `actstats layers`)"
            )
        n_units = layout.channels(shape)
        label = None
        if spec.class_name is not None:
            if not self.categories:
                raise ActstatsError(
                    f"--neuron {spec}: model {self.name} has no class names; "
                    f"use an index 0..{n_units - 1}"
                )
            index = output_index(spec.class_name, self.categories)
            if index is None:
                sample = ", ".join(c.replace(" ", "_") for c in self.categories[:8])
                raise ActstatsError(
                    f"--neuron {spec}: unknown class {spec.class_name!r}; valid names include "
                    f"{sample}, ... ({len(self.categories)} in all)"
                )
            label = self.categories[index]
        else:
            index = int(spec.index)  # type: ignore[arg-type]
        if not 0 <= index < n_units:
            raise ActstatsError(
                f"--neuron {spec}: index {index} out of range; layer {spec.layer} has units "
                f"0..{n_units - 1}"
            )
        grid = layout.grid_shape(shape) if layout.spatial else None
        if spec.yx is not None:
            if grid is None:
                raise ActstatsError(
                    f"--neuron {spec}: @Y,X needs a spatial or patch-token layer; {spec.layer} "
                    f"has shape {list(shape)}, layout {layout}"
                )
            y, x = spec.yx
            if not (0 <= y < grid[0] and 0 <= x < grid[1]):
                raise ActstatsError(
                    f"--neuron {spec}: position out of range; "
                    f"valid Y 0..{grid[0] - 1}, X 0..{grid[1] - 1}"
                )
        if label is None and self.categories and len(self.categories) == n_units:
            label = self.categories[index]
        return ResolvedNeuron(spec.layer, module, index, spec.yx, label, layout, shape)


def _stage_outputs(module: nn.Module, size: int, device: torch.device) -> list[str]:
    """The last block at each resolution, the last spatial map, its pooling, the output's module.

    A block is an element of a ``Sequential`` or ``ModuleList`` (ResNet's
    ``layer3.1``, EfficientNet's ``_blocks.7``). Modules called more than once per
    forward pass (a shared activation) are skipped: a hook on them sees several
    tensors. A tensor that nested modules share is named by the outermost
    (``layer4``, not ``layer4.1``), except the network's output, named by the
    module that computes it (``fc``).
    """
    blocks = {
        f"{name}.{child}" if name else child
        for name, m in module.named_modules()
        if isinstance(m, (nn.Sequential, nn.ModuleList))
        for child, _ in m.named_children()
    }
    calls: list[tuple[str, torch.Tensor]] = []
    counts: dict[str, int] = {}

    def hook(name: str):
        def record(_m: nn.Module, _i: Any, out: Any) -> None:
            counts[name] = counts.get(name, 0) + 1
            if isinstance(out, torch.Tensor):
                calls.append((name, out))

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in module.named_modules() if n]
    try:
        with torch.inference_mode():
            output = module(torch.zeros(1, 3, size, size, device=device))
    finally:
        for h in handles:
            h.remove()
    calls = [(n, t) for n, t in calls if counts[n] == 1]
    named: dict[int, str] = {}
    for name, t in calls:  # children complete before their parents
        first = named.get(id(t))
        if first is None or (first.startswith(name + ".") and t is not output):
            named[id(t)] = name  # an identity later in the graph does not rename it
    spatial = [(n, t) for n, t in calls if t.ndim == 4 and min(t.shape[2:]) > 1]
    stages: dict[tuple[int, ...], str] = {}
    for name, t in spatial:
        if name in blocks:
            stages.pop(tuple(t.shape[2:]), None)  # re-insert: the last block stays last
            stages[tuple(t.shape[2:])] = named[id(t)]
    names = list(stages.values())
    if spatial:
        names.append(named[id(spatial[-1][1])])
        pooled = [  # the head's input: one value per channel (global pooling)
            n
            for n, t in calls[calls.index(spatial[-1]) + 1 :]
            if t is not output and t.ndim >= 2 and math.prod(t.shape[2:]) == 1
        ]
        names += pooled[-1:]
    if id(output) in named:
        names.append(named[id(output)])
    return list(dict.fromkeys(names))


class _StopForwardError(Exception):
    """Raised by a hook to skip the layers after the deepest one requested."""


# ------------------------------------------------------------------ loading
def network_layers(
    model: str, weights: str | None = None, input_size: int | None = None
) -> tuple[Network, list[LayerInfo]]:
    """The network and its :meth:`Network.layer_info` rows, as fast as the model allows.

    Shapes and layouts need no weights: a torchvision name with ``weights`` none is
    built on the ``meta`` device (no initialization, no memory; VGG16 in well under
    a second) and probed there; a model that cannot be built or run on meta tensors
    (RegNet's builder reads tensor values), or named weights, is built on the CPU
    (random weights unless named) and probed with two images.
    """
    if weights is None and ":" not in model:
        weights = "none"  # a torchvision name: shapes need no weights, never a download
    if weights == "none" and ":" not in model:
        try:
            net = load_network(model, "none", device="meta")
            return net, net.layer_info(input_size)
        except (RuntimeError, NotImplementedError, TypeError, ValueError, IndexError):
            pass  # data-dependent code (.item(), asserts on values) needs real tensors
    net = load_network(model, weights, device="cpu")
    return net, net.layer_info(input_size)


def load_network(
    model: str | nn.Module,
    weights: str | None = None,
    *,
    device: str | torch.device = "cpu",
    preprocessing: Preprocessing | None = None,
) -> Network:
    """Build a :class:`Network` from a name, a factory path or a module.

    Parameters
    ----------
    model : str or nn.Module
        A torchvision classification model name (``vgg16``), ``package.module:factory``,
        or a module instance.
    weights : str, optional
        ``imagenet`` (default for torchvision names), ``none`` (random init), or a path to
        a ``.pth``/``.pt``/``.safetensors`` state dict. For a factory the default keeps
        the weights the factory returns.
    device : str or torch.device
        ``auto``, ``cpu``, ``cuda``...
    preprocessing : Preprocessing, optional
        Overrides what the weights or factory declare.
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    categories: list[str] | None = None
    declared: Preprocessing | None = None
    if isinstance(model, nn.Module):
        module, name = model, type(model).__name__
        weights = weights or "as-given"
    elif ":" in model:
        module, name, declared, categories = _from_factory(model)
        weights = weights or "factory"
    else:
        module, declared, categories = _from_torchvision(model, weights or "imagenet", dev)
        name = model
        weights = weights or "imagenet"
    if weights not in ("imagenet", "none", "factory", "as-given"):
        _load_state_dict_file(module, Path(weights))
    categories = getattr(module, "actstats_categories", categories)
    declared = getattr(module, "actstats_preprocessing", declared)
    if isinstance(declared, dict):
        declared = Preprocessing.from_dict(declared)
    return Network(
        module=module,
        name=name,
        weights=str(weights),
        preprocessing=preprocessing or declared or Preprocessing(),
        categories=list(categories) if categories else None,
        device=dev,
    )


def _from_torchvision(
    name: str, weights: str, device: torch.device
) -> tuple[nn.Module, Preprocessing | None, list[str] | None]:
    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise ActstatsError(
            f"--network {name!r}: not a torchvision classification model nor "
            "package.module:factory;"
            f" available include {', '.join(sorted(available)[:12])}, ... ({len(available)})"
        )
    if weights == "imagenet":
        wenum = torchvision.models.get_model_weights(name).DEFAULT
        module = torchvision.models.get_model(name, weights=None)
        try:  # URLError/HTTPError are OSErrors; a bad hash or partial file is a RuntimeError
            state = wenum.get_state_dict(progress=True, check_hash=True)
        except (OSError, RuntimeError) as exc:
            raise ActstatsError(
                f"--weights imagenet: could not download {wenum} ({type(exc).__name__}); "
                f"download {wenum.url} elsewhere and pass --weights PATH"
            ) from None
        module.load_state_dict(state)  # torchvision's own weights fit: a failure is a bug
        return (
            module,
            Preprocessing.from_torchvision(wenum.transforms()),
            list(wenum.meta["categories"]),
        )
    if weights == "none" and device.type != "meta":
        warnings.warn(
            f"--weights none: {name} has random weights; its activations describe no real images",
            stacklevel=3,
        )
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG alone
        torch.manual_seed(0)  # random init is reproducible, so its sha256 is stable
        with torch.device("meta") if device.type == "meta" else contextlib.nullcontext():
            module = torchvision.models.get_model(name, weights=None)
    try:  # a local file or random init still follows the architecture's usual recipe
        default = torchvision.models.get_model_weights(name).DEFAULT
        return (
            module,
            Preprocessing.from_torchvision(default.transforms()),
            list(default.meta["categories"]),
        )
    except (KeyError, ValueError, AttributeError, TypeError):
        return module, None, None


#: Factory modules that moved in the 0.2 package layout: model files written before it
#: record the old name, so it keeps resolving (with a warning) for one release.
_MOVED_FACTORY_MODULES = {"actstats.digits": "actstats.demo.digits"}


def _from_factory(spec: str) -> tuple[nn.Module, str, Preprocessing | None, list[str] | None]:
    mod_name, _, attr = spec.partition(":")
    if mod_name in _MOVED_FACTORY_MODULES:
        moved = _MOVED_FACTORY_MODULES[mod_name]
        warnings.warn(f"--network {spec}: {mod_name} is now {moved}", FutureWarning, stacklevel=3)
        mod_name, spec = moved, f"{moved}:{attr}"
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ActstatsError(f"--network {spec}: cannot import {mod_name!r} ({exc})") from None
    factory = getattr(mod, attr, None)
    if not callable(factory):
        raise ActstatsError(f"--network {spec}: {mod_name} has no callable {attr!r}")
    module = factory()
    if not isinstance(module, nn.Module):
        raise ActstatsError(
            f"--network {spec}: the factory returned {type(module).__name__}, not a torch.nn.Module"
        )
    return module, spec, None, None


def _load_state_dict_file(module: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise ActstatsError(
            f"--weights {path}: no such file; use imagenet, none or a path "
            "to a .pth/.pt/.safetensors state dict"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ActstatsError(f"--weights {path}: not a loadable state dict ({exc})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ActstatsError(f"--weights {path}: does not fit the model ({first})") from None
