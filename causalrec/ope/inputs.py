"""Per-round inputs of the standard estimators, built from dense arrays or from a policy.

Every standard estimator (DM, IPS, SNIPS, DR, SNDR, Switch-DR, DRos) is a function of four
per-round quantities only:

* ``reward``: observed reward r_i,
* ``weight``: importance weight w_i = π(a_i | x_i, k_i) / π_0(a_i | x_i, k_i),
* ``q_factual``: q̂(x_i, a_i, k_i), the reward model at the logged action,
* ``q_policy``: Σ_a π(a | x_i, k_i) q̂(x_i, a, k_i), the reward model under the target policy.

So the (n_rounds, n_actions) arrays of Open Bandit Pipeline's contract are optional: the
high-level path (:func:`causalrec.ope.policy_inputs.round_inputs`, behind
:func:`causalrec.ope.evaluate`) fills these vectors straight from the policy protocol without
ever materialising them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from causalrec.ope._validation import check_inputs
from causalrec.platform.errors import DataError

__all__ = ["RoundInputs", "round_inputs_from_arrays"]


@dataclass(frozen=True)
class RoundInputs:
    """What the standard estimators need, one entry per round (impression).

    Attributes:
        reward: Shape (n,).
        weight: Importance weights π(a_i | x_i) / pscore_i, shape (n,).
        q_factual: q̂ at the logged action, shape (n,), or ``None`` without a reward model.
        q_policy: Policy-expected q̂, shape (n,), or ``None`` without a reward model.
    """

    reward: np.ndarray
    weight: np.ndarray
    q_factual: np.ndarray | None = None
    q_policy: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.reward)
        if n == 0:
            raise DataError("the log is empty: reward has 0 rows")
        for name in ("weight", "q_factual", "q_policy"):
            value = getattr(self, name)
            if value is not None and value.shape != (n,):
                raise DataError(f"{name} must have shape ({n},); got {value.shape}")
        if (self.q_factual is None) != (self.q_policy is None):
            raise DataError("q_factual and q_policy must be given together")
        if not np.all(np.isfinite(self.weight)) or np.any(self.weight < 0):
            row = int(np.flatnonzero(~np.isfinite(self.weight) | (self.weight < 0))[0])
            raise DataError(f"weight must be finite and >= 0; got {self.weight[row]} at row {row}")

    @property
    def n_rounds(self) -> int:
        """Number of rounds (rows)."""
        return len(self.reward)

    @property
    def has_reward_model(self) -> bool:
        """Whether q̂ terms are present."""
        return self.q_factual is not None


def round_inputs_from_arrays(
    *,
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    action_dist: np.ndarray,
    position: np.ndarray | None = None,
    q_hat: np.ndarray | None = None,
    needs_q_hat: bool = False,
) -> RoundInputs:
    """Validate Open Bandit Pipeline-style arrays and reduce them to :class:`RoundInputs`.

    Args:
        reward: Shape (n_rounds,).
        action: Logged actions, shape (n_rounds,).
        pscore: Logging propensities of the logged actions, shape (n_rounds,).
        action_dist: Target policy, shape (n_rounds, n_actions, len_list) or
            (n_rounds, n_actions) when len_list = 1.
        position: 0-based positions, shape (n_rounds,); required when len_list > 1.
        q_hat: Reward model, same shape as ``action_dist``.
        needs_q_hat: Raise if ``q_hat`` is missing.
    """
    reward, action, pscore, dist, position, q3 = check_inputs(
        reward=reward,
        action=action,
        pscore=pscore,
        action_dist=action_dist,
        position=position,
        q_hat=q_hat,
        needs_q_hat=needs_q_hat,
    )
    rows = np.arange(len(reward))
    weight = dist[rows, action, position] / pscore
    if q3 is None:
        return RoundInputs(reward=reward, weight=weight)
    q_factual = q3[rows, action, position]
    if dist.shape[2] == 1:
        q_policy = np.einsum("na,na->n", dist[:, :, 0], q3[:, :, 0])
    else:
        q_policy = np.einsum("nal,nal->nl", dist, q3)[rows, position]
    return RoundInputs(reward=reward, weight=weight, q_factual=q_factual, q_policy=q_policy)
