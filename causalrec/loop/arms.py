"""What an arm deploys in a generation: the world's logger, a fixed policy or its own model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from causalrec.loop.config import ArmConfig
from causalrec.methods.artifact import SavedModel
from causalrec.methods.base import Recommender
from causalrec.methods.registry import RECOMMENDERS, make_recommender
from causalrec.platform.errors import ConfigError, UnknownNameError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.session import SessionPolicy, as_session_policy
from causalrec.platform.validation import unknown_name_error
from causalrec.simulators.policy_spec import named_policy
from causalrec.simulators.scm import ConfoundedRecSimulator

__all__ = ["Deployment", "check_arm", "fixed_deployment", "model_deployment", "retrain"]


@dataclass(frozen=True)
class Deployment:
    """The policy an arm serves in one generation.

    Attributes:
        policy: The served policy, acting on sessions.
        version: The saved model's version hash, or the fixed policy's name.
        model: The model behind it (``None`` for a fixed policy).
    """

    policy: SessionPolicy
    version: str
    model: Recommender | None = None


def _params(arm: ArmConfig, seed: int) -> dict[str, Any]:
    params = dict(arm.params)
    if "seed" in RECOMMENDERS[arm.method].param_names():
        params.setdefault("seed", seed)
    if "device" in RECOMMENDERS[arm.method].param_names():
        params.setdefault("device", "cpu")
    return params


def check_arm(arm: ArmConfig) -> None:
    """Refuse an arm whose method or parameters are unknown (before any work is done).

    Raises:
        UnknownNameError: Naming ``arms.NAME.method`` or ``arms.NAME.params.KEY``.
    """
    if arm.method is None:
        return
    try:
        if arm.method not in RECOMMENDERS:
            raise unknown_name_error("method", arm.method, RECOMMENDERS)
        make_recommender(arm.method, **_params(arm, 0))
    except UnknownNameError as exc:
        raise UnknownNameError(f"arms.{arm.name}: {exc}") from None


def fixed_deployment(spec: str, simulator: ConfoundedRecSimulator) -> Deployment:
    """A fixed policy of the world.

    ``logging`` follows the world's popularity (see
    :meth:`~causalrec.simulators.scm.ConfoundedRecSimulator.session_logging_policy`);
    ``uniform`` and ``oracle`` are those of ``causalrec evaluate --policy``.
    """
    if spec == "logging":
        return Deployment(simulator.session_logging_policy(), "logging")
    if spec not in ("uniform", "oracle"):
        raise ConfigError(f"policy must be logging, uniform or oracle; got {spec!r}")
    return Deployment(as_session_policy(named_policy(spec, world=simulator)), spec)


def retrain(arm: ArmConfig, logs: LoggedFeedback, seed: int) -> Recommender:
    """A fresh model of the arm's method fitted on ``logs`` (all the arm's logs so far)."""
    return make_recommender(arm.method, **_params(arm, seed)).fit(logs)


def model_deployment(arm: ArmConfig, model_dir: str | Path, slate_size: int) -> Deployment:
    """The saved model in ``model_dir``, served as the arm says (top-k or exploring)."""
    saved = SavedModel.open(model_dir)
    model = saved.load()
    # A transformer's session policy reads each session's steps; others act on the user id.
    policy = model.session_policy(slate_size, arm.exploration_spec())
    return Deployment(policy, saved.version, model)
