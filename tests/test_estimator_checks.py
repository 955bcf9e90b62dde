"""scikit-learn's own estimator checks on the layer models that claim its contract.

``GaussianLayerModel`` and ``MixtureLayerModel`` follow scikit-learn's conventions
(keyword-only hyper-parameters, ``fit`` returning ``self``, trailing-underscore state,
``score_samples`` / ``sample`` with ``random_state``). The checks they are known to fail
are listed with the reason; any other failure, or one of these starting to pass, fails
the test.
"""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from actstats.stats.gaussian import GaussianLayerModel
from actstats.stats.mixture import MixtureLayerModel

#: Scoring takes one activation vector as one row and names the layer model in its
#: shape errors (ActstatsError, shown by the CLI as one line), where scikit-learn wants
#: a ValueError about ``n_features_in_`` and rejects 1-D input.
_SCORING = "scoring accepts a 1-D vector as one row and raises ActstatsError naming the layer"
_EXPECTED: dict[type, dict[str, str]] = {
    GaussianLayerModel: {"check_n_features_in_after_fitting": _SCORING},
    MixtureLayerModel: {
        "check_n_features_in_after_fitting": _SCORING,
        "check_fit2d_predict1d": _SCORING,
        "check_transformer_general": _SCORING,
        "check_estimators_nan_inf": "scoring does not scan its input for NaN (activations "
        "come from the store, where skipped rows are masked by images/ok)",
        "check_estimators_unfitted": "an unfitted model raises AttributeError, not NotFittedError",
        "check_dict_unchanged": "the first score caches each component's Cholesky factors",
    },
}


@parametrize_with_checks(
    [GaussianLayerModel(cov="full"), MixtureLayerModel(n_components=2, basis_dim=3)],
    expected_failed_checks=lambda est: _EXPECTED[type(est)],
)
def test_sklearn_compatible_estimator(estimator, check) -> None:
    check(estimator)
