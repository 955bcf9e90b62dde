"""The one table of sampling methods: name -> config class and synthesis function.

A method registers itself where it is defined::

    @register("simonyan", SimonyanConfig)
    def synthesize_simonyan(network, jobs, *, config, seed, progress) -> Synthesis: ...

so adding a method touches one file (and the import list of
:mod:`actstats.synth.methods`). :func:`default_config` builds a method's config with
overrides; :func:`synthesize` runs it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from actstats.errors import ActstatsError
from actstats.net.network import Network
from actstats.synth.jobs import Job, Synthesis
from actstats.synth.methods.base import RenderConfig
from actstats.synth.render import Progress

__all__ = ["METHODS", "Method", "default_config", "register", "synthesize"]


class SynthesisFn(Protocol):
    """A method's entry point: every job in one batch on ``network.device``."""

    def __call__(
        self,
        network: Network,
        jobs: Sequence[Job],
        *,
        config: Any,
        seed: int,
        progress: Progress | None,
    ) -> Synthesis: ...


@dataclass(frozen=True)
class Method:
    """A registered method: its name, its config class (defaults included) and its run."""

    name: str
    config: type[RenderConfig]
    run: SynthesisFn


#: Every sampling method by name, in registration order (``sample --method``).
METHODS: dict[str, Method] = {}


def register(name: str, config: type[RenderConfig]) -> Callable[[SynthesisFn], SynthesisFn]:
    """Decorator: add the function to :data:`METHODS` under ``name`` with ``config``."""

    def add(fn: SynthesisFn) -> SynthesisFn:
        if name in METHODS:
            raise ValueError(f"synthesis method {name!r} is registered twice")
        METHODS[name] = Method(name, config, fn)
        return fn

    return add


def _method(name: str) -> Method:
    if name not in METHODS:
        raise ActstatsError(f"--method {name!r}: choose one of {', '.join(METHODS)}")
    return METHODS[name]


def default_config(method: str, **overrides: Any) -> RenderConfig:
    """The tuned defaults of ``method`` with ``overrides`` (``None`` values ignored)."""
    cls = _method(method).config
    values = {k: v for k, v in overrides.items() if v is not None}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ActstatsError(
            f"synthesis option {', '.join(unknown)}: --method {method} has no such option; "
            f"its options: {', '.join(sorted(known))}"
        )
    return cls(**values)


def synthesize(
    network: Network,
    jobs: Sequence[Job],
    method: str,
    *,
    config: RenderConfig | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> Synthesis:
    """Run ``method`` for every job in one batch on ``network.device``.

    ``config`` defaults to the method's; it must be the method's config class.
    Deterministic for a given ``seed`` on the CPU.
    """
    entry = _method(method)
    config = config if config is not None else entry.config()
    if not isinstance(config, entry.config):
        raise ActstatsError(
            f"--method {method}: config is a {type(config).__name__}, not a {entry.config.__name__}"
        )
    config = config.at_size(network.preprocessing.crop)
    return entry.run(network, jobs, config=config, seed=seed, progress=progress)
