"""What an A/B arm serves: a saved model or a named policy of the simulator's world."""

from __future__ import annotations

from dataclasses import dataclass

from causalrec.methods.policy_spec import resolve_policy
from causalrec.platform.errors import ConfigError, UnknownNameError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.policy import Policy
from causalrec.simulators.scm import ConfoundedRecSimulator

__all__ = ["Arm", "resolve_arm"]


@dataclass(frozen=True)
class Arm:
    """One arm of an experiment.

    Attributes:
        label: ``a`` or ``b``.
        spec: What the user named: a model directory or a policy spec.
        policy: The policy the arm serves (deterministic top-k for a model, as ``/recommend``
            serves it with ``exploration: none``).
        model_dir: The model directory (``None`` for a named policy).
        version: The model's version hash (as ``/model`` reports it), or the policy name.
    """

    label: str
    spec: str
    policy: Policy
    model_dir: str | None
    version: str


def resolve_arm(
    label: str, spec: str, logs: LoggedFeedback, simulator: ConfoundedRecSimulator
) -> Arm:
    """The arm named by ``spec``: a saved model directory, else a policy spec.

    Policy specs are those of ``causalrec evaluate --policy`` (``logging``, ``oracle``,
    ``uniform``, ``softmax:T``, ``epsilon_greedy:E``, ``empirical:LOG_DIR``).

    Args:
        label: The arm (``a`` or ``b``), used in error messages as ``--a`` / ``--b``.
        spec: The model directory or policy spec.
        logs: The historical logs (catalogue size, slate size).
        simulator: The world the logs come from.

    Raises:
        ConfigError: If a model does not serve the simulator's catalogue, or the spec is neither
            a model directory nor a known policy (naming ``--a`` / ``--b``).
    """
    field = f"--{label}"
    try:
        resolved = resolve_policy(
            spec, logs=logs, world=simulator, k=simulator.slate_size, field=field
        )
    except UnknownNameError as exc:
        raise ConfigError(
            f"{field}: {spec!r} is neither a saved model directory nor a policy spec ({exc})"
        ) from None
    model_dir = str(resolved.model.path) if resolved.model is not None else None
    return Arm(label, spec, resolved.policy, model_dir, resolved.version)
