"""High-level off-policy evaluation of a policy on a log: estimates, intervals, diagnostics.

:func:`evaluate` (and :class:`OfflineEvaluator`, for many policies on one log) builds one
:class:`~causalrec.ope.policy_inputs.EvaluationInputs` per policy and asks every estimator,
whatever its family, for its per-round terms (:meth:`causalrec.ope.base.Estimator.policy_terms`);
the estimate and the interval come from those terms.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from causalrec.ope import propensity
from causalrec.ope._validation import check_probabilities
from causalrec.ope.base import Estimator
from causalrec.ope.cluster_inputs import check_item_clusters
from causalrec.ope.cross_fit import CrossFittedRewardModel, coerce_reward_model
from causalrec.ope.estimators import DR, IPS
from causalrec.ope.intervals import EstimatorTerms, confidence_interval
from causalrec.ope.policy_inputs import EvaluationInputs, RoundDiagnostics, round_inputs
from causalrec.ope.registry import parse_estimators
from causalrec.ope.reward_model import RewardModel, RewardModelConfig
from causalrec.ope.selection import AUTO, EstimatorSelection, OffPolicyCrossValidation
from causalrec.ope.slate import has_complete_slates
from causalrec.platform.errors import CausalRecError, ConfigError, DataError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.policy import Policy
from causalrec.platform.units import CLICKS_PER_ROUND

__all__ = [
    "AUTO_CANDIDATES",
    "CLUSTER_ESTIMATORS",
    "DEFAULT_ESTIMATORS",
    "SLATE_ESTIMATORS",
    "OfflineEvaluator",
    "OverlapWarning",
    "evaluate",
]

#: Estimators of :func:`evaluate` when none are given (slate estimators are added for K > 1).
DEFAULT_ESTIMATORS = ("dm", "ips", "snips", "dr", "sndr", "switch_dr:tau=100", "dros:lambda_=100")
#: Slate estimators added for logs with K > 1.
SLATE_ESTIMATORS = ("iips", "rips", "sips")
#: Candidates of ``estimators="auto"`` (plus the slate estimators for logs of complete slates,
#: and ``mips``, ``snmips``, ``offcem`` when item clusters and the logging policy are given).
#: The SLOPE-tuned estimators among them search one geometric grid, fixed before any result.
AUTO_CANDIDATES = (
    *DEFAULT_ESTIMATORS,
    "ips_slope:clips=1|3|10|30|100|300|1000|inf",
    "dr_slope:clips=1|3|10|30|100|300|1000|inf",
    "switch_dr_slope:taus=1|3|10|30|100|300|1000|inf",
    "dros_slope:lambdas=1|3|10|30|100|300|1000|inf",
)
CLUSTER_ESTIMATORS = ("mips", "snmips", "offcem")


class OverlapWarning(UserWarning):
    """The target policy puts weight where the logger rarely or never acted."""


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
    logging_policy: Policy | None = None,
    item_clusters: np.ndarray | None = None,
) -> pd.DataFrame:
    """Estimate the value of ``policy`` from ``logs`` with several estimators.

    Args:
        logs: Logged feedback (clicks are the reward).
        policy: The target policy (policy protocol).
        estimators: Specs (``"dr"``, ``"ips:clip=100"``) or instances; defaults to
            :data:`DEFAULT_ESTIMATORS` (plus :data:`SLATE_ESTIMATORS` for logs of complete slates).
            ``"auto"``: every candidate of :data:`AUTO_CANDIDATES`, with the one off-policy
            cross-validation chooses marked (:mod:`causalrec.ope.selection`).
        reward_model: Kind, config or ``None`` (then DM and DR-type estimators are skipped).
        alpha: 1 - confidence level of the intervals.
        interval: ``"normal"``, ``"bootstrap"`` (percentile), ``"studentized"`` (bootstrap-t) or
                ``"betting"`` (IPS-type estimators only; NaN bounds for the others).
        n_bootstrap: Bootstrap replicates.
        seed: Seed of the bootstrap.
        logging_policy: The policy that wrote the log; needed by the estimators over item
            clusters (``mips``, ``snmips``, ``offcem``).
        item_clusters: Cluster of every item, shape (n_items,), for those estimators
            (:func:`causalrec.ope.cluster_inputs.item_clusters_from_features` makes them).

    Returns:
        One row per estimator: ``estimator``, ``estimate``, ``low``, ``high``, ``unit``
        (always ``clicks_per_round``, the simulator's unit: the standard estimators' per-impression
        terms are summed within each round, and intervals treat rounds as the independent units;
        slate estimators are per slate already), ``ess``, ``ess_share``, ``max_weight``,
        ``mean_weight``, ``clipped_share`` (weights are per impression), ``unsupported_mass``,
        ``pscore`` (``logged`` or how it was estimated), ``reward_model``, ``n_rows``,
        ``n_rounds`` and ``warning``. Emits an :class:`OverlapWarning` when overlap is poor.
    """
    evaluator = OfflineEvaluator(
        logs,
        estimators,
        reward_model=reward_model,
        logging_policy=logging_policy,
        item_clusters=item_clusters,
    )
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
        reward_model: As :func:`evaluate`, or a :class:`~causalrec.ope.reward_model.RewardModel`
            already fitted (elsewhere: on a sample, on other logs), which then predicts every
            row instead of the cross-fitted models.
        logging_policy: As :func:`evaluate`.
        item_clusters: As :func:`evaluate`.
        pscore: Propensities to weight by instead of the log's, shape (n_rows,), in (0, 1]
            (an analyst's own, or another model's); ``None``: logged, else estimated.
    """

    def __init__(
        self,
        logs: LoggedFeedback,
        estimators: str | Sequence[str | Estimator] | None = None,
        *,
        reward_model: str | RewardModelConfig | dict | RewardModel | None = "logistic",
        logging_policy: Policy | None = None,
        item_clusters: np.ndarray | None = None,
        pscore: np.ndarray | None = None,
    ):
        #: Off-policy cross-validation when ``estimators="auto"``, else ``None``.
        self.selection: OffPolicyCrossValidation | None = None
        if isinstance(estimators, str) and estimators.strip() == AUTO:
            self.selection = OffPolicyCrossValidation()
            specs = list(AUTO_CANDIDATES)
            if logs.slate_size > 1 and has_complete_slates(logs):
                specs += SLATE_ESTIMATORS
            if item_clusters is not None and logging_policy is not None:
                specs += CLUSTER_ESTIMATORS
            estimators = parse_estimators(specs)
        elif estimators is None:
            specs = list(DEFAULT_ESTIMATORS)
            if logs.slate_size > 1 and has_complete_slates(logs):
                specs += SLATE_ESTIMATORS
            estimators = parse_estimators(specs)
        else:
            if isinstance(estimators, str):
                estimators = parse_estimators(estimators)
            estimators = [
                e if not isinstance(e, str) else parse_estimators([e])[0] for e in estimators
            ]
        given_model = reward_model if isinstance(reward_model, RewardModel) else None
        config = given_model.config if given_model else coerce_reward_model(reward_model)
        if config is None:
            dropped = [e.name for e in estimators if e.needs_reward_model]
            if dropped and len(dropped) == len(estimators):
                raise DataError(f"estimators {dropped} need a reward model; reward_model is None")
            estimators = [e for e in estimators if not e.needs_reward_model]
        self.logs, self.estimators = logs, list(estimators)
        needs_model = any(e.needs_reward_model for e in self.estimators)
        self.reward_model_config = config if needs_model else None
        self._requested_reward_model = config  # what difference() fits if it needs a model
        self.pscore_source = "logged"
        self.pscore = logs.pscore
        if pscore is not None:
            self.pscore = check_probabilities("pscore", pscore, logs.n_rows)
            self.pscore_source = "given"
        elif np.isnan(self.pscore).all():
            self.pscore = propensity.estimate_pscore(logs)
            self.pscore_source = propensity.METHOD
        elif np.isnan(self.pscore).any():
            row = int(np.flatnonzero(np.isnan(self.pscore))[0])
            raise DataError(
                f"pscore is missing for some rows (first at row {row}); fill or drop them"
            )
        self._fitted: CrossFittedRewardModel | None = None
        if given_model is not None and needs_model:
            self._fitted = CrossFittedRewardModel.from_model(logs, given_model)
        self.logging_policy = logging_policy
        self.item_clusters = (
            None if item_clusters is None else check_item_clusters(item_clusters, logs.n_items)
        )
        _, self._round_index = np.unique(logs.round_id, return_inverse=True)
        self._n_rounds = int(self._round_index.max()) + 1 if logs.n_rows else 0

    def policy_inputs(self, policy: Policy) -> tuple[EvaluationInputs, RoundDiagnostics]:
        """What every estimator needs to evaluate ``policy`` on the log, and its overlap."""
        self.prepare()
        impressions, diagnostics = round_inputs(
            self.logs, policy, pscore=self.pscore, reward_model=self._fitted
        )
        inputs = EvaluationInputs(
            logs=self.logs,
            policy=policy,
            impressions=impressions,
            round_index=self._round_index,
            n_rounds=self._n_rounds,
            logging_policy=self.logging_policy,
            item_clusters=self.item_clusters,
        )
        return inputs, diagnostics

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
        if not spec.supports_difference:
            raise ConfigError(
                f"estimator: {estimator!r} is not a mean of per-round terms; use dr, ips or dm"
            )
        if spec.needs_reward_model and self.reward_model_config is None:
            if self._requested_reward_model is None:
                raise DataError(
                    f"estimator: {estimator!r} needs a reward model; reward_model is None"
                )
            self.reward_model_config = self._requested_reward_model
        terms = []
        for policy in (policy_a, policy_b):
            inputs, _ = self.policy_inputs(policy)
            terms.append(spec.policy_terms(inputs).contributions())
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

        With ``estimators="auto"`` the table has every candidate and three more columns:
        ``selected`` (the one off-policy cross-validation chose for this policy),
        ``cv_score`` (what it minimised, in (clicks per round)²) and ``selection_reason``.
        """
        logs = self.logs
        inputs, diagnostics = self.policy_inputs(policy)
        config = self.reward_model_config
        all_terms = self.all_terms(inputs)
        selection = self._select(inputs, all_terms) if self.selection else None
        cv_table = selection.table.set_index("candidate") if selection else None
        records = []
        for estimator, terms in zip(self.estimators, all_terms, strict=True):
            try:
                value = terms.value()
                if interval == "betting" and terms.weight is None:
                    low = high = np.nan  # betting needs an IPS-type sum of rewards
                else:
                    low, high = confidence_interval(terms, interval, alpha, n_bootstrap, seed)
                clipped = estimator.policy_clipped_share(inputs)
            except CausalRecError as exc:
                raise type(exc)(f"{estimator.name}: {exc}") from None
            record = {
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
            if selection is not None:
                row = cv_table.loc[repr(estimator)]
                record.update(
                    selected=bool(row["chosen"]),
                    cv_score=float(row["cv_score"]),
                    selection_reason=selection.reason if row["chosen"] else "",
                )
            records.append(record)
        if warn and diagnostics.warning:
            warnings.warn(f"{policy.name}: {diagnostics.warning}", OverlapWarning, stacklevel=2)
        return pd.DataFrame.from_records(records)

    def select(self, policy: Policy) -> EstimatorSelection:
        """Choose the estimator for ``policy`` by off-policy cross-validation.

        Works with any candidate list (``estimators="auto"`` gives :data:`AUTO_CANDIDATES`).
        The validator is DR with the log's cross-fitted reward model, or IPS without one.
        """
        inputs, _ = self.policy_inputs(policy)
        return self._select(inputs, self.all_terms(inputs))

    def all_terms(self, inputs: EvaluationInputs) -> list[EstimatorTerms]:
        """Each estimator's terms, in the order of ``self.estimators`` (repeats included)."""
        terms = []
        for estimator in self.estimators:
            try:
                terms.append(estimator.policy_terms(inputs))
            except CausalRecError as exc:
                raise type(exc)(f"{estimator.name}: {exc}") from None
        return terms

    def _select(
        self, inputs: EvaluationInputs, all_terms: list[EstimatorTerms]
    ) -> EstimatorSelection:
        # A repeated estimator is one candidate (same name, same terms).
        candidates = {
            repr(estimator): terms
            for estimator, terms in zip(self.estimators, all_terms, strict=True)
        }
        validator = DR() if inputs.impressions.has_reward_model else IPS()
        selector = self.selection or OffPolicyCrossValidation()
        return selector.select(
            candidates, validator.policy_terms(inputs), validator_name=repr(validator)
        )
