"""High-level off-policy evaluation of a policy on a log: estimates, intervals, diagnostics.

:func:`evaluate` computes every per-round input straight from the policy protocol, a chunk of
rows at a time, so the (n_rounds, n_items) arrays of the array-level contract never exist:
π(a_i | x_i) for the importance weights, Σ_a π(a | x_i) q̂(x_i, a) for the direct-method part and
the policy mass on items the logger never showed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from causalrec.ope import propensity
from causalrec.ope.estimators import DM, DR, IPS, OffPolicyEstimator
from causalrec.ope.inputs import RoundInputs
from causalrec.ope.intervals import EstimatorTerms, confidence_interval
from causalrec.ope.registry import Estimator, parse_estimators
from causalrec.ope.reward_model import (
    FeatureSpace,
    RewardModelConfig,
    fold_ids,
    make_reward_model,
)
from causalrec.ope.slate import SlateEstimator
from causalrec.platform.errors import CausalRecError, ConfigError, DataError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.policy import Policy
from causalrec.platform.units import CLICKS_PER_ROUND

__all__ = [
    "DEFAULT_ESTIMATORS",
    "CrossFittedRewardModel",
    "OfflineEvaluator",
    "OverlapWarning",
    "RoundDiagnostics",
    "evaluate",
    "round_inputs",
]

#: Estimators of :func:`evaluate` when none are given (slate estimators are added for K > 1).
DEFAULT_ESTIMATORS = ("dm", "ips", "snips", "dr", "sndr", "switch_dr:tau=100", "dros:lambda_=100")
#: Slate estimators added for logs with K > 1.
SLATE_ESTIMATORS = ("iips", "rips", "sips")
#: Below this effective-sample-size share, or above this unsupported policy mass, overlap is poor.
POOR_ESS_SHARE = 0.01
POOR_SUPPORT = 0.05
_CHUNK_ROWS = 4096


class OverlapWarning(UserWarning):
    """The target policy puts weight where the logger rarely or never acted."""


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


def _reward_model_config(reward_model) -> RewardModelConfig | None:
    if reward_model is None or isinstance(reward_model, RewardModelConfig):
        return reward_model
    if isinstance(reward_model, str):
        return RewardModelConfig(kind=reward_model)
    if isinstance(reward_model, dict):
        return RewardModelConfig.from_dict(reward_model, source="reward_model")
    raise DataError(
        f"reward_model must be a kind, a RewardModelConfig or None; got {reward_model!r}"
    )


def _feature_space(logs: LoggedFeedback) -> FeatureSpace:
    items = logs.item_table
    if items is None:
        items = np.zeros((logs.n_items, 0))
    return FeatureSpace(
        item_features=np.asarray(items, dtype=np.float64), n_positions=logs.slate_size
    )


@dataclass(frozen=True)
class CrossFittedRewardModel:
    """Reward models fitted once on a log, fold by fold, so each row is predicted out of fold.

    Attributes:
        folds: Fold of each row of the log, shape (n_rows,).
        models: One fitted model per fold, trained on the other folds' rows.
        features: Reward-model features of each row, shape (n_rows, d_user), float64.
        q_factual: Out-of-fold prediction for each row's logged item, shape (n_rows,) — it does
            not depend on the evaluated policy, so it is computed once here.
    """

    folds: np.ndarray
    models: tuple
    features: np.ndarray
    q_factual: np.ndarray

    @classmethod
    def fit(cls, logs: LoggedFeedback, config: RewardModelConfig) -> CrossFittedRewardModel:
        """Fit ``config.n_folds`` models on ``logs`` (Chernozhukov et al. 2018 cross-fitting)."""
        x = logs.user_features.astype(np.float64)
        folds = fold_ids(logs.round_id, config.n_folds, config.seed)
        space = _feature_space(logs)
        reward = logs.click.astype(np.float64)
        models, q_factual = [], np.empty(logs.n_rows)
        for fold in range(config.n_folds):
            train = folds != fold
            model = make_reward_model(space, config).fit(
                x[train], logs.item_id[train], logs.position[train], reward[train]
            )
            held_out = ~train
            q_factual[held_out] = model.predict_pairs(
                x[held_out], logs.item_id[held_out], logs.position[held_out]
            )
            models.append(model)
        return cls(folds=folds, models=tuple(models), features=x, q_factual=q_factual)


def round_inputs(
    logs: LoggedFeedback,
    policy: Policy,
    *,
    pscore: np.ndarray,
    reward_model: RewardModelConfig | CrossFittedRewardModel | None,
) -> tuple[RoundInputs, RoundDiagnostics]:
    """Per-round inputs of the standard estimators and overlap diagnostics, chunk by chunk.

    ``reward_model`` is a configuration (models are fitted here), reward models already fitted
    on ``logs`` (:class:`CrossFittedRewardModel`, to evaluate many policies on one log), or
    ``None`` (no direct-method part).
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


