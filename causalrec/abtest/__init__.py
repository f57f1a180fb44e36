"""Simulated A/B tests: online lift from simulated users vs. the offline (OPE) prediction.

Users are split by a salted hash of their id (the same split the Serve ingress applies), each
arm is a saved model or a named policy, clicks come from the simulator, and the online lift is
set beside its exact value and the off-policy estimate from historical logs.
"""

from causalrec.abtest.arms import Arm, resolve_arm
from causalrec.abtest.runner import ABTestResult, run_abtest
from causalrec.abtest.statistics import ArmOutcome, LiftEstimate, arm_outcome, compare_arms

__all__ = [
    "ABTestResult",
    "Arm",
    "ArmOutcome",
    "LiftEstimate",
    "arm_outcome",
    "compare_arms",
    "resolve_arm",
    "run_abtest",
]
