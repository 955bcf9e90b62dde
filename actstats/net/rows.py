"""A batch of preprocessed images -> one (n, sum of layer dims) tensor of reduced activations.

Why its own piece: ``collect`` runs the same function on every batch of a run, and on
CUDA it pays to compile it once with ``torch.compile`` (fused reductions, fewer kernel
launches: on an H200, ``benchmarks/gpu_throughput.py`` measured VGG16 at 14.8k img/s
compiled against 8.5k eager). A compiled graph cannot hold the per-call hooks that
:meth:`~actstats.net.network.Network.activations` uses to stop after the deepest layer,
so the compiled path traces torchvision's FX feature extractor instead (which drops
what no requested layer needs, so it stops there too). Compiling is lazy and can fail
for models FX or dynamo cannot trace: then one warning, and the eager path for the rest
of the process. Batches are padded to one fixed shape, so a run compiles one graph.
"""

from __future__ import annotations

import threading
import warnings
import weakref
from collections.abc import Callable

import torch
from torch import nn

from actstats.net.network import Network

__all__ = ["RowsFunction", "rows_function"]

#: A layer output batch -> its stored rows (an actstats.net.reduce.Reduction, or any callable).
ReduceFn = Callable[[torch.Tensor], torch.Tensor]


class RowsFunction:
    """``rows(x)``: the reduced activations of ``layers`` for the batch ``x``, side by side.

    Parameters
    ----------
    net : Network
    layers : dict
        Layer name -> reduction (a callable on the layer's output batch), in store order.
    compile : bool
        Compile with ``torch.compile`` at the first call (falling back to eager, with a
        warning, where that fails).
    batch_size : int
        The fixed batch shape compiled for; smaller batches are padded to it.
    backend : str
        ``torch.compile`` backend (``inductor``; tests use ``aot_eager`` to trace without
        generating kernels).
    """

    def __init__(
        self,
        net: Network,
        layers: dict[str, ReduceFn],
        *,
        compile: bool = False,
        batch_size: int = 64,
        backend: str = "inductor",
    ) -> None:
        self.net, self.layers, self.batch_size = net, dict(layers), int(batch_size)
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._proven = False  # the compiled function has run once
        if compile:
            try:
                self._compiled = torch.compile(self._traced(), backend=backend, dynamic=False)
            except Exception as exc:  # FX tracing of a user model can fail here
                self._fall_back(exc)

    @property
    def compiled(self) -> bool:
        """Whether calls go through the compiled function (False after a fallback)."""
        return self._compiled is not None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._compiled is not None:
            try:
                out = self._call_compiled(x)
                self._proven = True
                return out
            except Exception as exc:  # torch.compile fails at the first call, not before
                if self._proven:
                    raise
                self._fall_back(exc)
        acts = self.net.activations(x, list(self.layers))
        return self._side_by_side(acts)

    def _side_by_side(self, acts: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([red(acts[n]).float().flatten(1) for n, red in self.layers.items()], 1)

    def _traced(self) -> Callable[[torch.Tensor], torch.Tensor]:
        from torchvision.models.feature_extraction import create_feature_extractor

        targets = {layer: self.net.module_name(layer) for layer in self.layers}
        extractor: nn.Module = create_feature_extractor(
            self.net.module, return_nodes=sorted(set(targets.values()))
        )

        def rows(x: torch.Tensor) -> torch.Tensor:
            feats = extractor(x)
            return self._side_by_side({layer: feats[t] for layer, t in targets.items()})

        return rows

    def _call_compiled(self, x: torch.Tensor) -> torch.Tensor:
        assert self._compiled is not None
        n = len(x)
        if n < self.batch_size:  # one fixed shape: one graph per run
            pad = x.new_zeros((self.batch_size - n, *x.shape[1:]))
            x = torch.cat([x, pad]).contiguous(memory_format=_memory_format(x))
        return self._compiled(x)[:n]

    def _fall_back(self, exc: Exception) -> None:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        warnings.warn(
            f"torch.compile of {self.net.name} failed ({type(exc).__name__}: {first}); "
            "running eager (pass --no-compile to skip the attempt)",
            stacklevel=3,
        )
        self._compiled = None


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


_CACHE: dict[int, dict[tuple, RowsFunction]] = {}  # id(net) -> key -> function
_CACHE_LOCK = threading.Lock()


def rows_function(
    net: Network,
    layers: dict[str, ReduceFn],
    *,
    compile: bool = False,
    batch_size: int = 64,
    backend: str = "inductor",
) -> RowsFunction:
    """The process's :class:`RowsFunction` for these arguments: compiled once, reused by
    every task while ``net`` lives (reductions are keyed by their text, e.g. ``mean``)."""
    key = (tuple((n, str(r)) for n, r in layers.items()), compile, int(batch_size), backend)
    with _CACHE_LOCK:
        per_net = _CACHE.get(id(net))
        if per_net is None:
            per_net = _CACHE[id(net)] = {}
            weakref.finalize(net, _CACHE.pop, id(net), None)
        if key not in per_net:
            per_net[key] = RowsFunction(
                net, layers, compile=compile, batch_size=batch_size, backend=backend
            )
        return per_net[key]
