"""The one interface every off-policy estimator family implements, and :func:`evaluate` calls.

A family declares what it needs from a log and a target policy — a reward model
(:attr:`Estimator.needs_reward_model`) and which propensities its weights use
(:attr:`Estimator.pscore_kind`) — and computes its per-round terms from one
:class:`~causalrec.ope.policy_inputs.EvaluationInputs`. :class:`~causalrec.ope.OfflineEvaluator`
then treats every family alike: it fits the reward model if any estimator needs one, builds the
inputs once per policy, and turns each estimator's terms into an estimate and an interval.

Families: the standard estimators (:class:`~causalrec.ope.OffPolicyEstimator`: DM, IPS, DR ...,
per impression) and the slate estimators (:class:`~causalrec.ope.SlateEstimator`, per slate).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from causalrec.ope.intervals import EstimatorTerms
    from causalrec.ope.policy_inputs import EvaluationInputs

__all__ = ["PSCORE_KINDS", "Estimator"]

#: Propensities an estimator's weights may use: the logged item at its position, per impression
#: (logged or estimated pscore, the standard estimators), or a slate's whole-slate, item–position
#: marginal or prefix probabilities (both policies', the slate estimators).
PSCORE_KINDS = ("impression", "joint", "marginal", "prefix")


@dataclass(frozen=True)
class Estimator(abc.ABC):
    """Base of every off-policy estimator: what it needs, and its terms on a log.

    Subclasses are frozen dataclasses whose fields are their hyperparameters. To be evaluated
    by :func:`causalrec.ope.evaluate`, a subclass sets :attr:`name` and implements
    :meth:`policy_terms`; the class variables below declare what it needs.
    """

    #: Short name used in tables and on the command line.
    name: ClassVar[str]
    #: Whether the estimator needs the cross-fitted reward model q̂ (its q̂ terms are then in
    #: ``inputs.impressions``; without a reward model the estimator is dropped or rejected).
    needs_reward_model: ClassVar[bool] = False
    #: Which propensities its weights use, one of :data:`PSCORE_KINDS`.
    pscore_kind: ClassVar[str] = "impression"
    #: Whether its estimate is the plain mean of its per-round contributions, so that
    #: :meth:`~causalrec.ope.OfflineEvaluator.difference` may pair two policies round by round.
    supports_difference: ClassVar[bool] = False

    @abc.abstractmethod
    def policy_terms(self, inputs: EvaluationInputs) -> EstimatorTerms:
        """Per-round terms of the target policy's value, in clicks per round.

        Args:
            inputs: The log, the target policy and their per-impression inputs.

        Returns:
            Terms over the log's ``inputs.n_rounds`` rounds (the independent units of the
            intervals), so that ``terms.value()`` is the estimate in clicks per round.
        """

    def policy_clipped_share(self, inputs: EvaluationInputs) -> float:
        """Share of weights this estimator clips, switches or shrinks away (0 if none)."""
        return 0.0
