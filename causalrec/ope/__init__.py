"""Off-policy evaluation: how would policy π perform if deployed, from logs another policy made.

Array-level estimators (frozen dataclasses, Open Bandit Pipeline's conventions): :class:`DM`,
:class:`IPS`, :class:`SNIPS`, :class:`DR`, :class:`SNDR`, :class:`SwitchDR`, :class:`DRos`, and
for slates :class:`SlateStandardIPS`, :class:`SlateIndependentIPS`,
:class:`SlateRewardInteractionIPS`. High level: :func:`evaluate` (a log and a policy in, one row
per estimator with interval and diagnostics out), :class:`OfflineEvaluator` (many policies on one
log, reward models fitted once), cross-fitted reward models
(:class:`RewardModelConfig`), policy specs (:func:`resolve_policy`, :class:`EmpiricalPolicy`).
"""

from causalrec.ope.estimators import DM, DR, IPS, SNDR, SNIPS, DRos, OffPolicyEstimator, SwitchDR
from causalrec.ope.evaluate import DEFAULT_ESTIMATORS, OfflineEvaluator, OverlapWarning, evaluate
from causalrec.ope.inputs import RoundInputs, round_inputs_from_arrays
from causalrec.ope.policy_spec import EmpiricalPolicy, resolve_policy
from causalrec.ope.registry import ESTIMATORS, parse_estimator, parse_estimators
from causalrec.ope.reward_model import RewardModelConfig
from causalrec.ope.slate import (
    SlateEstimator,
    SlateIndependentIPS,
    SlateRewardInteractionIPS,
    SlateStandardIPS,
)

__all__ = [
    "DEFAULT_ESTIMATORS",
    "DM",
    "DR",
    "ESTIMATORS",
    "IPS",
    "SNDR",
    "SNIPS",
    "DRos",
    "EmpiricalPolicy",
    "OffPolicyEstimator",
    "OfflineEvaluator",
    "OverlapWarning",
    "RewardModelConfig",
    "RoundInputs",
    "SlateEstimator",
    "SlateIndependentIPS",
    "SlateRewardInteractionIPS",
    "SlateStandardIPS",
    "SwitchDR",
    "evaluate",
    "parse_estimator",
    "parse_estimators",
    "resolve_policy",
    "round_inputs_from_arrays",
]
