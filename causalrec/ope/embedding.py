"""Estimators for large catalogues: marginalised IPS over action embeddings, and OffCEM.

Importance weights π(a|x) / π_0(a|x) explode as the catalogue grows: a target policy that
prefers items the logger rarely showed divides by tiny propensities. When every action a
carries an embedding e ~ p(e | a) (a category, a cluster, a few categorical attributes) through
which it acts on the reward, the weight of the embedding is enough (Saito & Joachims 2022):

    w(x, e) = p(e | x, π) / p(e | x, π_0),    p(e | x, π) = Σ_a π(a | x) p(e | a),

with categorical embeddings of n_dims dimensions independent given the action,
p(e | a) = Π_d p_e_a[a, e_d, d] (Open Bandit Pipeline's convention). Then

* MIPS:   mean(w(x_i, e_i) r_i)
* SNMIPS: mean(w(x_i, e_i) r_i) / mean(w(x_i, e_i))
* OffCEM: mean(Σ_a π(a | x_i) f̂(x_i, a) + w(x_i, e_i) (r_i − f̂(x_i, a_i)))

MIPS is unbiased when the reward depends on the action only through its embedding (no direct
effect); its variance falls with the number of embedding values instead of the number of
actions. OffCEM (Saito, Ren & Joachims 2023) keeps the cluster-level weights and lets a local
reward model f̂ carry the effect of the action within its cluster: it is unbiased when f̂ gets
the *differences* between actions of one cluster right, whatever its cluster-level offsets,
and it equals DR when every action is its own cluster.

The array methods follow Open Bandit Pipeline's ``MarginalizedInverseProbabilityWeighting`` with
a known ``p_e_a``; :meth:`MIPS.policy_terms` evaluates a policy on a log through the log's item
clusters and the logging policy (:mod:`causalrec.ope.cluster_inputs`).

References:
    Saito & Joachims, "Off-Policy Evaluation for Large Action Spaces via Embeddings", ICML 2022.
    Saito, Ren & Joachims, "Off-Policy Evaluation for Large Action Spaces via Conjunct Effect
    Modeling", ICML 2023.
    Saito, Aihara, Matsutani, Narita, "Open Bandit Dataset and Pipeline", NeurIPS 2021.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

from causalrec.ope._validation import check_action_dist, check_integers, check_reward
from causalrec.ope.base import Estimator
from causalrec.ope.cluster_inputs import cluster_round_inputs
from causalrec.ope.estimators import DR, IPS, SNIPS
from causalrec.ope.inputs import RoundInputs
from causalrec.ope.intervals import EstimatorTerms, confidence_interval
from causalrec.platform.errors import ConfigError, DataError

if TYPE_CHECKING:
    from causalrec.ope.policy_inputs import EvaluationInputs

__all__ = ["MIPS", "SNMIPS", "OffCEM", "embedding_weights"]

_SUM_TOLERANCE = 1e-6


def embedding_weights(
    *,
    action_embed: np.ndarray,
    pi_b: np.ndarray,
    action_dist: np.ndarray,
    p_e_a: np.ndarray,
    position: np.ndarray,
) -> np.ndarray:
    """Marginal importance weights w(x_i, e_i) = p(e_i | x_i, π) / p(e_i | x_i, π_0).

    Args:
        action_embed: Logged embeddings, shape (n_rounds, n_dims), integer categories.
        pi_b: Logging policy, shape (n_rounds, n_actions, len_list).
        action_dist: Evaluation policy, shape (n_rounds, n_actions, len_list).
        p_e_a: p(e_d = c | a), shape (n_actions, n_categories, n_dims).
        position: 0-based positions, shape (n_rounds,).

    Returns:
        Shape (n_rounds,). Inputs are assumed validated (:func:`_check_embedding_inputs`).
    """
    rows = np.arange(len(position))
    dims = np.arange(p_e_a.shape[2])
    p_embed = p_e_a[:, action_embed, dims].prod(axis=2)  # (n_actions, n_rounds): p(e_i | a)
    behaviour = (pi_b[rows, :, position] * p_embed.T).sum(axis=1)
    target = (action_dist[rows, :, position] * p_embed.T).sum(axis=1)
    bad = behaviour <= 0
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"action_embed at row {row} has probability 0 under pi_b and p_e_a "
            "(p(e | x, π_0) = 0): the logger could not have produced it"
        )
    return target / behaviour


def _check_embedding_inputs(
    n_actions: int | None,
    *,
    reward: np.ndarray,
    action: np.ndarray,
    action_embed: np.ndarray,
    pi_b: np.ndarray,
    action_dist: np.ndarray,
    p_e_a: np.ndarray,
    position: np.ndarray | None = None,
    q_hat: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    reward = check_reward(reward)
    n = len(reward)
    pi_b = check_action_dist("pi_b", pi_b, n)
    action_dist = check_action_dist("action_dist", action_dist, n)
    if action_dist.shape != pi_b.shape:
        raise DataError(
            f"action_dist must have the shape of pi_b {pi_b.shape}; got {action_dist.shape}"
        )
    _, actions, len_list = pi_b.shape
    if n_actions is not None and actions != n_actions:
        raise DataError(f"pi_b has {actions} actions; the estimator has n_actions={n_actions}")
    action = check_integers("action", action, n, actions, "n_actions")
    if position is None:
        if len_list > 1:
            raise DataError(f"position is required when len_list > 1; pi_b has {len_list}")
        position = np.zeros(n, dtype=np.int64)
    else:
        position = check_integers("position", position, n, len_list, "len_list")
    p_e_a = np.asarray(p_e_a, dtype=np.float64)
    if p_e_a.ndim != 3 or p_e_a.shape[0] != actions:
        raise DataError(
            f"p_e_a must have shape (n_actions={actions}, n_categories, n_dims); got {p_e_a.shape}"
        )
    if not np.isfinite(p_e_a).all() or p_e_a.min() < 0:
        raise DataError("p_e_a must be finite and non-negative")
    sums = p_e_a.sum(axis=1)  # (n_actions, n_dims)
    off = np.abs(sums - 1) > _SUM_TOLERANCE
    if off.any():
        a, d = np.argwhere(off)[0]
        raise DataError(
            f"p_e_a must sum to 1 over categories; action {a}, dimension {d} sums to "
            f"{sums[a, d]:.6g}"
        )
    action_embed = np.asarray(action_embed)
    if action_embed.ndim == 1:
        action_embed = action_embed[:, None]
    if action_embed.shape != (n, p_e_a.shape[2]):
        raise DataError(
            f"action_embed must have shape (n_rounds={n}, n_dims={p_e_a.shape[2]}); "
            f"got {action_embed.shape}"
        )
    columns = [
        check_integers(f"action_embed[:, {d}]", action_embed[:, d], n, p_e_a.shape[1], "n_cat")
        for d in range(p_e_a.shape[2])
    ]
    arrays = dict(
        reward=reward,
        action=action,
        action_embed=np.stack(columns, axis=1),
        pi_b=pi_b,
        action_dist=action_dist,
        p_e_a=p_e_a,
        position=position,
    )
    if q_hat is not None:
        q_hat = np.asarray(q_hat, dtype=np.float64)
        if q_hat.ndim == 2:
            q_hat = q_hat[:, :, None]
        if q_hat.shape != pi_b.shape or not np.isfinite(q_hat).all():
            raise DataError(f"q_hat must be finite with the shape of pi_b {pi_b.shape}")
        arrays["q_hat"] = q_hat
    return arrays


def _embedding_round_inputs(arrays: dict[str, np.ndarray]) -> RoundInputs:
    weight = embedding_weights(
        action_embed=arrays["action_embed"],
        pi_b=arrays["pi_b"],
        action_dist=arrays["action_dist"],
        p_e_a=arrays["p_e_a"],
        position=arrays["position"],
    )
    q_hat = arrays.get("q_hat")
    if q_hat is None:
        return RoundInputs(reward=arrays["reward"], weight=weight)
    rows, position = np.arange(len(weight)), arrays["position"]
    target = arrays["action_dist"][rows, :, position]  # (n_rounds, n_actions)
    return RoundInputs(
        reward=arrays["reward"],
        weight=weight,
        q_factual=q_hat[rows, arrays["action"], position],
        q_policy=np.einsum("na,na->n", target, q_hat[rows, :, position]),
    )


@dataclass(frozen=True)
class MIPS(Estimator):
    """Marginalised IPS over action embeddings: mean(w(x, e) · r).

    Attributes:
        n_actions: Number of actions (checked against ``pi_b``); ``None``: taken from the
            inputs. Open Bandit Pipeline requires it.

    References:
        Saito & Joachims, "Off-Policy Evaluation for Large Action Spaces via Embeddings",
        ICML 2022.
    """

    n_actions: int | None = None
    name: ClassVar[str] = "mips"
    pscore_kind: ClassVar[str] = "impression"
    supports_difference: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.n_actions is not None:
            if float(self.n_actions) % 1 or self.n_actions < 2:
                raise ConfigError(f"n_actions must be an integer >= 2; got {self.n_actions}")
            object.__setattr__(self, "n_actions", int(self.n_actions))

    def _terms(self, inputs: RoundInputs) -> EstimatorTerms:
        return IPS().terms_from_inputs(inputs)

    def _array_terms(self, **arrays) -> EstimatorTerms:
        checked = _check_embedding_inputs(self.n_actions, **arrays)
        return self._terms(_embedding_round_inputs(checked))

    def policy_terms(self, inputs: EvaluationInputs) -> EstimatorTerms:
        """Per-round terms from the log's item clusters and the logging policy.

        Needs ``inputs.item_clusters`` and ``inputs.logging_policy``
        (:func:`causalrec.ope.cluster_inputs.cluster_round_inputs`).
        """
        return inputs.per_round(self._terms(cluster_round_inputs(inputs)))

    def estimate(
        self,
        *,
        reward: np.ndarray,
        action: np.ndarray,
        action_embed: np.ndarray,
        pi_b: np.ndarray,
        action_dist: np.ndarray,
        p_e_a: np.ndarray,
        position: np.ndarray | None = None,
    ) -> float:
        """Estimate the value of the policy ``action_dist`` (mean over rounds).

        Args:
            reward: Shape (n_rounds,).
            action: Logged actions, shape (n_rounds,).
            action_embed: Logged embeddings, shape (n_rounds, n_dims), integer categories.
            pi_b: Logging policy, shape (n_rounds, n_actions, len_list) or (n_rounds, n_actions).
            action_dist: Evaluation policy, same shape as ``pi_b``.
            p_e_a: p(e_d = c | a), shape (n_actions, n_categories, n_dims).
            position: 0-based positions, shape (n_rounds,); required when len_list > 1.
        """
        return self._array_terms(**_arguments(locals())).value()

    def round_rewards(self, **arrays) -> np.ndarray:
        """Per-round contributions whose mean is the estimate, shape (n_rounds,).

        Takes the keyword arguments of :meth:`estimate`.
        """
        return self._array_terms(**arrays).contributions()

    def interval(
        self,
        *,
        alpha: float = 0.05,
        method: Literal["normal", "bootstrap", "studentized", "betting"] = "normal",
        n_bootstrap: int = 1000,
        seed: int | None = None,
        **arrays,
    ) -> tuple[float, float]:
        """``(low, high)`` of a ``1 - alpha`` interval; other arguments as :meth:`estimate`."""
        return confidence_interval(self._array_terms(**arrays), method, alpha, n_bootstrap, seed)


@dataclass(frozen=True)
class SNMIPS(MIPS):
    """Self-normalised MIPS: mean(w(x, e) · r) / mean(w(x, e)).

    The weights are MIPS's, p(e | x, π) / p(e | x, π_0) with p(e | a) = Π_d p_e_a[a, e_d, d].
    Open Bandit Pipeline 0.5.7's ``SelfNormalizedMarginalizedInverseProbabilityWeighting``
    instead multiplies the per-dimension marginals Π_d p(e_d | x, π), which is p(e | x, π)
    only for one-dimensional embeddings; the two agree there and differ otherwise.

    References:
        Saito & Joachims, ICML 2022; Swaminathan & Joachims, NeurIPS 2015.
    """

    name: ClassVar[str] = "snmips"
    supports_difference: ClassVar[bool] = False

    def _terms(self, inputs: RoundInputs) -> EstimatorTerms:
        return SNIPS().terms_from_inputs(inputs)


@dataclass(frozen=True)
class OffCEM(MIPS):
    """Off-policy evaluation via the conjunct effect model.

    mean(Σ_a π(a | x) f̂(x, a) + w(x, e) · (r − f̂(x, a))): the embedding (cluster) effect is
    importance weighted, the residual effect within a cluster is left to the local reward model
    f̂ (``q_hat``). With f̂ = 0 it is MIPS; with singleton clusters it is DR.

    References:
        Saito, Ren & Joachims, "Off-Policy Evaluation for Large Action Spaces via Conjunct
        Effect Modeling", ICML 2023.
    """

    name: ClassVar[str] = "offcem"
    needs_reward_model: ClassVar[bool] = True

    def _terms(self, inputs: RoundInputs) -> EstimatorTerms:
        return DR().terms_from_inputs(inputs)

    def estimate(  # type: ignore[override]
        self,
        *,
        reward: np.ndarray,
        action: np.ndarray,
        action_embed: np.ndarray,
        pi_b: np.ndarray,
        action_dist: np.ndarray,
        p_e_a: np.ndarray,
        q_hat: np.ndarray,
        position: np.ndarray | None = None,
    ) -> float:
        """Estimate the policy value.

        Arguments as :meth:`MIPS.estimate`, plus the local reward model ``q_hat``, f̂(x_i, a, k)
        of shape (n_rounds, n_actions, len_list) or (n_rounds, n_actions), as ``pi_b``.
        """
        return self._array_terms(**_arguments(locals())).value()

    def _array_terms(self, **arrays) -> EstimatorTerms:
        if arrays.get("q_hat") is None:
            raise DataError("offcem needs q_hat, the local reward model f̂(x, a)")
        return super()._array_terms(**arrays)


def _arguments(scope: dict) -> dict:
    return {key: value for key, value in scope.items() if key not in ("self", "__class__")}
