"""Propensities for the inverse-propensity family of recommenders.

* ``exposed`` setting — P(the logger shows item i to user u in a round):
  ``logged`` (the log's exact pscore), ``popularity`` (the item's share of impressions),
  ``logistic`` (multinomial logistic regression of the shown item on observed user features).
* ``implicit`` setting — P(pair (u, i) is exposed at all), needed for every pair including
  unexposed ones: ``popularity`` (θ_i = (n_i / max_j n_j)^0.5, Saito et al. 2020).

``auto`` picks ``logged`` for exposed feedback and ``popularity`` for implicit feedback.
"""

from __future__ import annotations

import numpy as np

from causalrec.methods.data import InteractionData
from causalrec.platform.errors import ConfigError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.validation import unknown_name_error

__all__ = ["EXPOSED_PROPENSITIES", "IMPLICIT_PROPENSITIES", "clip_propensities", "propensities"]

EXPOSED_PROPENSITIES = ("auto", "logged", "popularity", "logistic")
IMPLICIT_PROPENSITIES = ("auto", "popularity")


def propensities(
    kind: str, logs: LoggedFeedback, data: InteractionData, *, floor: float = 0.0
) -> np.ndarray:
    """Propensity of every training example, shape (n_examples,), clipped below at ``floor``."""
    if not 0.0 <= floor < 1.0:
        raise ConfigError(f"propensity_floor must be in [0, 1); got {floor}")
    allowed = EXPOSED_PROPENSITIES if data.feedback == "exposed" else IMPLICIT_PROPENSITIES
    if kind not in allowed:
        if kind in EXPOSED_PROPENSITIES:
            raise ConfigError(
                f"propensity={kind!r} is not available in the {data.feedback} setting, which "
                f"needs exposure probabilities of unexposed pairs too; use one of {list(allowed)}"
            )
        raise unknown_name_error("propensity", kind, allowed)
    if kind == "auto":
        kind = "logged" if data.feedback == "exposed" else "popularity"
    if kind == "logged":
        if np.isnan(data.pscore).any():
            raise ConfigError(
                "propensity='logged' needs the log's pscore, which this log does not record; "
                "use an estimated propensity: 'popularity' or 'logistic'"
            )
        values = data.pscore
    elif kind == "popularity" and data.feedback == "exposed":
        values = data.exposure_counts[data.items] / data.exposure_counts.sum()
    elif kind == "popularity":
        values = np.sqrt(data.exposure_counts / data.exposure_counts.max())[data.items]
    else:
        from causalrec.ope.propensity import estimate_pscore

        values = estimate_pscore(logs)
    return clip_propensities(values, floor)


def clip_propensities(values: np.ndarray, floor: float) -> np.ndarray:
    """``values`` as float64, clipped below at ``floor`` (and at 1e-12); NaN stays NaN."""
    return np.maximum(np.asarray(values, dtype=np.float64), max(floor, 1e-12))
