"""actstats: statistics of real activations for realistic feature visualization.

>>> import actstats
>>> models = actstats.load("run/models")            # doctest: +SKIP
>>> models["golden_retriever"]["conv4_3"].sample(8, random_state=0)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from actstats.errors import ActstatsError
from actstats.version import __version__

__all__ = ["ActstatsError", "__version__", "load"]


def load(path: Any) -> Any:
    """Load a fitted model file (see :func:`actstats.io.modelfile.load_models`)."""
    from actstats.io.modelfile import load_models

    return load_models(path)
