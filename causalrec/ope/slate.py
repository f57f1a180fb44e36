"""Slate off-policy estimators: standard, independent-position and reward-interaction IPS.

For a slate log, rows are impressions (slate s, position k, reward r_{s,k}). With the logging
and evaluation probabilities of the kind each estimator needs,

* standard slate IPS (SIPS):      w = π(a_{s,1..K}) / π_0(a_{s,1..K})  (whole slate)
* independent IPS (IIPS):         w = π(a_{s,k} at k) / π_0(a_{s,k} at k)  (marginal)
* reward-interaction IPS (RIPS):  w = π(a_{s,1..k}) / π_0(a_{s,1..k})  (prefix; cascade)

and the estimate is Σ_rows w · r / n_slates, the expected sum of rewards over a slate (Open
Bandit Pipeline's convention). Intervals treat slates as the independent units.

References:
    Swaminathan, Krishnamurthy, Agarwal, Dudík, Langford, Jose, Zitouni, "Off-policy
    Evaluation for Slate Recommendation", NeurIPS 2017.
    Li, Kim, Zitouni, "Offline Evaluation and Optimization for Interactive Systems", WSDM 2018.
    McInerney, Brost, Chandar, Mehrotra, Carterette, "Counterfactual Evaluation of Slate
    Recommendations with Sequential Reward Interactions", KDD 2020.
    Kiyohara, Saito, Matsuhiro, Narita, Shimizu, Yamamoto, "Doubly Robust Off-Policy Evaluation
    for Ranking Policies under the Cascade Behavior Model", WSDM 2022.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

from causalrec.ope._validation import check_hyperparameter, check_probabilities
from causalrec.ope.base import Estimator
from causalrec.ope.intervals import EstimatorTerms, confidence_interval
from causalrec.platform.errors import DataError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.policy import Policy

if TYPE_CHECKING:
    from causalrec.ope.policy_inputs import EvaluationInputs

__all__ = [
    "SlateEstimator",
    "SlateIndependentIPS",
    "SlateRewardInteractionIPS",
    "SlateStandardIPS",
    "has_complete_slates",
    "slate_pscores",
]


def has_complete_slates(logs: LoggedFeedback) -> bool:
    """Whether every round has one row per position (Open Bandit logs, say, do not)."""
    try:
        _slate_matrix(logs)
    except DataError:
        return False
    return True


def _slate_matrix(logs: LoggedFeedback) -> tuple[np.ndarray, np.ndarray]:
    """Rows ordered by (round, position), shape (n_rows,), and the slates, (n_rounds, K)."""
    order = np.lexsort((logs.position, logs.round_id))
    K = logs.slate_size
    if logs.n_rows % K or not np.array_equal(
        logs.position[order], np.tile(np.arange(K), logs.n_rows // K)
    ):
        raise DataError(f"slate estimators need every round to have all {K} positions")
    return order, logs.item_id[order].reshape(-1, K)


def slate_pscores(
    logs: LoggedFeedback, policy: Policy, estimator: SlateEstimator
) -> tuple[np.ndarray, np.ndarray]:
    """Logging and evaluation probabilities of the kind ``estimator`` needs, per row.

    Args:
        logs: A log of complete slates (every round has all K positions), n_rows impressions.
        policy: The evaluation policy.
        estimator: Its :attr:`~SlateEstimator.pscore_kind` says which probabilities.

    Returns:
        ``(pscore, evaluation_pscore)``, both of shape (n_rows,), in the log's row order.
    """
    K = logs.slate_size
    order, slates = _slate_matrix(logs)
    users = logs.user_id[order][::K]
    evaluation = np.empty(logs.n_rows)
    logging = np.empty(logs.n_rows)
    if estimator.pscore_kind == "marginal":
        evaluation[order] = policy.marginal_probability(users, slates).ravel()
        logging[:] = logs.pscore
    else:
        prefix = policy.prefix_probability(users, slates)
        logged_prefix = logs.pscore_prefix[order].reshape(-1, K)
        if np.isnan(logged_prefix).any():
            raise DataError(f"{estimator.name} needs pscore_prefix, which this log does not record")
        if estimator.pscore_kind == "joint":
            prefix = np.repeat(prefix[:, -1:], K, axis=1)
            logged_prefix = np.repeat(logged_prefix[:, -1:], K, axis=1)
        evaluation[order] = prefix.ravel()
        logging[order] = logged_prefix.ravel()
    return logging, evaluation


@dataclass(frozen=True)
class SlateEstimator(Estimator):
    """Base of the slate IPS estimators.

    Methods take keyword arrays of shape (n_rows,): ``reward``, ``slate_id`` (rows of one
    slate share an id), ``position`` (0-based), ``pscore`` (logging probability of the kind in
    :attr:`pscore_kind`) and ``evaluation_pscore`` (the evaluation policy's, same kind).
    :meth:`policy_terms` computes both from a log of complete slates and a policy.

    Attributes:
        clip: Largest importance weight kept (``inf``: no clipping).
    """

    clip: float = np.inf
    #: Which probability both pscores must be: "joint", "marginal" or "prefix".
    pscore_kind: ClassVar[str]

    def __post_init__(self) -> None:
        check_hyperparameter("clip", self.clip)

    def _policy_arrays(self, inputs: EvaluationInputs) -> dict[str, np.ndarray]:
        logs = inputs.logs
        logging, evaluation = inputs.cached(
            ("slate_pscores", self.pscore_kind),
            lambda: slate_pscores(logs, inputs.policy, self),
        )
        return dict(
            reward=logs.click,
            slate_id=logs.round_id,
            position=logs.position,
            pscore=logging,
            evaluation_pscore=evaluation,
        )

    def policy_terms(self, inputs: EvaluationInputs) -> EstimatorTerms:
        """Per-slate terms (a slate is a round), from the policy's slate probabilities."""
        return self._terms(**self._policy_arrays(inputs))

    def policy_clipped_share(self, inputs: EvaluationInputs) -> float:
        """Share of rows whose weight exceeds ``clip``."""
        arrays = self._policy_arrays(inputs)
        return float(np.mean(arrays["evaluation_pscore"] / arrays["pscore"] > self.clip))

    def _terms(self, reward, slate_id, position, pscore, evaluation_pscore) -> EstimatorTerms:
        reward = np.asarray(reward, dtype=np.float64)
        n = len(reward)
        if reward.ndim != 1 or n == 0:
            raise DataError(f"reward must be a non-empty 1-d array; got shape {reward.shape}")
        slate_id = np.asarray(slate_id)
        position = np.asarray(position)
        for name, values in (("slate_id", slate_id), ("position", position)):
            if values.shape != (n,):
                raise DataError(f"{name} must have shape ({n},) (as reward); got {values.shape}")
        if position.min() < 0:
            row = int(np.argmin(position))
            raise DataError(f"position must be >= 0 (0-based); got {position[row]} at row {row}")
        pscore = check_probabilities("pscore", pscore, n)
        evaluation = np.asarray(evaluation_pscore, dtype=np.float64)
        if evaluation.shape != (n,):
            raise DataError(f"evaluation_pscore must have shape ({n},); got {evaluation.shape}")
        bad = ~np.isfinite(evaluation) | (evaluation < 0) | (evaluation > 1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"evaluation_pscore must be in [0, 1]; got {evaluation[row]} at row {row}"
            )
        weight = np.minimum(evaluation / pscore, self.clip)
        slates, index = np.unique(slate_id, return_inverse=True)
        per_slate = np.bincount(index, weights=weight * reward, minlength=len(slates))
        return EstimatorTerms(
            baseline=None,
            correction=per_slate,
            weight=np.bincount(index, weights=weight, minlength=len(slates)),
            rows=np.bincount(index, minlength=len(slates)).astype(np.float64),
        )

    def estimate(self, *, reward, slate_id, position, pscore, evaluation_pscore) -> float:
        """Expected sum of rewards per slate under the evaluation policy."""
        return self._terms(reward, slate_id, position, pscore, evaluation_pscore).value()

    def round_rewards(self, *, reward, slate_id, position, pscore, evaluation_pscore) -> np.ndarray:
        """Per-row contributions w · r, shape (n_rows,); their sum / n_slates is the estimate."""
        pscore = check_probabilities("pscore", pscore, len(np.asarray(reward)))
        weight = np.minimum(np.asarray(evaluation_pscore, dtype=np.float64) / pscore, self.clip)
        return weight * np.asarray(reward, dtype=np.float64)

    def interval(
        self,
        *,
        reward,
        slate_id,
        position,
        pscore,
        evaluation_pscore,
        alpha: float = 0.05,
        method: Literal["normal", "bootstrap", "studentized", "betting"] = "normal",
        n_bootstrap: int = 1000,
        seed: int | None = None,
    ) -> tuple[float, float]:
        """``(low, high)`` of a ``1 - alpha`` interval, resampling slates."""
        terms = self._terms(reward, slate_id, position, pscore, evaluation_pscore)
        return confidence_interval(terms, method, alpha, n_bootstrap, seed)


@dataclass(frozen=True)
class SlateStandardIPS(SlateEstimator):
    """Standard slate IPS: weights from whole-slate probabilities (unbiased, high variance)."""

    name: ClassVar[str] = "sips"
    pscore_kind: ClassVar[str] = "joint"


@dataclass(frozen=True)
class SlateIndependentIPS(SlateEstimator):
    """Independent-position IPS: item–position marginal weights (assumes no interactions)."""

    name: ClassVar[str] = "iips"
    pscore_kind: ClassVar[str] = "marginal"


@dataclass(frozen=True)
class SlateRewardInteractionIPS(SlateEstimator):
    """Reward-interaction (cascade) IPS: slate-prefix weights up to each position."""

    name: ClassVar[str] = "rips"
    pscore_kind: ClassVar[str] = "prefix"
