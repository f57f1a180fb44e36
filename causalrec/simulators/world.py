"""The world behind a log: rebuild the simulator that wrote simulated logs from their metadata."""

from __future__ import annotations

from causalrec.platform.errors import ConfigError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.simulators.config import SimulatorConfig
from causalrec.simulators.scm import ConfoundedRecSimulator

__all__ = ["is_simulated", "simulator_from_logs"]


def is_simulated(logs: LoggedFeedback) -> bool:
    """Whether ``logs`` were written by a simulator (their metadata records its config)."""
    return bool(logs.metadata.get("simulator"))


def simulator_from_logs(logs: LoggedFeedback) -> ConfoundedRecSimulator:
    """The simulator that wrote ``logs``, rebuilt from their metadata (simulated logs only).

    Raises:
        ConfigError: If the logs are real (their metadata has no simulator config), or the
            recorded config is invalid.
    """
    config = logs.metadata.get("simulator")
    if not config:
        raise ConfigError("these logs are not simulated: their metadata has no simulator config")
    return ConfoundedRecSimulator(SimulatorConfig.from_dict(config, source="log metadata"))
