"""Hyperparameters of IPS, DR, Switch-DR and DRos tuned from the logs alone: SLOPE (or MSE).

Each estimator here wraps one standard estimator (:mod:`causalrec.ope.estimators`) and a list
of candidate values of its hyperparameter (clip, τ or λ), chooses one candidate from the log it
is given, and reports the wrapped estimator's value at that candidate. The choice and the value
equal Open Bandit Pipeline 0.5.7's ``InverseProbabilityWeightingTuning``,
``DoublyRobustTuning``, ``SwitchDoublyRobustTuning`` and ``DoublyRobustWithShrinkageTuning``
(``tuning_method="slope"`` or ``"mse"``), reproduced step by step:

* ``"slope"`` (SLOPE with Tucker & Lee's test, which OBP calls SLOPE++). Each candidate k has
  an estimate θ_k (the mean of its per-round contributions x) and a deviation width
  c_k = t_{n−1}(1 − δ) · sqrt(var(x) / (n − 1)) (one-sided Student-t, ``var`` with ddof 0).
  Candidates are visited by decreasing width; candidate i is accepted while
  |θ_i − θ_j| <= c_i + (√6 − 1) c_j for every candidate j accepted before it. At the first
  rejection the previously accepted candidate is chosen; if none is rejected, the narrowest.
* ``"mse"`` (Su et al. 2020, DRos paper §5). Each candidate scores var(x) / n + B², where B is
  |mean((w − ŵ)(r − q̂))| (ŵ the clipped, switched or shrunk weight; q̂ = 0 for IPS) plus, with
  ``use_bias_upper_bound``, the Bernstein terms sqrt(2 mean(w²) log(2/δ) / n) +
  2 max(w) log(2/δ) / (3n); the first lowest score in OBP's candidate order wins.

OBP's candidate order is descending for clip and τ, ascending for λ; the candidates are stored
as given and only the tuning sees them in that order. It breaks ties between candidates with
equal widths, which in practice are equivalent candidates with the same estimate (every clip
above the largest weight): SLOPE visits tied candidates last-first, so it reports the largest
such clip or τ and the smallest such λ. OBP does the same where numpy's default argsort is
stable on short arrays; on CPUs with AVX-512 it is not, and OBP's pick among equivalent
candidates (never its value) depends on the machine. Here it does not.

Where this differs from OBP on purpose: the tuning runs afresh on every call (an OBP instance
keeps the first call's ``best_hyperparam`` for all later data); the candidates are never sorted
in place; ``delta`` must lie in (0, 1) (OBP also takes 0 and 1, whose widths are infinite); and
DRos with λ = 0 is the direct method where OBP returns NaN on rounds with w = 0.

References:
    Su, Srinath, Krishnamurthy, "Adaptive Estimator Selection for Off-Policy Evaluation",
    ICML 2020.
    Tucker & Lee, "Improved Estimator Selection for Off-Policy Evaluation", 2021.
    Su, Dimakopoulou, Krishnamurthy, Dudík, "Doubly Robust Off-policy Evaluation with
    Shrinkage", ICML 2020.
    Saito, Aihara, Matsutani, Narita, "Open Bandit Dataset and Pipeline", NeurIPS 2021.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from scipy import stats

from causalrec.ope.base import Estimator
from causalrec.ope.estimators import (
    DR,
    IPS,
    DRos,
    IntervalMethod,
    OffPolicyEstimator,
    SwitchDR,
    _arrays,
)
from causalrec.ope.inputs import RoundInputs, round_inputs_from_arrays
from causalrec.ope.intervals import EstimatorTerms, confidence_interval
from causalrec.platform.errors import CausalRecError, ConfigError, DataError

if TYPE_CHECKING:
    from causalrec.ope.policy_inputs import EvaluationInputs

__all__ = [
    "TUNING_METHODS",
    "DRTuning",
    "DRosTuning",
    "IPSTuning",
    "SwitchDRTuning",
    "TunedEstimator",
    "TuningResult",
]

#: Ways to choose a candidate: SLOPE (Tucker & Lee's test) or the estimated MSE.
TUNING_METHODS = ("slope", "mse")
#: Tucker & Lee's constant in SLOPE's test |θ_i − θ_j| <= c_i + C c_j, as in OBP.
SLOPE_CONSTANT = np.sqrt(6) - 1


@dataclass(frozen=True, eq=False)
class TuningResult:
    """One tuning run: the chosen hyperparameter, its estimate, and every candidate's numbers.

    Attributes:
        best: The chosen hyperparameter value.
        value: The wrapped estimator's estimate at ``best``.
        candidates: The candidates in OBP's order, shape (n_candidates,).
        estimates: Each candidate's estimate, shape (n_candidates,).
        widths: Each candidate's Student-t deviation width c_k at level δ, shape (n_candidates,).
        mse_scores: Each candidate's estimated MSE (``method="mse"``), shape (n_candidates,), or
            ``None``.
        terms: Per-round terms of the wrapped estimator at ``best`` (for intervals).
    """

    best: float
    value: float
    candidates: np.ndarray
    estimates: np.ndarray
    widths: np.ndarray
    mse_scores: np.ndarray | None
    terms: EstimatorTerms


@dataclass(frozen=True, kw_only=True)
class TunedEstimator(Estimator):
    """Base of the tuned estimators: a wrapped estimator and candidates for its hyperparameter.

    Subclasses name the wrapped estimator (:attr:`base`), its hyperparameter field
    (:attr:`hyperparameter`), the field of candidates (:attr:`candidates_field`) and OBP's order.
    Every entry point tunes afresh on the data it is given and returns or uses the chosen
    candidate's terms; the latest choice is kept in :attr:`best_` (and ``best_clip_``,
    ``best_tau_`` or ``best_lambda_``), the latest :class:`TuningResult` in :attr:`result_`.
    Intervals are those of the wrapped estimator at the chosen value: they ignore the
    variability of the choice itself. On arrays each row is a unit; inside
    :func:`causalrec.ope.evaluate` the units are rounds (impressions summed within each), as
    for every estimator's intervals. OBP's ``use_estimated_pscore`` has no counterpart: pass
    estimated propensities as ``pscore``.

    Attributes:
        method: ``"slope"`` or ``"mse"`` (OBP's ``tuning_method``).
        delta: Confidence level δ of SLOPE's widths and of the MSE's bias bound, in (0, 1).
            OBP's default is 0.1 too (its IPS docstring says 0.05, but the field is 0.1).
        use_bias_upper_bound: ``"mse"`` only: bound the bias by Bernstein's inequality rather
            than its plug-in estimate. SLOPE ignores it, as OBP does.

    References:
        Su, Srinath, Krishnamurthy, ICML 2020; Tucker & Lee, 2021.
    """

    method: str = "slope"
    delta: float = 0.1
    use_bias_upper_bound: bool = True

    #: The wrapped estimator class.
    base: ClassVar[type[OffPolicyEstimator]]
    #: Its hyperparameter's field name (``clip``, ``tau``, ``lambda_``).
    hyperparameter: ClassVar[str]
    #: The field holding the candidates (``clips``, ``taus``, ``lambdas``).
    candidates_field: ClassVar[str]
    #: OBP's candidate order: descending (clip, τ) or ascending (λ).
    descending: ClassVar[bool] = True

    def __repr__(self) -> str:
        """Short and spec-like: ``IPSTuning(clips=1|10|inf)``, plus any non-default setting."""
        candidates = "|".join(f"{value:g}" for value in getattr(self, self.candidates_field))
        parts = [f"{self.candidates_field}={candidates}"]
        for field, default in (("method", "slope"), ("delta", 0.1), ("use_bias_upper_bound", True)):
            if getattr(self, field) != default:
                parts.append(f"{field}={getattr(self, field)}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def __post_init__(self) -> None:
        if self.method not in TUNING_METHODS:
            raise ConfigError(f"method must be one of {list(TUNING_METHODS)}; got {self.method!r}")
        if not isinstance(self.delta, numbers.Real) or not 0 < self.delta < 1:
            raise ConfigError(f"delta must be in (0, 1); got {self.delta!r}")
        if not isinstance(self.use_bias_upper_bound, bool | np.bool_):
            raise ConfigError(
                f"use_bias_upper_bound must be True or False; got {self.use_bias_upper_bound!r}"
            )
        name = self.candidates_field
        values = getattr(self, name)
        if isinstance(values, str | bytes) or not np.iterable(values):
            raise ConfigError(f"{name} must be a non-empty sequence of numbers; got {values!r}")
        values = tuple(values)
        if not values:
            raise ConfigError(f"{name} must be a non-empty sequence of numbers; got ()")
        for value in values:
            is_number = isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
            if not is_number or np.isnan(value) or value < 0:
                raise ConfigError(f"{name} must hold numbers >= 0 (inf allowed); got {value!r}")
        object.__setattr__(self, name, tuple(float(value) for value in values))

    # -- the tuning ---------------------------------------------------------------------------
    def _estimator(self, value: float) -> OffPolicyEstimator:
        return self.base(**{self.hyperparameter: value})

    def _tune(
        self, terms_of: Callable[[OffPolicyEstimator], EstimatorTerms], unit_weight: np.ndarray
    ) -> TuningResult:
        """Tune on per-unit terms; ``unit_weight`` (n,) is each unit's importance weight w."""
        candidates = np.array(sorted(getattr(self, self.candidates_field), reverse=self.descending))
        n = len(unit_weight)
        if n < 2:
            raise DataError(f"{self.name} needs at least 2 rounds to tune; got {n}")
        quantile = stats.t(n - 1).ppf(1.0 - self.delta)
        if self.method == "mse":  # w (r − q̂), from which each candidate's bias is estimated
            unmodified = terms_of(self._estimator(np.inf)).correction
            margins = self._bias_margins(unit_weight)
        estimates, widths, mse_scores = np.empty((3, len(candidates)))
        for k, value in enumerate(candidates):
            terms = terms_of(self._estimator(value))
            x = terms.contributions()
            estimates[k], variance = x.mean(), np.var(x)
            half = np.sqrt(variance / (n - 1)) * quantile
            widths[k] = estimates[k] - (estimates[k] - half)  # OBP's mean − lower bound
            if self.method == "mse":
                bias = np.abs(np.mean(unmodified - terms.correction))
                for margin in margins:  # added one by one, in OBP's order
                    bias += margin
                mse_scores[k] = variance / n + bias**2
        if self.method == "slope":
            best, mse_scores = _slope_choice(estimates, widths), None
        else:
            best = int(np.argmin(mse_scores))  # the first lowest, as OBP's min over a dict
        terms = terms_of(self._estimator(candidates[best]))
        result = TuningResult(
            best=float(candidates[best]),
            value=terms.value(),
            candidates=candidates,
            estimates=estimates,
            widths=widths,
            mse_scores=mse_scores,
            terms=terms,
        )
        object.__setattr__(self, "_result", result)
        return result

    def _bias_margins(self, unit_weight: np.ndarray) -> tuple[float, ...]:
        """Bernstein's two margins on the bias estimate (none without ``use_bias_upper_bound``)."""
        if not self.use_bias_upper_bound:
            return ()
        n, log_term = len(unit_weight), np.log(2 / self.delta)
        return (
            np.sqrt(2 * np.mean(unit_weight**2) * log_term / n),
            2 * unit_weight.max() * log_term / (3 * n),
        )

    def tune_from_inputs(self, inputs: RoundInputs) -> TuningResult:
        """Tune on :class:`RoundInputs`, one unit per row (impression)."""
        return self._tune(lambda estimator: estimator.terms_from_inputs(inputs), inputs.weight)

    def tune(
        self,
        *,
        reward: np.ndarray,
        action: np.ndarray,
        pscore: np.ndarray,
        action_dist: np.ndarray,
        position: np.ndarray | None = None,
        q_hat: np.ndarray | None = None,
    ) -> TuningResult:
        """Choose the hyperparameter on Open Bandit Pipeline-style arrays, one unit per row.

        Args:
            reward: Shape (n_rounds,).
            action: Logged actions, shape (n_rounds,).
            pscore: Logging propensities of the logged actions, shape (n_rounds,).
            action_dist: Target policy, shape (n_rounds, n_actions, len_list) or
                (n_rounds, n_actions).
            position: 0-based positions, shape (n_rounds,); required when len_list > 1.
            q_hat: Reward model, the shape of ``action_dist`` (DR, Switch-DR, DRos).

        Returns:
            The choice, its estimate and every candidate's estimate and width.
        """
        inputs = round_inputs_from_arrays(
            reward=reward,
            action=action,
            pscore=pscore,
            action_dist=action_dist,
            position=position,
            q_hat=q_hat,
            needs_q_hat=self.needs_reward_model,
        )
        return self.tune_from_inputs(inputs)

    # -- fitted state -------------------------------------------------------------------------
    @property
    def result_(self) -> TuningResult:
        """The latest :class:`TuningResult` of this instance."""
        result = self.__dict__.get("_result")
        if result is None:
            raise CausalRecError(f"{type(self).__name__} has not tuned yet: call estimate() first")
        return result

    @property
    def best_(self) -> float:
        """The latest chosen hyperparameter value."""
        return self.result_.best

    # -- Open Bandit Pipeline's array API -----------------------------------------------------
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
        """The wrapped estimator's estimate at the value tuned on these arrays (as :meth:`tune`)."""
        return self.tune(**_arrays(locals())).value

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
        """Per-row contributions at the tuned value, shape (n_rounds,) (arrays as :meth:`tune`)."""
        return self.tune(**_arrays(locals())).terms.contributions()

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
        """``(low, high)`` of the wrapped estimator's interval at the tuned value.

        Arrays as :meth:`tune`; ``alpha``, ``method`` (normal, bootstrap, studentized, betting),
        ``n_bootstrap`` and ``seed`` as :meth:`causalrec.ope.OffPolicyEstimator.interval`.
        """
        terms = self.tune(**_arrays(locals())).terms
        return confidence_interval(terms, method, alpha, n_bootstrap, seed)

    # -- the Estimator interface (causalrec.ope.evaluate) ---------------------------------------
    def _tune_policy(self, inputs: EvaluationInputs) -> TuningResult:
        """Tune on the log's rounds (impressions summed within each), once per ``inputs``."""

        def compute() -> TuningResult:
            impressions = inputs.impressions
            unit_weight = inputs.per_round(EstimatorTerms(None, impressions.weight)).correction
            return self._tune(
                lambda estimator: inputs.per_round(estimator.terms_from_inputs(impressions)),
                unit_weight,
            )

        result = inputs.cached(("tuned", self), compute)
        object.__setattr__(self, "_result", result)
        return result

    def policy_terms(self, inputs: EvaluationInputs) -> EstimatorTerms:
        """Per-round terms of the wrapped estimator at the value tuned on these rounds."""
        return self._tune_policy(inputs).terms

    def policy_clipped_share(self, inputs: EvaluationInputs) -> float:
        """The wrapped estimator's clipped share of impressions at the tuned value."""
        best = self._tune_policy(inputs).best
        return self._estimator(best).clipped_share(inputs.impressions)


def _slope_choice(estimates: np.ndarray, widths: np.ndarray) -> int:
    """Index of SLOPE's choice (OBP's ``_tune_hyperparam_with_slope``, ties broken stably).

    Args:
        estimates: θ_k, shape (n_candidates,).
        widths: c_k, shape (n_candidates,).
    """
    order = np.argsort(widths, kind="stable")[::-1]  # widest first; ties: later first
    theta, width = estimates[order], widths[order]
    agree = np.abs(theta[:, None] - theta[None, :]) <= width[:, None] + SLOPE_CONSTANT * width
    earlier = np.tri(len(order), k=-1, dtype=bool)  # [i, j]: j visited before i
    rejected = np.flatnonzero((earlier & ~agree).any(axis=1))
    return int(order[rejected[0] - 1] if len(rejected) else order[-1])


@dataclass(frozen=True, repr=False)
class IPSTuning(TunedEstimator):
    """IPS with its clip tuned from the log (OBP's ``InverseProbabilityWeightingTuning``).

    Attributes:
        clips: Candidate clips, each >= 0 (``inf``: no clipping); OBP's ``lambdas``.

    Examples:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> pscore = rng.uniform(0.01, 1, 500)
        >>> tuned = IPSTuning(clips=(1, 10, np.inf))
        >>> value = tuned.estimate(
        ...     reward=rng.binomial(1, 0.3, 500).astype(float),
        ...     action=np.zeros(500, int),
        ...     pscore=pscore,
        ...     action_dist=np.stack([np.ones(500), np.zeros(500)], axis=1),
        ... )
        >>> tuned.best_clip_ in (1.0, 10.0, np.inf)
        True

    References:
        Su, Srinath, Krishnamurthy, ICML 2020; Tucker & Lee, 2021.
    """

    clips: tuple[float, ...]
    name: ClassVar[str] = "ips_slope"
    base: ClassVar[type[OffPolicyEstimator]] = IPS
    hyperparameter: ClassVar[str] = "clip"
    candidates_field: ClassVar[str] = "clips"
    best_clip_ = TunedEstimator.best_


@dataclass(frozen=True, repr=False)
class DRTuning(TunedEstimator):
    """DR with its clip tuned from the log (OBP's ``DoublyRobustTuning``).

    Attributes:
        clips: Candidate clips, each >= 0 (``inf``: no clipping); OBP's ``lambdas``.

    References:
        Su, Srinath, Krishnamurthy, ICML 2020; Tucker & Lee, 2021.
    """

    clips: tuple[float, ...]
    name: ClassVar[str] = "dr_slope"
    needs_reward_model: ClassVar[bool] = True
    base: ClassVar[type[OffPolicyEstimator]] = DR
    hyperparameter: ClassVar[str] = "clip"
    candidates_field: ClassVar[str] = "clips"
    best_clip_ = TunedEstimator.best_


@dataclass(frozen=True, repr=False)
class SwitchDRTuning(TunedEstimator):
    """Switch-DR with its threshold τ tuned from the log (OBP's ``SwitchDoublyRobustTuning``).

    Attributes:
        taus: Candidate thresholds, each >= 0 (``inf``: plain DR; 0: DM); OBP's ``lambdas``.

    References:
        Su, Srinath, Krishnamurthy, ICML 2020; Tucker & Lee, 2021.
    """

    taus: tuple[float, ...]
    name: ClassVar[str] = "switch_dr_slope"
    needs_reward_model: ClassVar[bool] = True
    base: ClassVar[type[OffPolicyEstimator]] = SwitchDR
    hyperparameter: ClassVar[str] = "tau"
    candidates_field: ClassVar[str] = "taus"
    best_tau_ = TunedEstimator.best_


@dataclass(frozen=True, repr=False)
class DRosTuning(TunedEstimator):
    """DRos with its shrinkage λ tuned from the log (OBP's ``DoublyRobustWithShrinkageTuning``).

    Attributes:
        lambdas: Candidate λ, each >= 0 (``inf``: plain DR; 0: DM); OBP's ``lambdas``.

    References:
        Su, Srinath, Krishnamurthy, ICML 2020; Tucker & Lee, 2021.
    """

    lambdas: tuple[float, ...]
    name: ClassVar[str] = "dros_slope"
    needs_reward_model: ClassVar[bool] = True
    base: ClassVar[type[OffPolicyEstimator]] = DRos
    hyperparameter: ClassVar[str] = "lambda_"
    candidates_field: ClassVar[str] = "lambdas"
    descending: ClassVar[bool] = False
    best_lambda_ = TunedEstimator.best_
