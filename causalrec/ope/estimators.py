"""Standard off-policy estimators: DM, IPS, SNIPS, DR, SNDR, Switch-DR, DRos.

Each estimator is a frozen dataclass whose fields are its hyperparameters; all share one base
whose single private method, :meth:`OffPolicyEstimator._terms`, gives the per-round terms from
which the point estimate, the per-round rewards and both intervals are computed; that base
implements the interface of every estimator family (:class:`causalrec.ope.base.Estimator`).
Definitions and defaults follow Open Bandit Pipeline (``obp.ope``), so the same inputs give the
same numbers.

With π the evaluation policy, π_0 the logging policy, w_i = π(a_i|x_i) / π_0(a_i|x_i),
q̂_i = q̂(x_i, a_i) and q̂_i^π = Σ_a π(a|x_i) q̂(x_i, a):

* DM:        mean(q̂_i^π)
* IPS:       mean(min(w_i, clip) r_i)
* SNIPS:     mean(w_i r_i) / mean(w_i)
* DR:        mean(q̂_i^π + min(w_i, clip) (r_i − q̂_i))
* SNDR:      mean(q̂_i^π) + mean(w_i (r_i − q̂_i)) / mean(w_i)
* Switch-DR: mean(q̂_i^π + 1[w_i <= τ] w_i (r_i − q̂_i))
* DRos:      mean(q̂_i^π + λ w_i / (w_i² + λ) (r_i − q̂_i))

References:
    Dudík, Langford, Li, "Doubly Robust Policy Evaluation and Learning", ICML 2011.
    Swaminathan & Joachims, "The Self-Normalized Estimator for Counterfactual Learning",
    NeurIPS 2015.
    Wang, Agarwal, Dudík, "Optimal and Adaptive Off-policy Evaluation in Contextual Bandits",
    ICML 2017.
    Su, Dimakopoulou, Krishnamurthy, Dudík, "Doubly Robust Off-policy Evaluation with
    Shrinkage", ICML 2020.
    Saito, Aihara, Matsutani, Narita, "Open Bandit Dataset and Pipeline", NeurIPS 2021.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

from causalrec.ope._validation import check_hyperparameter
from causalrec.ope.base import Estimator
from causalrec.ope.inputs import RoundInputs, round_inputs_from_arrays
from causalrec.ope.intervals import EstimatorTerms, confidence_interval
from causalrec.platform.errors import DataError

if TYPE_CHECKING:
    from causalrec.ope.policy_inputs import EvaluationInputs

__all__ = [
    "DM",
    "DR",
    "IPS",
    "SNDR",
    "SNIPS",
    "DRos",
    "OffPolicyEstimator",
    "SwitchDR",
]

IntervalMethod = Literal["normal", "bootstrap", "studentized", "betting"]


@dataclass(frozen=True)
class OffPolicyEstimator(Estimator):
    """Base of the standard estimators.

    Public methods take Open Bandit Pipeline-style arrays (keyword-only): ``reward``,
    ``action``, ``pscore``, ``position`` of shape (n_rounds,) and ``action_dist``, ``q_hat`` of
    shape (n_rounds, n_actions, len_list) or (n_rounds, n_actions). The ``*_from_inputs``
    variants take :class:`RoundInputs` (no dense arrays), one entry per impression;
    :meth:`policy_terms` sums those terms within each round of a log.
    """

    #: Weights are π(a_i | x_i, k_i) / pscore_i at each impression.
    pscore_kind: ClassVar[str] = "impression"

    @abc.abstractmethod
    def _terms(self, inputs: RoundInputs) -> EstimatorTerms:
        """Per-round terms (baseline, correction, normaliser) of this estimator."""

    def _inputs(self, arrays: dict) -> RoundInputs:
        return round_inputs_from_arrays(**arrays, needs_q_hat=self.needs_reward_model)

    def policy_terms(self, inputs: EvaluationInputs) -> EstimatorTerms:
        """Per-impression terms of ``inputs.impressions`` summed within each round."""
        return inputs.per_round(self.terms_from_inputs(inputs.impressions))

    def policy_clipped_share(self, inputs: EvaluationInputs) -> float:
        """:meth:`clipped_share` of ``inputs.impressions`` (a share of impressions)."""
        return self.clipped_share(inputs.impressions)

    def terms_from_inputs(self, inputs: RoundInputs) -> EstimatorTerms:
        """Per-round terms (baseline, correction, normaliser) of the estimate and intervals.

        Lets callers resample several estimators together
        (:func:`causalrec.ope.intervals.bootstrap_intervals`).
        """
        return self._checked_terms(inputs)

    def _checked_terms(self, inputs: RoundInputs) -> EstimatorTerms:
        if self.needs_reward_model and not inputs.has_reward_model:
            raise DataError(f"{self.name} needs a reward model: q_hat / q_factual is missing")
        return self._terms(inputs)

    # -- sparse path --------------------------------------------------------------------------
    def estimate_from_inputs(self, inputs: RoundInputs) -> float:
        """Point estimate of the policy value from :class:`RoundInputs`."""
        return self._checked_terms(inputs).value()

    def round_rewards_from_inputs(self, inputs: RoundInputs) -> np.ndarray:
        """Per-round contributions (their mean is the estimate), shape (n_rounds,)."""
        return self._checked_terms(inputs).contributions()

    def interval_from_inputs(
        self,
        inputs: RoundInputs,
        *,
        alpha: float = 0.05,
        method: IntervalMethod = "normal",
        n_bootstrap: int = 1000,
        seed: int | None = None,
    ) -> tuple[float, float]:
        """``(low, high)`` of a ``1 - alpha`` confidence interval."""
        terms = self._checked_terms(inputs)
        return confidence_interval(terms, method, alpha, n_bootstrap, seed)

    def clipped_share(self, inputs: RoundInputs) -> float:
        """Share of rounds whose weight this estimator clips, switches or shrinks away."""
        return 0.0

    # -- array path (Open Bandit Pipeline's contract) -----------------------------------------
    def estimate(
        self,
        *,
        reward: np.ndarray,
        action: np.ndarray,
        pscore: np.ndarray,
        action_dist: np.ndarray,
        position: np.ndarray | None = None,
        q_hat: np.ndarray | None = None,
    ) -> float:
        """Estimate the value of the policy ``action_dist`` (mean over rows)."""
        return self.estimate_from_inputs(self._inputs(_arrays(locals())))

    def round_rewards(
        self,
        *,
        reward: np.ndarray,
        action: np.ndarray,
        pscore: np.ndarray,
        action_dist: np.ndarray,
        position: np.ndarray | None = None,
        q_hat: np.ndarray | None = None,
    ) -> np.ndarray:
        """Per-row contributions, shape (n_rounds,)."""
        return self.round_rewards_from_inputs(self._inputs(_arrays(locals())))

    def interval(
        self,
        *,
        reward: np.ndarray,
        action: np.ndarray,
        pscore: np.ndarray,
        action_dist: np.ndarray,
        position: np.ndarray | None = None,
        q_hat: np.ndarray | None = None,
        alpha: float = 0.05,
        method: IntervalMethod = "normal",
        n_bootstrap: int = 1000,
        seed: int | None = None,
    ) -> tuple[float, float]:
        """``(low, high)``: normal (delta method), percentile or studentized bootstrap interval."""
        inputs = self._inputs(_arrays(locals()))
        return self.interval_from_inputs(
            inputs, alpha=alpha, method=method, n_bootstrap=n_bootstrap, seed=seed
        )


def _arrays(scope: dict) -> dict:
    keys = ("reward", "action", "pscore", "action_dist", "position", "q_hat")
    return {key: scope[key] for key in keys}


def _residual(inputs: RoundInputs) -> np.ndarray:
    return inputs.reward - inputs.q_factual


@dataclass(frozen=True)
class DM(OffPolicyEstimator):
    """Direct method: the reward model's value of the policy, mean(Σ_a π(a|x) q̂(x, a)).

    References:
        Beygelzimer & Langford, "The Offset Tree for Learning with Partial Labels", KDD 2009.
    """

    name: ClassVar[str] = "dm"
    needs_reward_model: ClassVar[bool] = True
    supports_difference: ClassVar[bool] = True

    def _terms(self, inputs: RoundInputs) -> EstimatorTerms:
        return EstimatorTerms(baseline=None, correction=inputs.q_policy)


@dataclass(frozen=True)
class IPS(OffPolicyEstimator):
    """Inverse propensity scoring with weight clipping: mean(min(w, clip) · r).

    Attributes:
        clip: Largest importance weight kept (``inf``: no clipping).

    References:
        Horvitz & Thompson, JASA 1952; Strehl, Langford, Li, Kakade, NeurIPS 2010.
    """

    clip: float = np.inf
    name: ClassVar[str] = "ips"
    supports_difference: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_hyperparameter("clip", self.clip)

    def _terms(self, inputs: RoundInputs) -> EstimatorTerms:
        weight = np.minimum(inputs.weight, self.clip)
        return EstimatorTerms(baseline=None, correction=weight * inputs.reward, weight=weight)

    def clipped_share(self, inputs: RoundInputs) -> float:
        """Share of rounds with ``w > clip``."""
        return float(np.mean(inputs.weight > self.clip))


@dataclass(frozen=True)
class SNIPS(OffPolicyEstimator):
    """Self-normalised IPS: mean(w · r) / mean(w).

    References:
        Swaminathan & Joachims, NeurIPS 2015.
    """

    name: ClassVar[str] = "snips"

    def _terms(self, inputs: RoundInputs) -> EstimatorTerms:
        return EstimatorTerms(
            baseline=None, correction=inputs.weight * inputs.reward, normalizer=inputs.weight
        )


@dataclass(frozen=True)
class DR(OffPolicyEstimator):
    """Doubly robust: mean(q̂^π + min(w, clip) · (r − q̂)).

    Attributes:
        clip: Largest importance weight kept (``inf``: no clipping).

    References:
        Dudík, Langford, Li, ICML 2011.
    """

    clip: float = np.inf
    name: ClassVar[str] = "dr"
    needs_reward_model: ClassVar[bool] = True
    supports_difference: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_hyperparameter("clip", self.clip)

    def _terms(self, inputs: RoundInputs) -> EstimatorTerms:
        weight = np.minimum(inputs.weight, self.clip)
        return EstimatorTerms(baseline=inputs.q_policy, correction=weight * _residual(inputs))

    def clipped_share(self, inputs: RoundInputs) -> float:
        """Share of rounds with ``w > clip``."""
        return float(np.mean(inputs.weight > self.clip))


@dataclass(frozen=True)
class SNDR(OffPolicyEstimator):
    """Self-normalised doubly robust: mean(q̂^π) + mean(w · (r − q̂)) / mean(w).

    References:
        Kallus & Uehara, "Intrinsically Efficient, Stable, and Bounded Off-Policy Evaluation
        for Reinforcement Learning", NeurIPS 2019.
    """

    name: ClassVar[str] = "sndr"
    needs_reward_model: ClassVar[bool] = True

    def _terms(self, inputs: RoundInputs) -> EstimatorTerms:
        return EstimatorTerms(
            baseline=inputs.q_policy,
            correction=inputs.weight * _residual(inputs),
            normalizer=inputs.weight,
        )


@dataclass(frozen=True)
class SwitchDR(OffPolicyEstimator):
    """Switch doubly robust: DR where w <= τ, the direct method elsewhere.

    mean(q̂^π + 1[w <= τ] · w · (r − q̂)), as in Open Bandit Pipeline (per-round switch).

    Attributes:
        tau: Switching threshold on the importance weight (``inf``: plain DR; 0: DM).

    References:
        Wang, Agarwal, Dudík, ICML 2017.
    """

    tau: float = np.inf
    name: ClassVar[str] = "switch_dr"
    needs_reward_model: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_hyperparameter("tau", self.tau)

    def _terms(self, inputs: RoundInputs) -> EstimatorTerms:
        kept = inputs.weight <= self.tau
        return EstimatorTerms(
            baseline=inputs.q_policy, correction=kept * inputs.weight * _residual(inputs)
        )

    def clipped_share(self, inputs: RoundInputs) -> float:
        """Share of rounds switched to the direct method (``w > tau``)."""
        return float(np.mean(inputs.weight > self.tau))


@dataclass(frozen=True)
class DRos(OffPolicyEstimator):
    """Doubly robust with optimistic shrinkage of the weights: w ↦ λ w / (w² + λ).

    mean(q̂^π + λ w / (w² + λ) · (r − q̂)); λ = ``inf`` is DR, λ = 0 is DM.

    Attributes:
        lambda_: Shrinkage hyperparameter λ >= 0. The default 0 is Open Bandit Pipeline's
            (``DoublyRobustWithShrinkage(lambda_=0.0)``), which makes DRos the direct method;
            :data:`causalrec.ope.evaluate.DEFAULT_ESTIMATORS` uses λ = 100.

    References:
        Su, Dimakopoulou, Krishnamurthy, Dudík, ICML 2020.
    """

    lambda_: float = 0.0
    name: ClassVar[str] = "dros"
    needs_reward_model: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_hyperparameter("lambda_", self.lambda_)

    def _terms(self, inputs: RoundInputs) -> EstimatorTerms:
        weight = inputs.weight
        if np.isinf(self.lambda_):
            shrunk = weight
        elif self.lambda_ == 0:
            shrunk = np.zeros_like(weight)
        else:
            shrunk = self.lambda_ * weight / (weight**2 + self.lambda_)
        return EstimatorTerms(baseline=inputs.q_policy, correction=shrunk * _residual(inputs))
