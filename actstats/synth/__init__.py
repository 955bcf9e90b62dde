"""Image synthesis: composable objectives, parameterizations, transforms, one render loop.

Methods (``simonyan``, ``suppress``, ``ancestral``) are recipes in
:mod:`actstats.synth.recipes`; this package holds no file I/O and no device of
its own (tensors live on the network's device).
"""

from __future__ import annotations

from actstats.synth.objectives import Objective
from actstats.synth.recipes import (
    METHODS,
    ClassStats,
    Job,
    SynthConfig,
    Synthesis,
    default_config,
    synthesize,
)
from actstats.synth.render import RenderResult, render

__all__ = [
    "METHODS",
    "ClassStats",
    "Job",
    "Objective",
    "RenderResult",
    "SynthConfig",
    "Synthesis",
    "default_config",
    "render",
    "synthesize",
]
