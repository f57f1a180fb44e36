"""Sequential off-policy estimators: the value of a policy over whole sessions, from logged ones.

A session (episode) of ``T`` steps: at step t the user is in state s_t, the logger shows a_t
with probability π_0(a_t | s_t) (``pscore``) and the user gives reward r_t (clicks). The value
of π is the expected discounted sum Σ_t γ^t r_t per session under π (clicks per session with
γ = 1). With the per-decision weights w_{0:t} = Π_{t' <= t} π(a_t' | s_t') / π_0(a_t' | s_t'),
w_{0:-1} = 1, q̂_t = Q̂(s_t, a_t) and v̂_t = Σ_a π(a | s_t) Q̂(s_t, a):

* PDIS:  mean_i Σ_t γ^t w_{0:t} r_t                                (Precup, Sutton, Singh 2000)
* WPDIS: Σ_t γ^t mean_i(w_{0:t} r_t) / mean_i(w_{0:t})            (the weighted form, ibid.)
* DR:    mean_i Σ_t γ^t [w_{0:t} (r_t − q̂_t) + w_{0:t−1} v̂_t]     (Jiang & Li 2016)
* WDR:   Σ_t γ^t [mean(w_{0:t} (r_t − q̂_t)) / mean(w_{0:t})
                  + mean(w_{0:t−1} v̂_t) / mean(w_{0:t−1})]         (Thomas & Brunskill 2016)

PDIS and DR are unbiased whenever π_0 is the logger's exact propensity (DR for any Q̂); the
weighted forms trade a bias that vanishes as sessions grow in number for a variance that no
weight can blow up. Arrays follow SCOPE-RL's discrete estimators (``step_per_episode``,
``action``, ``reward``, ``pscore``, ``evaluation_policy_action_dist``,
``state_action_value_prediction``, flat over episodes × steps). Measured against SCOPE-RL 0.2.1
(``benchmarks/scope_rl_parity.py``; SCOPE-RL is not a dependency): PDIS and DR equal its
``PerDecisionImportanceSampling`` and ``DoublyRobust`` exactly, WPDIS and WDR its
``SelfNormalizedPDIS`` and ``SelfNormalizedDR`` to 1e-10 (it adds 1e-10 to each denominator).
A session that ends early (the user left) is padded to ``T`` steps with ``step_mask`` False: a
padded step has reward 0, Q̂ 0 and weight ratio 1.

Every estimate comes with an interval over sessions (the independent units): a normal interval
from each session's influence on the estimate (the delta method for the weighted forms), or a
percentile bootstrap that resamples sessions.

References:
    Precup, Sutton, Singh, "Eligibility Traces for Off-Policy Policy Evaluation", ICML 2000.
    Jiang & Li, "Doubly Robust Off-policy Value Evaluation for Reinforcement Learning",
    ICML 2016.
    Thomas & Brunskill, "Data-Efficient Off-Policy Policy Evaluation for Reinforcement
    Learning", ICML 2016.
    Kiyohara, Saito et al., "SCOPE-RL: A Python Library for Offline Reinforcement Learning and
    Off-Policy Evaluation", 2023 (the array conventions).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from scipy import stats

from causalrec.ope._validation import SUM_TOLERANCE, check_probabilities
from causalrec.platform.errors import ConfigError, DataError

__all__ = [
    "PDIS",
    "WDR",
    "WPDIS",
    "SequentialDR",
    "SequentialEstimator",
    "SequentialInputs",
    "SequentialTerms",
    "sequential_inputs",
]


@dataclass(frozen=True)
class SequentialInputs:
    """Logged sessions as (n_episodes, T) arrays, checked.

    Attributes:
        reward: r_t, zero on padded steps.
        ratio: π(a_t | s_t) / π_0(a_t | s_t), one on padded steps.
        q_factual: Q̂(s_t, a_t), or ``None`` without a Q model.
        v_policy: Σ_a π(a | s_t) Q̂(s_t, a), or ``None`` without a Q model.
    """

    reward: np.ndarray
    ratio: np.ndarray
    q_factual: np.ndarray | None = None
    v_policy: np.ndarray | None = None

    @property
    def n_episodes(self) -> int:
        """Number of sessions."""
        return self.reward.shape[0]

    def cumulative_weight(self) -> np.ndarray:
        """w_{0:t}, shape (n_episodes, T)."""
        return np.cumprod(self.ratio, axis=1)

    def previous_weight(self) -> np.ndarray:
        """w_{0:t−1} (ones at t = 0), shape (n_episodes, T)."""
        weight = self.cumulative_weight()
        return np.concatenate([np.ones((self.n_episodes, 1)), weight[:, :-1]], axis=1)


def sequential_inputs(
    *,
    step_per_episode: int,
    action: np.ndarray,
    reward: np.ndarray,
    pscore: np.ndarray,
    evaluation_policy_action_dist: np.ndarray,
    state_action_value_prediction: np.ndarray | None = None,
    step_mask: np.ndarray | None = None,
) -> SequentialInputs:
    """Check flat episode-major arrays and shape them per session.

    Args:
        step_per_episode: T, the steps of every (padded) session.
        action: Logged action a_t, shape (n_episodes * T,), integers in [0, n_actions).
        reward: Reward r_t, shape (n_episodes * T,).
        pscore: π_0(a_t | s_t) of the logged action, shape (n_episodes * T,), in (0, 1].
        evaluation_policy_action_dist: π(· | s_t), shape (n_episodes * T, n_actions).
        state_action_value_prediction: Q̂(s_t, ·), shape (n_episodes * T, n_actions), or
            ``None``.
        step_mask: Whether each step happened (``False``: padding after the session ended),
            shape (n_episodes * T,), or ``None`` (every step happened).

    Raises:
        DataError: Naming the field, for a shape, value or distribution that does not fit.
    """
    if int(step_per_episode) != step_per_episode or step_per_episode < 1:
        raise DataError(f"step_per_episode must be an integer >= 1; got {step_per_episode!r}")
    reward = np.asarray(reward, dtype=np.float64)
    if reward.ndim != 1 or len(reward) == 0 or len(reward) % step_per_episode:
        raise DataError(
            f"reward must be 1-d with a multiple of step_per_episode={step_per_episode} "
            f"entries (episodes x steps); got shape {reward.shape}"
        )
    n = len(reward)
    if not np.all(np.isfinite(reward)):
        raise DataError(f"reward must be finite; got {reward[~np.isfinite(reward)][0]}")
    pscore = check_probabilities("pscore", pscore, n)
    dist = np.asarray(evaluation_policy_action_dist, dtype=np.float64)
    if dist.ndim != 2 or dist.shape[0] != n:
        raise DataError(
            f"evaluation_policy_action_dist must have shape ({n}, n_actions); got {dist.shape}"
        )
    sums = dist.sum(axis=1)
    bad = (dist < 0).any(axis=1) | (np.abs(sums - 1) > SUM_TOLERANCE) | ~np.isfinite(sums)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"evaluation_policy_action_dist must be a distribution per row; row {row} sums to "
            f"{sums[row]} (or has a negative entry)"
        )
    action = np.asarray(action)
    if action.shape != (n,) or action.dtype.kind not in "iu":
        raise DataError(
            f"action must be integers of shape ({n},); got {action.dtype} {action.shape}"
        )
    if action.min() < 0 or action.max() >= dist.shape[1]:
        raise DataError(
            f"action must be in [0, n_actions={dist.shape[1]}); got {int(action.max())} "
            f"or {int(action.min())}"
        )
    rows = np.arange(n)
    ratio = dist[rows, action] / pscore
    q_factual = v_policy = None
    if state_action_value_prediction is not None:
        q = np.asarray(state_action_value_prediction, dtype=np.float64)
        if q.shape != dist.shape or not np.all(np.isfinite(q)):
            raise DataError(
                f"state_action_value_prediction must be finite with shape {dist.shape}; got "
                f"shape {q.shape}"
            )
        q_factual, v_policy = q[rows, action], (q * dist).sum(axis=1)
    if step_mask is not None:
        mask = np.asarray(step_mask)
        if mask.shape != (n,) or mask.dtype != bool:
            raise DataError(f"step_mask must be booleans of shape ({n},); got {mask.shape}")
        if (reward[~mask] != 0).any():
            raise DataError("reward must be 0 on padded steps (step_mask False)")
        ratio = np.where(mask, ratio, 1.0)
        if q_factual is not None:
            q_factual, v_policy = np.where(mask, q_factual, 0.0), np.where(mask, v_policy, 0.0)
    shape = (n // step_per_episode, step_per_episode)
    return SequentialInputs(
        reward=reward.reshape(shape),
        ratio=ratio.reshape(shape),
        q_factual=None if q_factual is None else q_factual.reshape(shape),
        v_policy=None if v_policy is None else v_policy.reshape(shape),
    )


@dataclass(frozen=True)
class SequentialTerms:
    """Per-session terms: estimate = mean(plain) + Σ_j mean(numerator_j) / mean(denominator_j).

    Attributes:
        plain: Shape (n,), or ``None`` (zero).
        numerator: Shape (n, m) (m ratio terms; m = 0 for the unweighted estimators).
        denominator: Shape (n, m).
    """

    plain: np.ndarray | None
    numerator: np.ndarray
    denominator: np.ndarray

    @property
    def n(self) -> int:
        """Number of sessions."""
        return self.numerator.shape[0]

    def _denominators(self, means: np.ndarray) -> np.ndarray:
        if (means == 0).any():
            step = int(np.flatnonzero(means == 0)[0])
            raise DataError(
                f"the target policy gives weight 0 to every logged session at ratio term {step} "
                "(its step's cumulative weight is 0 everywhere): the weighted estimate is "
                "undefined; use the unweighted estimator or logs the policy supports"
            )
        return means

    def value(self) -> float:
        """The point estimate."""
        value = float(np.mean(self.plain)) if self.plain is not None else 0.0
        if self.numerator.shape[1]:
            denominators = self._denominators(self.denominator.mean(axis=0))
            value += float((self.numerator.mean(axis=0) / denominators).sum())
        return value

    def influence(self) -> np.ndarray:
        """Each session's first-order influence on the estimate, shape (n,), mean 0."""
        influence = np.zeros(self.n)
        if self.plain is not None:
            influence += self.plain - self.plain.mean()
        if self.numerator.shape[1]:
            denominators = self._denominators(self.denominator.mean(axis=0))
            ratios = self.numerator.mean(axis=0) / denominators
            influence += ((self.numerator - ratios * self.denominator) / denominators).sum(axis=1)
        return influence

    def standard_error(self) -> float:
        """Delta-method standard error of the estimate."""
        if self.n < 2:
            raise DataError(f"an interval needs at least 2 sessions; got {self.n}")
        return float(np.std(self.influence(), ddof=1) / np.sqrt(self.n))

    def resampled(self, index: np.ndarray) -> SequentialTerms:
        """The terms of the sessions ``index`` (a bootstrap resample)."""
        return SequentialTerms(
            plain=None if self.plain is None else self.plain[index],
            numerator=self.numerator[index],
            denominator=self.denominator[index],
        )


