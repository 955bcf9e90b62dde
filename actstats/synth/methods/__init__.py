"""Synthesis methods: a neuron and class statistics in, images out, over the one render loop.

Sampling methods register in :data:`METHODS` (:mod:`.registry`), each with its own
config class: ``simonyan`` (the baseline), ``suppress`` (class priors and outlier
suppression), ``ancestral`` (a chain of conditionals, inverted deepest first) and
``code-prior`` (a layer's code in the range of real activations, then decoded) and
``generator`` (DGN-AM: a trained decoder's code, clipped to the range of real activations).
:mod:`.invert` and :mod:`.dream` start from one image instead of a neuron and are
called directly (``actstats invert`` / ``dream``), with configs of their own.
"""

from __future__ import annotations

# Importing a method module registers it; this order is the order of ``--method``'s help.
# isort: off
from actstats.synth.methods import simonyan  # noqa: F401
from actstats.synth.methods import suppress  # noqa: F401
from actstats.synth.methods import ancestral  # noqa: F401
from actstats.synth.methods import code_prior  # noqa: F401
from actstats.synth.methods import generator  # noqa: F401

# isort: on
from actstats.synth.methods.registry import (
    METHODS,
    Method,
    default_config,
    register,
    synthesize,
)

__all__ = ["METHODS", "Method", "default_config", "register", "synthesize"]