def _has_complete_slates(logs: LoggedFeedback) -> bool:
    """Whether every round has one row per position (Open Bandit logs, say, do not)."""
    try:
        _slate_matrix(logs)
    except DataError:
        return False
    return True


def _slate_matrix(logs: LoggedFeedback) -> tuple[np.ndarray, np.ndarray]:
    """Rows ordered by (round, position) and the slates, shape (n_rounds, K)."""
    order = np.lexsort((logs.position, logs.round_id))
    K = logs.slate_size
    if logs.n_rows % K or not np.array_equal(
        logs.position[order], np.tile(np.arange(K), logs.n_rows // K)
    ):
        raise DataError(f"slate estimators need every round to have all {K} positions")
    return order, logs.item_id[order].reshape(-1, K)


def _slate_pscores(logs: LoggedFeedback, policy: Policy, estimator: SlateEstimator):
    """Logging and evaluation probabilities of the kind ``estimator`` needs, per row."""
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


def evaluate(
    logs: LoggedFeedback,
    policy: Policy,
    estimators: str | Sequence[str | Estimator] | None = None,
    *,
    reward_model: str | RewardModelConfig | dict | None = "logistic",
    alpha: float = 0.05,
    interval: str = "normal",
    n_bootstrap: int = 1000,
    seed: int | None = 0,
) -> pd.DataFrame:
    """Estimate the value of ``policy`` from ``logs`` with several estimators.

    Args:
        logs: Logged feedback (clicks are the reward).
        policy: The target policy (policy protocol).
        estimators: Specs (``"dr"``, ``"ips:clip=100"``) or instances; defaults to
            :data:`DEFAULT_ESTIMATORS` (plus :data:`SLATE_ESTIMATORS` for logs of complete slates).
        reward_model: Kind, config or ``None`` (then DM and DR-type estimators are skipped).
        alpha: 1 - confidence level of the intervals.
        interval: ``"normal"``, ``"bootstrap"`` (percentile), ``"studentized"`` (bootstrap-t) or
                ``"betting"`` (IPS-type estimators only; NaN bounds for the others).
        n_bootstrap: Bootstrap replicates.
        seed: Seed of the bootstrap.

    Returns:
        One row per estimator: ``estimator``, ``estimate``, ``low``, ``high``, ``unit``
        (always ``clicks_per_round``, the simulator's unit: the standard estimators' per-impression
        terms are summed within each round, and intervals treat rounds as the independent units;
        slate estimators are per slate already), ``ess``, ``ess_share``, ``max_weight``,
        ``mean_weight``, ``clipped_share`` (weights are per impression), ``unsupported_mass``,
        ``pscore`` (``logged`` or how it was estimated), ``reward_model``, ``n_rows``,
        ``n_rounds`` and ``warning``. Emits an :class:`OverlapWarning` when overlap is poor.
    """
    evaluator = OfflineEvaluator(logs, estimators, reward_model=reward_model)
    return evaluator.evaluate(
        policy, alpha=alpha, interval=interval, n_bootstrap=n_bootstrap, seed=seed
    )


class OfflineEvaluator:
    """Evaluates many policies on one log, preparing what they share once.

    The propensities (logged or estimated) and the cross-fitted reward models depend on the log
    only, so a search that scores hundreds of candidate policies, or a server that evaluates
    one request after another, fits them once (lazily, on the first evaluation that needs them,
    or eagerly with :meth:`prepare`). The evaluator pickles with its fitted models, so it can be
    put in Ray's object store and shared by workers.

    Args:
        logs: Logged feedback (clicks are the reward).
        estimators: As :func:`evaluate`.
        reward_model: As :func:`evaluate`.
    """

    def __init__(
        self,
        logs: LoggedFeedback,
        estimators: str | Sequence[str | Estimator] | None = None,
        *,
        reward_model: str | RewardModelConfig | dict | None = "logistic",
    ):
        if estimators is None:
            specs = list(DEFAULT_ESTIMATORS)
            if logs.slate_size > 1 and _has_complete_slates(logs):
                specs += SLATE_ESTIMATORS
            estimators = parse_estimators(specs)
        else:
            if isinstance(estimators, str):
                estimators = parse_estimators(estimators)
            estimators = [
                e if not isinstance(e, str) else parse_estimators([e])[0] for e in estimators
            ]
        config = _reward_model_config(reward_model)
        if config is None:
            dropped = [e.name for e in estimators if getattr(e, "needs_q_hat", False)]
            if dropped and len(dropped) == len(estimators):
                raise DataError(f"estimators {dropped} need a reward model; reward_model is None")
            estimators = [e for e in estimators if not getattr(e, "needs_q_hat", False)]
        self.logs, self.estimators = logs, list(estimators)
        needs_model = any(getattr(e, "needs_q_hat", False) for e in self.estimators)
        self.reward_model_config = config if needs_model else None
        self._requested_reward_model = config  # what difference() fits if it needs a model
        self.pscore_source = "logged"
        self.pscore = logs.pscore
        if np.isnan(self.pscore).all():
            self.pscore = propensity.estimate_pscore(logs)
            self.pscore_source = propensity.METHOD
        elif np.isnan(self.pscore).any():
            row = int(np.flatnonzero(np.isnan(self.pscore))[0])
            raise DataError(
                f"pscore is missing for some rows (first at row {row}); fill or drop them"
            )
        self._fitted: CrossFittedRewardModel | None = None
        _, self._round_index = np.unique(logs.round_id, return_inverse=True)
        self._n_rounds = int(self._round_index.max()) + 1 if logs.n_rows else 0

    def _per_round(self, terms: EstimatorTerms) -> EstimatorTerms:
        """Per-impression terms summed within each round: estimates in clicks per round."""
        if self._n_rounds == self.logs.n_rows:  # one row per round (K = 1, Open Bandit logs)
            return terms
        return terms.summed_by(self._round_index, self._n_rounds)

    def prepare(self) -> OfflineEvaluator:
        """Fit the cross-fitted reward models now (if an estimator needs them); returns self."""
        if self.reward_model_config is not None and self._fitted is None:
            self._fitted = CrossFittedRewardModel.fit(self.logs, self.reward_model_config)
        return self

    def difference(
        self, policy_a: Policy, policy_b: Policy, estimator: str = "dr", *, alpha: float = 0.05
    ) -> dict[str, float]:
        """Estimate of ``V(policy_b) - V(policy_a)`` with a paired normal interval.

        Both policies are evaluated on the same rounds, so the interval comes from the
        per-round differences of the estimator's contributions; it is much narrower than the
        two separate intervals when the policies agree on many rounds. Only estimators whose
        estimate is the mean of per-round contributions (IPS, DM, DR) can be differenced this
        way.

        Args:
            policy_a: The reference policy.
            policy_b: The compared policy.
            estimator: An estimator spec, e.g. ``"dr"`` or ``"ips:clip=100"``.
            alpha: 1 - confidence level of the interval.

        Returns:
            ``{"estimate", "low", "high", "value_a", "value_b", "unit"}``, in clicks per round
            (per-impression contributions summed within each round; rounds are the paired
            units).
        """
        (spec,) = parse_estimators([estimator])
        if not isinstance(spec, DM | DR | IPS):
            raise ConfigError(
                f"estimator: {estimator!r} is not a mean of per-round terms; use dr, ips or dm"
            )
        if getattr(spec, "needs_q_hat", False) and self.reward_model_config is None:
            if self._requested_reward_model is None:
                raise DataError(
                    f"estimator: {estimator!r} needs a reward model; reward_model is None"
                )
            self.reward_model_config = self._requested_reward_model
        self.prepare()
        terms = []
        for policy in (policy_a, policy_b):
            inputs, _ = round_inputs(
                self.logs, policy, pscore=self.pscore, reward_model=self._fitted
            )
            terms.append(self._per_round(spec.terms_from_inputs(inputs)).contributions())
        delta = terms[1] - terms[0]
        half = stats.norm.ppf(1 - alpha / 2) * delta.std(ddof=1) / np.sqrt(len(delta))
        estimate = float(delta.mean())
        return {
            "estimate": estimate,
            "low": float(estimate - half),
            "high": float(estimate + half),
            "value_a": float(terms[0].mean()),
            "value_b": float(terms[1].mean()),
            "unit": CLICKS_PER_ROUND,
        }

    def evaluate(
        self,
        policy: Policy,
        *,
        alpha: float = 0.05,
        interval: str = "normal",
        n_bootstrap: int = 1000,
        seed: int | None = 0,
        warn: bool = True,
    ) -> pd.DataFrame:
        """Estimates of ``policy``'s value: one row per estimator (columns as :func:`evaluate`).

        Args:
            policy: The target policy.
            alpha: 1 - confidence level of the intervals.
            interval: ``"normal"``, ``"bootstrap"`` (percentile), ``"studentized"`` (bootstrap-t) or
                ``"betting"`` (IPS-type estimators only; NaN bounds for the others).
            n_bootstrap: Bootstrap replicates.
            seed: Seed of the bootstrap.
            warn: Emit an :class:`OverlapWarning` when overlap is poor (the ``warning`` column
                says it either way).
        """
        logs = self.logs
        self.prepare()
        inputs, diagnostics = round_inputs(
            logs, policy, pscore=self.pscore, reward_model=self._fitted
        )
        config = self.reward_model_config
        records = []
        for estimator in self.estimators:
            try:
                if isinstance(estimator, SlateEstimator):
                    logging, evaluation = _slate_pscores(logs, policy, estimator)
                    arrays = dict(
                        reward=logs.click,
                        slate_id=logs.round_id,
                        position=logs.position,
                        pscore=logging,
                        evaluation_pscore=evaluation,
                    )
                    value = estimator.estimate(**arrays)
                    low, high = estimator.interval(
                        **arrays, alpha=alpha, method=interval, n_bootstrap=n_bootstrap, seed=seed
                    )
                    clipped = float(np.mean(evaluation / logging > estimator.clip))
                else:
                    assert isinstance(estimator, OffPolicyEstimator)
                    terms = self._per_round(estimator.terms_from_inputs(inputs))
                    value = terms.value()
                    if interval == "betting" and terms.weight is None:
                        low = high = np.nan  # betting needs an IPS-type sum of rewards
                    else:
                        low, high = confidence_interval(terms, interval, alpha, n_bootstrap, seed)
                    clipped = estimator.clipped_share(inputs)
            except CausalRecError as exc:
                raise type(exc)(f"{estimator.name}: {exc}") from None
            records.append(
                {
                    "estimator": repr(estimator),
                    "estimate": value,
                    "low": low,
                    "high": high,
                    "unit": CLICKS_PER_ROUND,
                    "ess": diagnostics.ess,
                    "ess_share": diagnostics.ess_share,
                    "max_weight": diagnostics.max_weight,
                    "mean_weight": diagnostics.mean_weight,
                    "clipped_share": clipped,
                    "unsupported_mass": diagnostics.unsupported_mass,
                    "pscore": self.pscore_source,
                    "reward_model": config.kind if config else "none",
                    "n_rows": logs.n_rows,
                    "n_rounds": self._n_rounds,
                    "warning": diagnostics.warning,
                }
            )
        if warn and diagnostics.warning:
            warnings.warn(f"{policy.name}: {diagnostics.warning}", OverlapWarning, stacklevel=2)
        return pd.DataFrame.from_records(records)
