"""Cascade doubly robust (Cascade-DR) off-policy estimator for slates.

Under the cascade behaviour model the reward at position k depends on the slate only through
its prefix a_{1:k}. With prefix importance weights w_k = π(a_{1:k}) / π_0(a_{1:k}) (w_0 = 1) and
a Q model q̂_k(x, a_{1:k}) ≈ E_π[r_k + ... + r_K | x, a_{1:k}] (expected rewards from position k
to the end, the evaluation policy filling positions k+1..K), each slate contributes

    Σ_k  w_k (r_k − q̂_k(x, a_{1:k}))  +  w_{k−1} Σ_a π(a | x, a_{1:k−1}) q̂_k(x, a_{1:k−1}, a)

and the estimate is their mean over slates, the expected sum of rewards over a slate (Open
Bandit Pipeline's convention). It is unbiased for any q̂ when π_0 covers π's prefixes and the
action distribution is the conditional of the prefix probabilities; a good q̂ reduces its
variance below that of reward-interaction IPS (``rips``, the same weights without q̂).

The arithmetic is Open Bandit Pipeline's ``SlateCascadeDoublyRobust`` (obp 0.5.7), with one
difference: OBP takes the rows of each slate to be consecutive and in position order (it never
reads ``position``); here rows may come in any order, each row's q̂ and action distribution
travelling with it, so the two agree on every input OBP orders that way.

References:
    Kiyohara, Saito, Matsuhiro, Narita, Shimizu, Yamamoto, "Doubly Robust Off-Policy Evaluation
    for Ranking Policies under the Cascade Behavior Model", WSDM 2022.
    Saito, Aihara, Matsutani, Narita, "Open Bandit Dataset and Pipeline", NeurIPS 2021.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

from causalrec.ope._validation import (
    SUM_TOLERANCE,
    check_integers,
    check_probabilities,
    check_reward,
)
from causalrec.ope.base import Estimator
from causalrec.ope.intervals import EstimatorTerms, confidence_interval
from causalrec.platform.errors import ConfigError, DataError

if TYPE_CHECKING:
    from causalrec.ope.policy_inputs import EvaluationInputs

__all__ = ["SlateCascadeDR"]

#: Relative slack allowed when a longer prefix's probability exceeds a shorter one's (rounding).
_PREFIX_SLACK = 1e-12


def _check_per_action(name: str, values, n: int, n_actions: int) -> np.ndarray:
    """A flat (n * n_actions,) array of finite values, returned as (n, n_actions)."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (n * n_actions,):
        raise DataError(
            f"{name} must have shape (n_rows * n_unique_action,) = ({n * n_actions},); "
            f"got {values.shape}"
        )
    bad = ~np.isfinite(values)
    if bad.any():
        entry = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{name} must be finite; got {values[entry]} at row {entry // n_actions} "
            f"(entry {entry})"
        )
    return values.reshape(n, n_actions)


def _check_prefix_order(name: str, prefix: np.ndarray, slates: np.ndarray) -> None:
    """Prefix probabilities, shape (n_slates, K), must not increase along a slate."""
    rises = prefix[:, 1:] > prefix[:, :-1] * (1 + _PREFIX_SLACK)
    if rises.any():
        s, k = np.argwhere(rises)[0]
        raise DataError(
            f"{name} must not increase along a slate (it is P(a_1..a_k), not P(a_k | a_1..a_k-1)); "
            f"slate {slates[s]} has {prefix[s, k + 1]} at position {k + 1} after "
            f"{prefix[s, k]} at position {k}"
        )


