"""Off-policy evaluation: how would policy π perform if deployed, from logs another policy made.

Array-level estimators (frozen dataclasses, Open Bandit Pipeline's conventions): :class:`DM`,
:class:`IPS`, :class:`SNIPS`, :class:`DR`, :class:`SNDR`, :class:`SwitchDR`, :class:`DRos`, and for
slates :class:`SlateStandardIPS`, :class:`SlateIndependentIPS`, :class:`SlateRewardInteractionIPS`
and the array-level :class:`SlateCascadeDR`, and for large catalogues :class:`MIPS`, :class:`SNMIPS`
and :class:`OffCEM` (weights over item embeddings or clusters); every family implements one
interface, :class:`Estimator` (its per-round terms from :class:`EvaluationInputs`). For whole
sessions (clicks per session): :class:`PDIS`, :class:`WPDIS`, :class:`SequentialDR`, :class:`WDR` on
session arrays (:mod:`causalrec.ope.sequential`), behind :func:`evaluate_sessions` (a session log
and a policy in; histories rebuilt per step, a Q model by :class:`FittedQEvaluation`). High level:
:func:`evaluate` (a log and a policy in, one row per estimator with interval and diagnostics out),
:class:`OfflineEvaluator` (many policies on one log, reward models fitted once), cross-fitted reward
models (:class:`RewardModelConfig`, :class:`CrossFittedRewardModel`), estimator selection by
off-policy cross-validation (:class:`OffPolicyCrossValidation`, ``estimators="auto"``). Policies to
evaluate are named by :func:`causalrec.methods.policy_spec.resolve_policy` (saved models and policy
specs).
"""

from causalrec.ope.base import Estimator
from causalrec.ope.cascade_dr import SlateCascadeDR
from causalrec.ope.cross_fit import CrossFittedRewardModel
from causalrec.ope.embedding import MIPS, SNMIPS, OffCEM
from causalrec.ope.estimators import DM, DR, IPS, SNDR, SNIPS, DRos, OffPolicyEstimator, SwitchDR
from causalrec.ope.evaluate import DEFAULT_ESTIMATORS, OfflineEvaluator, OverlapWarning, evaluate
from causalrec.ope.evaluate_sessions import SEQUENTIAL_ESTIMATORS, evaluate_sessions
from causalrec.ope.fqe import FittedQEvaluation
from causalrec.ope.inputs import RoundInputs, round_inputs_from_arrays
from causalrec.ope.policy_inputs import EvaluationInputs, RoundDiagnostics
from causalrec.ope.registry import ESTIMATORS, parse_estimator, parse_estimators
from causalrec.ope.reward_model import RewardModelConfig
from causalrec.ope.selection import EstimatorSelection, OffPolicyCrossValidation
from causalrec.ope.sequential import (
    PDIS,
    WDR,
    WPDIS,
    SequentialDR,
    SequentialEstimator,
    sequential_inputs,
)
from causalrec.ope.sessions import LoggedSessions
from causalrec.ope.slate import (
    SlateEstimator,
    SlateIndependentIPS,
    SlateRewardInteractionIPS,
    SlateStandardIPS,
)
from causalrec.ope.slope import DRosTuning, DRTuning, IPSTuning, SwitchDRTuning, TuningResult

__all__ = [
    "DEFAULT_ESTIMATORS",
    "DM",
    "DR",
    "ESTIMATORS",
    "IPS",
    "MIPS",
    "PDIS",
    "SEQUENTIAL_ESTIMATORS",
    "SNDR",
    "SNIPS",
    "SNMIPS",
    "WDR",
    "WPDIS",
    "CrossFittedRewardModel",
    "DRTuning",
    "DRos",
    "DRosTuning",
    "Estimator",
    "EstimatorSelection",
    "EvaluationInputs",
    "FittedQEvaluation",
    "IPSTuning",
    "LoggedSessions",
    "OffCEM",
    "OffPolicyCrossValidation",
    "OffPolicyEstimator",
    "OfflineEvaluator",
    "OverlapWarning",
    "RewardModelConfig",
    "RoundDiagnostics",
    "RoundInputs",
    "SequentialDR",
    "SequentialEstimator",
    "SlateCascadeDR",
    "SlateEstimator",
    "SlateIndependentIPS",
    "SlateRewardInteractionIPS",
    "SlateStandardIPS",
    "SwitchDR",
    "SwitchDRTuning",
    "TuningResult",
    "evaluate",
    "evaluate_sessions",
    "parse_estimator",
    "parse_estimators",
    "round_inputs_from_arrays",
    "sequential_inputs",
]
