"""Platform: configuration, storage, the policy protocol, Ray runtime, CLI and job entrypoints.

Everything else in causalrec builds on this subpackage; it imports from no other part.
"""

from causalrec.platform.config import StrictConfig, list_presets, load_preset, load_yaml_config
from causalrec.platform.errors import (
    CausalRecError,
    ConfigError,
    DataError,
    InvalidActionError,
    LogFormatError,
    OutputExistsError,
    UnknownNameError,
)
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.policy import (
    Policy,
    SlateSample,
    SoftmaxPolicy,
    TopKPolicy,
    UniformPolicy,
    UserItemScorer,
)
from causalrec.platform.session import PolicyOnSessions, SessionContext, SessionPolicy
from causalrec.platform.storage import read_logs
from causalrec.platform.units import LongTermValue, PairedLongTermValue, PolicyValue

__all__ = [
    "CausalRecError",
    "ConfigError",
    "DataError",
    "InvalidActionError",
    "LogFormatError",
    "LoggedFeedback",
    "LongTermValue",
    "OutputExistsError",
    "PairedLongTermValue",
    "Policy",
    "PolicyOnSessions",
    "PolicyValue",
    "SessionContext",
    "SessionPolicy",
    "SlateSample",
    "SoftmaxPolicy",
    "StrictConfig",
    "TopKPolicy",
    "UniformPolicy",
    "UnknownNameError",
    "UserItemScorer",
    "list_presets",
    "load_preset",
    "load_yaml_config",
    "read_logs",
]
