"""Per-round estimator inputs of a target policy on a log, and its overlap diagnostics.

:func:`round_inputs` computes every per-impression input straight from the policy protocol, a
chunk of rows at a time, so the (n_rounds, n_items) arrays of the array-level contract never
exist: π(a_i | x_i) for the importance weights, Σ_a π(a | x_i) q̂(x_i, a) for the direct-method
part and the policy mass on items the logger never showed. :class:`EvaluationInputs` carries
them, with the log and the policy, to every estimator family
(:meth:`causalrec.ope.base.Estimator.policy_terms`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from causalrec.ope.cross_fit import CrossFittedRewardModel
from causalrec.ope.inputs import RoundInputs
from causalrec.ope.intervals import EstimatorTerms
from causalrec.ope.reward_model import RewardModelConfig
from causalrec.platform.errors import DataError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.policy import Policy

__all__ = ["POOR_ESS_SHARE", "POOR_SUPPORT", "EvaluationInputs", "RoundDiagnostics", "round_inputs"]

#: Below this effective-sample-size share, or above this unsupported policy mass, overlap is poor.
POOR_ESS_SHARE = 0.01
POOR_SUPPORT = 0.05
_CHUNK_ROWS = 4096


@dataclass(frozen=True)
class RoundDiagnostics:
    """Overlap diagnostics of a target policy on a log.

    Attributes:
        ess: Kish effective sample size of the importance weights, (Σw)² / Σw².
        ess_share: ``ess / n_rows``.
        max_weight: Largest importance weight.
        mean_weight: Mean importance weight (≈ 1 under full support).
        unsupported_mass: Mean policy mass on items the log never shows (at that position).
    """

    ess: float
    ess_share: float
    max_weight: float
    mean_weight: float
    unsupported_mass: float

    @property
    def warning(self) -> str:
        """A human-readable overlap warning, or ``""``."""
        problems = []
        if self.ess_share < POOR_ESS_SHARE:
            problems.append(f"effective sample size is {self.ess_share:.2%} of the rows")
        if self.unsupported_mass > POOR_SUPPORT:
            problems.append(
                f"{self.unsupported_mass:.1%} of the policy's mass is on items the log never shows"
            )
        return "poor overlap: " + "; ".join(problems) if problems else ""


@dataclass(frozen=True)
class EvaluationInputs:
    """Everything an estimator family may need to evaluate one target policy on one log.

    Attributes:
        logs: The log (clicks are the reward), n_rows impressions.
        policy: The target policy.
        impressions: Per-impression inputs of the standard estimators (weights from the
            ``"impression"`` propensities; q̂ terms when a reward model was fitted).
        round_index: Round of each impression, shape (n_rows,), values in [0, n_rounds).
        n_rounds: Number of rounds of the log (the independent units of the intervals).
        logging_policy: The policy that wrote the log, when known (the estimators over item
            clusters need its full distribution; the log has the shown item's pscore only).
        item_clusters: Cluster of every item, shape (n_items,), or ``None``.
    """

    logs: LoggedFeedback
    policy: Policy
    impressions: RoundInputs
    round_index: np.ndarray
    n_rounds: int
    logging_policy: Policy | None = None
    item_clusters: np.ndarray | None = None
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def per_round(self, terms: EstimatorTerms) -> EstimatorTerms:
        """Per-impression terms, shape (n_rows,), summed within each round: clicks per round."""
        if self.n_rounds == self.logs.n_rows:  # one row per round (K = 1, Open Bandit logs)
            return terms
        return terms.summed_by(self.round_index, self.n_rounds)

    def cached(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()``, once per ``key`` for these inputs (what several estimators share)."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]


def round_inputs(
    logs: LoggedFeedback,
    policy: Policy,
    *,
    pscore: np.ndarray,
    reward_model: RewardModelConfig | CrossFittedRewardModel | None,
) -> tuple[RoundInputs, RoundDiagnostics]:
    """Per-round inputs of the standard estimators and overlap diagnostics, chunk by chunk.

    Args:
        logs: The log, n_rows impressions.
        policy: The target policy.
        pscore: Logging propensities of the logged items, shape (n_rows,).
        reward_model: A configuration (models are fitted here), reward models already fitted
            on ``logs`` (:class:`CrossFittedRewardModel`, to evaluate many policies on one
            log), or ``None`` (no direct-method part).

    Returns:
        ``(inputs, diagnostics)``: one entry per impression, and the overlap of ``policy``.
    """
    if policy.n_items != logs.n_items:
        raise DataError(f"policy has n_items={policy.n_items}; the log has {logs.n_items}")
    if policy.slate_size < logs.slate_size:
        raise DataError(f"policy has slate_size={policy.slate_size}; the log has {logs.slate_size}")
    if isinstance(reward_model, RewardModelConfig):
        reward_model = CrossFittedRewardModel.fit(logs, reward_model)
    n = logs.n_rows
    seen = np.zeros((logs.n_items, logs.slate_size), dtype=bool)
    seen[logs.item_id, logs.position] = True
    pi_logged, unsupported = np.empty(n), np.empty(n)
    q_factual = q_policy = None
    x = reward_model.features if reward_model is not None else None

    shown = policy.deterministic_slates(logs.user_id)

    def process(rows: np.ndarray, model) -> None:
        if shown is not None:  # deterministic policy: O(1) per row, no distribution needed
            positions = logs.position[rows]
            target_item = shown[rows, positions]
            pi_logged[rows] = target_item == logs.item_id[rows]
            unsupported[rows] = ~seen[target_item, positions]
            if model is not None:
                q_policy[rows] = model.predict_pairs(x[rows], target_item, positions)
            return
        for start in range(0, len(rows), _CHUNK_ROWS):
            chunk = rows[start : start + _CHUNK_ROWS]
            dist = policy.action_distribution(logs.user_id[chunk])
            dist = dist[:, :, None] if dist.ndim == 2 else dist
            local = np.arange(len(chunk))
            positions = logs.position[chunk]
            at_position = dist[local, :, positions]  # (c, n_items)
            pi_logged[chunk] = at_position[local, logs.item_id[chunk]]
            unsupported[chunk] = (at_position * ~seen[:, positions].T).sum(axis=1)
            if model is not None:
                q_all = model.predict_all(x[chunk], positions)
                q_policy[chunk] = np.einsum("ci,ci->c", at_position, q_all)

    if reward_model is None:
        process(np.arange(n), None)
    else:
        q_factual, q_policy = reward_model.q_factual, np.empty(n)
        for fold, model in enumerate(reward_model.models):
            process(np.flatnonzero(reward_model.folds == fold), model)
    weight = pi_logged / pscore
    inputs = RoundInputs(
        reward=logs.click.astype(np.float64),
        weight=weight,
        q_factual=q_factual,
        q_policy=q_policy,
    )
    ess = float(weight.sum() ** 2 / max(float(weight @ weight), np.finfo(float).tiny))
    diagnostics = RoundDiagnostics(
        ess=ess,
        ess_share=ess / n,
        max_weight=float(weight.max()),
        mean_weight=float(weight.mean()),
        unsupported_mass=float(unsupported.mean()),
    )
    return inputs, diagnostics