@dataclass(frozen=True)
class SlateCascadeDR(Estimator):
    """Cascade doubly robust estimator of the expected sum of rewards per slate.

    Methods take keyword arrays with one row per impression, n_rows = n_slates * len_list, in
    any order, every slate having exactly one row per position 0..len_list-1 (A below is
    ``n_unique_action``):

    * ``slate_id``: slate of each row, shape (n_rows,).
    * ``action``: logged action a_k, integers in [0, A), shape (n_rows,).
    * ``reward``: reward r_k, shape (n_rows,).
    * ``position``: 0-based position k, in [0, len_list), shape (n_rows,).
    * ``pscore_cascade``: logging prefix probability π_0(a_{1:k} | x), in (0, 1], shape
      (n_rows,); non-increasing along a slate.
    * ``evaluation_policy_pscore_cascade``: evaluation prefix probability π(a_{1:k} | x), in
      [0, 1], shape (n_rows,); non-increasing along a slate.
    * ``q_hat``: q̂_k(x, a_{1:k-1}, a) for every action a, flat shape (n_rows * A,): entries
      [j * A, (j + 1) * A) belong to row j (OBP's layout when rows are in slate order).
    * ``evaluation_policy_action_dist``: π(a | x, a_{1:k-1}) for every action a given the logged
      prefix above row j, same layout as ``q_hat``, summing to 1 per row.

    Attributes:
        len_list: Slate length K (positions per slate).
        n_unique_action: Number of actions (items) A.

    References:
        Kiyohara, Saito, Matsuhiro, Narita, Shimizu, Yamamoto, "Doubly Robust Off-Policy
        Evaluation for Ranking Policies under the Cascade Behavior Model", WSDM 2022.
    """

    len_list: int
    n_unique_action: int
    name: ClassVar[str] = "cascade_dr"
    pscore_kind: ClassVar[str] = "prefix"
    needs_reward_model: ClassVar[bool] = True

    def __post_init__(self) -> None:
        for field in ("len_list", "n_unique_action"):
            value = getattr(self, field)
            try:
                valid = not isinstance(value, bool) and operator.index(value) >= 1
            except TypeError:
                valid = False
            if not valid:
                raise ConfigError(f"{field} must be an integer >= 1; got {value!r}")

    def policy_terms(self, inputs: EvaluationInputs) -> EstimatorTerms:
        """Not available yet: raises :class:`DataError` (see the message)."""
        raise DataError(
            "cascade_dr is array-level only for now: it needs a slate Q model q̂_k(x, a_1..a_k) "
            "per position, which causalrec does not fit yet; call "
            "SlateCascadeDR(len_list, n_unique_action).estimate(...) with q_hat and "
            "evaluation_policy_action_dist instead"
        )

    def _terms(
        self,
        slate_id,
        action,
        reward,
        position,
        pscore_cascade,
        evaluation_policy_pscore_cascade,
        q_hat,
        evaluation_policy_action_dist,
    ) -> EstimatorTerms:
        """Validate the arrays and return one unit per slate, in the order of np.unique(slate_id).

        The baseline is the q̂ part Σ_k w_{k−1} Σ_a π(a|·) q̂_k(·, a), the correction the
        weighted residuals Σ_k w_k (r_k − q̂_k); their sum is OBP's per-slate contribution.
        """
        K, A = self.len_list, self.n_unique_action
        reward = check_reward(reward)
        n = len(reward)
        slate_id = np.asarray(slate_id)
        if slate_id.shape != (n,):
            raise DataError(f"slate_id must have shape ({n},) (as reward); got {slate_id.shape}")
        position = check_integers("position", position, n, K, "len_list")
        action = check_integers("action", action, n, A, "n_unique_action")
        pscore = check_probabilities("pscore_cascade", pscore_cascade, n)
        evaluation = np.asarray(evaluation_policy_pscore_cascade, dtype=np.float64)
        if evaluation.shape != (n,):
            raise DataError(
                f"evaluation_policy_pscore_cascade must have shape ({n},) (as reward); "
                f"got {evaluation.shape}"
            )
        bad = ~np.isfinite(evaluation) | (evaluation < 0) | (evaluation > 1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"evaluation_policy_pscore_cascade must be in [0, 1]; got {evaluation[row]} "
                f"at row {row}"
            )
        q = _check_per_action("q_hat", q_hat, n, A)
        dist = _check_per_action(
            "evaluation_policy_action_dist", evaluation_policy_action_dist, n, A
        )
        if (dist < 0).any():
            row = int(np.flatnonzero((dist < 0).any(axis=1))[0])
            raise DataError(
                f"evaluation_policy_action_dist must be non-negative; got {dist[row].min()} "
                f"at row {row}"
            )
        sums = dist.sum(axis=1)
        off = np.abs(sums - 1.0) > SUM_TOLERANCE
        if off.any():
            row = int(np.flatnonzero(off)[0])
            raise DataError(
                f"evaluation_policy_action_dist must sum to 1 over the n_unique_action={A} "
                f"actions of each row; row {row} sums to {sums[row]:.10g}"
            )

        slates, index, counts = np.unique(slate_id, return_inverse=True, return_counts=True)
        if (counts != K).any():
            s = int(np.flatnonzero(counts != K)[0])
            raise DataError(
                f"slate_id: every slate must have one row per position (len_list={K}); "
                f"slate {slates[s]} has {counts[s]} rows"
            )
        S = len(slates)
        order = np.lexsort((position, index))  # by slate (np.unique order), then position
        misplaced = (position[order].reshape(S, K) != np.arange(K)).any(axis=1)
        if misplaced.any():
            s = int(np.flatnonzero(misplaced)[0])
            raise DataError(
                f"position: every slate needs each position 0..{K - 1} once; slate {slates[s]} "
                f"has positions {position[order].reshape(S, K)[s].tolist()}"
            )
        pscore, evaluation = pscore[order].reshape(S, K), evaluation[order].reshape(S, K)
        _check_prefix_order("pscore_cascade", pscore, slates)
        _check_prefix_order("evaluation_policy_pscore_cascade", evaluation, slates)

        # The arithmetic of OBP's SlateCascadeDoublyRobust._estimate_round_rewards, per slate.
        weight = evaluation / pscore  # w_k, (S, K)
        previous = np.ones_like(weight)  # w_{k-1}, with w_0 = 1
        previous[:, 1:] = weight[:, :-1]
        q, dist = q[order], dist[order]  # (n, A), rows by (slate, position)
        q_logged = q[np.arange(n), action[order]].reshape(S, K)  # q̂_k(x, a_{1:k})
        q_policy = (dist * q).sum(axis=1).reshape(S, K)  # Σ_a π(a | x, a_{1:k-1}) q̂_k(·, a)
        residual = reward[order].reshape(S, K) - q_logged
        return EstimatorTerms(
            baseline=(previous * q_policy).sum(axis=1),
            correction=(weight * residual).sum(axis=1),
        )

    def estimate(
        self,
        *,
        slate_id,
        action,
        reward,
        position,
        pscore_cascade,
        evaluation_policy_pscore_cascade,
        q_hat,
        evaluation_policy_action_dist,
    ) -> float:
        """Expected sum of rewards per slate under the evaluation policy (the class's arrays).

        Raises:
            DataError: Naming the argument and the offending row, slate or shape.
        """
        return self._terms(
            slate_id,
            action,
            reward,
            position,
            pscore_cascade,
            evaluation_policy_pscore_cascade,
            q_hat,
            evaluation_policy_action_dist,
        ).value()

    def round_rewards(
        self,
        *,
        slate_id,
        action,
        reward,
        position,
        pscore_cascade,
        evaluation_policy_pscore_cascade,
        q_hat,
        evaluation_policy_action_dist,
    ) -> np.ndarray:
        """Per-slate contributions, shape (n_slates,), in the order of ``np.unique(slate_id)``.

        Each is OBP's per-row ``_estimate_round_rewards`` summed over the slate's rows; their
        mean is :meth:`estimate`. Takes the class's arrays.
        """
        return self._terms(
            slate_id,
            action,
            reward,
            position,
            pscore_cascade,
            evaluation_policy_pscore_cascade,
            q_hat,
            evaluation_policy_action_dist,
        ).contributions()

    def interval(
        self,
        *,
        slate_id,
        action,
        reward,
        position,
        pscore_cascade,
        evaluation_policy_pscore_cascade,
        q_hat,
        evaluation_policy_action_dist,
        alpha: float = 0.05,
        method: Literal["normal", "bootstrap", "studentized"] = "normal",
        n_bootstrap: int = 1000,
        seed: int | None = None,
    ) -> tuple[float, float]:
        """``(low, high)`` of a ``1 - alpha`` interval with slates as the independent units.

        Takes the class's arrays, and ``alpha`` (1 - confidence level), ``method`` ("normal",
        the delta method; "bootstrap", percentile; or "studentized"; "betting" is refused, the
        estimate not being an importance-weighted sum), ``n_bootstrap`` replicates and the
        resampling ``seed``.
        """
        terms = self._terms(
            slate_id,
            action,
            reward,
            position,
            pscore_cascade,
            evaluation_policy_pscore_cascade,
            q_hat,
            evaluation_policy_action_dist,
        )
        return confidence_interval(terms, method, alpha, n_bootstrap, seed)