@dataclass(frozen=True)
class SequentialEstimator(abc.ABC):
    """Base of the sequential estimators.

    Attributes:
        gamma: Discount factor γ in (0, 1] (1: the undiscounted clicks per session).
    """

    name: ClassVar[str]
    #: Whether the estimator needs Q̂ (``state_action_value_prediction``).
    needs_q_model: ClassVar[bool] = False

    gamma: float = 1.0

    def __post_init__(self):
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"gamma must be in (0, 1]; got {self.gamma}")

    @abc.abstractmethod
    def _terms(self, inputs: SequentialInputs) -> SequentialTerms:
        """Per-session terms of the estimate."""

    def _discount(self, steps: int) -> np.ndarray:
        return self.gamma ** np.arange(steps)

    def terms(self, inputs: SequentialInputs) -> SequentialTerms:
        """Per-session terms (checked to have what the estimator needs)."""
        if self.needs_q_model and inputs.q_factual is None:
            raise DataError(f"{self.name} needs state_action_value_prediction (a Q model)")
        return self._terms(inputs)

    def estimate(self, **arrays) -> float:
        """The value of π in reward units per session (the arrays of :func:`sequential_inputs`)."""
        return self.terms(sequential_inputs(**arrays)).value()

    def interval(
        self,
        *,
        alpha: float = 0.05,
        method: Literal["normal", "bootstrap"] = "normal",
        n_bootstrap: int = 1000,
        seed: int | None = None,
        **arrays,
    ) -> tuple[float, float]:
        """``(low, high)``: a normal (delta-method) or percentile-bootstrap interval over sessions.

        Args:
            alpha: 1 − the coverage, in (0, 1).
            method: ``normal`` or ``bootstrap`` (resampling sessions with replacement).
            n_bootstrap: Bootstrap replicates.
            seed: Seed of the resampling.
            **arrays: The arrays of :func:`sequential_inputs`.
        """
        return sequential_interval(
            self.terms(sequential_inputs(**arrays)), alpha, method, n_bootstrap, seed
        )


