"""Image synthesis: composable objectives, parameterizations, transforms, one render loop.

Methods (``simonyan``, ``suppress``, ``ancestral``, ``code-prior``) live in
:mod:`actstats.synth.methods`, registered in one ``METHODS`` table with a config
class each; priors built from class statistics in :mod:`actstats.synth.priors`. This
package holds no file I/O and no device of its own (tensors live on the network's
device).
"""

from __future__ import annotations

from actstats.synth.jobs import ClassStats, Job, Synthesis
from actstats.synth.methods import METHODS, default_config, synthesize
from actstats.synth.methods.base import RenderConfig
from actstats.synth.objectives import Objective
from actstats.synth.render import RenderResult, render

__all__ = [
    "METHODS",
    "ClassStats",
    "Job",
    "Objective",
    "RenderConfig",
    "RenderResult",
    "Synthesis",
    "default_config",
    "render",
    "synthesize",
]
