"""Where distributed dask work runs: a joined or a started dask.distributed cluster.

Which scheduler a run uses is decided in :mod:`actstats.pipeline.schedule`; this
module is its distributed half. ``--scheduler ADDRESS`` joins a running cluster;
``--workers N`` starts a ``LocalCluster`` of N processes on this machine, or,
on CUDA, dask-cuda's ``LocalCUDACluster`` with one worker per GPU (each sees only
its GPU, so ``cuda`` means that one).

A network reaches the workers through :class:`NetworkPlugin`, a
``distributed.WorkerPlugin`` that loads it once per worker process (also on a
worker that joins or is restarted later), instead of once per task.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from distributed import WorkerPlugin

from actstats.errors import ActstatsError
from actstats.net.network import Network, load_network
from actstats.net.preprocessing import Preprocessing

if TYPE_CHECKING:
    from distributed import Client, Worker

__all__ = [
    "NetworkPlugin",
    "NetworkSpec",
    "connect",
    "register_network",
    "worker_network",
]

#: Threads per worker process: one decodes the next partition while one runs the network.
THREADS_PER_WORKER = 2


@contextlib.contextmanager
def connect(
    scheduler: str | None, workers: int | None, *, cuda: bool = False
) -> Iterator[Client | None]:
    """A dask.distributed client for ``scheduler`` or ``workers``, else ``None`` (run locally).

    A cluster started here (``workers``) is closed on exit; a joined one is left running.
    """
    if scheduler is None and workers is None:
        yield None
        return
    if scheduler is not None and workers is not None:
        raise ActstatsError("--scheduler and --workers: give one (join a cluster or start one)")
    if workers is not None and workers < 1:
        raise ActstatsError(f"--workers {workers}: must be at least 1")
    from distributed import Client

    with contextlib.ExitStack() as stack:
        if scheduler is not None:
            try:
                client = stack.enter_context(Client(scheduler, timeout="20s"))
            except (OSError, TimeoutError) as exc:
                raise ActstatsError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
        else:
            cluster = _cuda_cluster(workers) if cuda else _cpu_cluster(workers)
            stack.enter_context(cluster)
            client = stack.enter_context(Client(cluster))
        yield client


def _cpu_cluster(workers: int) -> Any:
    """N worker processes sharing this machine's cores (torch threads split between them)."""
    from distributed import LocalCluster

    threads = max(1, (os.cpu_count() or 1) // workers)
    return LocalCluster(
        n_workers=workers,
        threads_per_worker=THREADS_PER_WORKER,
        processes=True,
        dashboard_address=":0",
        env={"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)},
    )


def _cuda_cluster(workers: int) -> Any:
    """One worker per GPU via dask-cuda (imported only here: an optional dependency)."""
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        raise ActstatsError(
            "--workers on CUDA needs dask-cuda (one worker per GPU): pip install dask-cuda, "
            "or pass --device cpu"
        ) from None
    import torch

    gpus = torch.cuda.device_count()
    if workers > gpus:
        raise ActstatsError(f"--workers {workers}: this machine has {gpus} GPU(s); one worker each")
    return LocalCUDACluster(
        n_workers=workers,
        CUDA_VISIBLE_DEVICES=list(range(workers)),
        threads_per_worker=THREADS_PER_WORKER,
        dashboard_address=":0",
    )


# ------------------------------------------------------------------- the network
@dataclass(frozen=True)
class NetworkSpec:
    """How a worker rebuilds a network by name: small, hashable, checked by weights sha256."""

    name: str
    weights: str
    device: str
    preprocessing: str  # JSON of Preprocessing.to_dict(), so the spec is hashable
    weights_sha256: str

    @classmethod
    def of(cls, net: Network) -> NetworkSpec:
        """The spec of a network loaded by name (its weights' sha256 travels with it)."""
        pre = json.dumps(net.preprocessing.to_dict(), sort_keys=True)
        return cls(net.name, net.weights, net.device.type, pre, net.weights_sha256)

    def load(self) -> Network:
        """Rebuild the network on this worker; refuse weights that differ from the client's."""
        pre = Preprocessing.from_dict(json.loads(self.preprocessing))
        net = load_network(self.name, self.weights, device=self.device, preprocessing=pre)
        if net.weights_sha256 != self.weights_sha256:
            raise ActstatsError(
                f"--weights {self.weights}: differs on this worker (sha256 mismatch); "
                "give every worker the same file"
            )
        return net


_LOADED: dict[str, Network] = {}
_LOADED_LOCK = threading.Lock()


class NetworkPlugin(WorkerPlugin):
    """Loads the network once per worker process, when the worker starts or joins.

    Networks known by name travel as a :class:`NetworkSpec` and are rebuilt on
    the worker; a network built from a module instance (``weights="as-given"``)
    cannot be, and travels pickled whole. Tasks find it with
    :func:`worker_network` under :attr:`name`. It stays loaded for the
    worker's life, so a rerun on a long-lived cluster does not reload it.
    """

    def __init__(self, net: Network) -> None:
        self.recipe: NetworkSpec | Network = (
            net if net.weights == "as-given" else NetworkSpec.of(net)
        )
        ident = json.dumps([net.name, net.weights, net.device.type, net.weights_sha256])
        self.name = f"actstats-network-{hashlib.sha256(ident.encode()).hexdigest()[:16]}"

    def setup(self, worker: Worker) -> None:
        """Dask's hook on worker start: load the network once per process (thread-safe)."""
        with _LOADED_LOCK:
            if self.name not in _LOADED:
                recipe = self.recipe
                _LOADED[self.name] = recipe.load() if isinstance(recipe, NetworkSpec) else recipe


def register_network(client: Client, net: Network) -> str:
    """Load ``net`` on every worker of ``client`` (and later ones); return its lookup key."""
    plugin = NetworkPlugin(net)
    client.register_plugin(plugin, name=plugin.name)
    return plugin.name


def worker_network(key: str) -> Network:
    """The network that :class:`NetworkPlugin` ``key`` loaded in this worker process."""
    with _LOADED_LOCK:
        if key not in _LOADED:
            raise ActstatsError(
                f"{key}: no such network on this worker; was the plugin registered?"
            )
        return _LOADED[key]