def sequential_interval(
    terms: SequentialTerms,
    alpha: float = 0.05,
    method: str = "normal",
    n_bootstrap: int = 1000,
    seed: int | None = None,
) -> tuple[float, float]:
    """``(low, high)`` of ``terms``' estimate by ``method`` (``normal`` or ``bootstrap``)."""
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1); got {alpha}")
    value = terms.value()
    if method == "normal":
        half = stats.norm.ppf(1 - alpha / 2) * terms.standard_error()
        return value - half, value + half
    if method == "bootstrap":
        if n_bootstrap < 1:
            raise ConfigError(f"n_bootstrap must be >= 1; got {n_bootstrap}")
        rng = np.random.default_rng(seed)
        replicates = np.empty(n_bootstrap)
        for b in range(n_bootstrap):
            index = rng.integers(terms.n, size=terms.n)
            try:
                replicates[b] = terms.resampled(index).value()
            except DataError:  # a resample without weight at some step
                replicates[b] = np.nan
        low, high = np.nanquantile(replicates, [alpha / 2, 1 - alpha / 2])
        return float(low), float(high)
    raise ConfigError(f"method must be 'normal' or 'bootstrap'; got {method!r}")


def _no_ratios(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((n, 0)), np.zeros((n, 0))


@dataclass(frozen=True)
class PDIS(SequentialEstimator):
    """Per-decision importance sampling: mean_i Σ_t γ^t w_{0:t} r_t (Precup et al. 2000)."""

    name: ClassVar[str] = "pdis"

    def _terms(self, inputs: SequentialInputs) -> SequentialTerms:
        discount = self._discount(inputs.reward.shape[1])
        plain = (discount * inputs.cumulative_weight() * inputs.reward).sum(axis=1)
        return SequentialTerms(plain, *_no_ratios(inputs.n_episodes))


@dataclass(frozen=True)
class WPDIS(SequentialEstimator):
    """Weighted PDIS: Σ_t γ^t mean(w_{0:t} r_t) / mean(w_{0:t}) (Precup et al. 2000)."""

    name: ClassVar[str] = "wpdis"

    def _terms(self, inputs: SequentialInputs) -> SequentialTerms:
        discount = self._discount(inputs.reward.shape[1])
        weight = inputs.cumulative_weight()
        return SequentialTerms(None, discount * weight * inputs.reward, weight)


@dataclass(frozen=True)
class SequentialDR(SequentialEstimator):
    """Sequential doubly robust (Jiang & Li 2016), unbiased for any Q̂ with exact π_0.

    mean_i Σ_t γ^t [w_{0:t} (r_t − Q̂(s_t, a_t)) + w_{0:t−1} Σ_a π(a | s_t) Q̂(s_t, a)].
    """

    name: ClassVar[str] = "dr"
    needs_q_model: ClassVar[bool] = True

    def _terms(self, inputs: SequentialInputs) -> SequentialTerms:
        discount = self._discount(inputs.reward.shape[1])
        step = inputs.cumulative_weight() * (inputs.reward - inputs.q_factual)
        step += inputs.previous_weight() * inputs.v_policy
        return SequentialTerms((discount * step).sum(axis=1), *_no_ratios(inputs.n_episodes))


@dataclass(frozen=True)
class WDR(SequentialEstimator):
    """Weighted doubly robust (Thomas & Brunskill 2016): DR with per-step normalised weights.

    Σ_t γ^t [mean(w_{0:t} (r_t − q̂_t)) / mean(w_{0:t}) + mean(w_{0:t−1} v̂_t) / mean(w_{0:t−1})].
    """

    name: ClassVar[str] = "wdr"
    needs_q_model: ClassVar[bool] = True

    def _terms(self, inputs: SequentialInputs) -> SequentialTerms:
        discount = self._discount(inputs.reward.shape[1])
        weight, previous = inputs.cumulative_weight(), inputs.previous_weight()
        numerator = np.concatenate(
            [
                discount * weight * (inputs.reward - inputs.q_factual),
                discount * previous * inputs.v_policy,
            ],
            axis=1,
        )
        return SequentialTerms(None, numerator, np.concatenate([weight, previous], axis=1))
