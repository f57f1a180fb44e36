"""What an A/B arm serves: a saved model or a named policy of the simulator's world."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from causalrec.methods.registry import load_recommender, read_model_manifest
from causalrec.ope.policy_spec import resolve_policy
from causalrec.platform.errors import ConfigError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.policy import Policy
from causalrec.serve.recommender import model_version

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


def resolve_arm(label: str, spec: str, logs: LoggedFeedback, simulator) -> Arm:
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
    path = Path(spec)
    if (path / "manifest.json").is_file():
        manifest = read_model_manifest(path)
        for key, expected in (("n_users", simulator.n_users), ("n_items", simulator.n_items)):
            if manifest[key] != expected:
                raise ConfigError(
                    f"--{label}: model {spec!r} has {key}={manifest[key]}; the simulator behind "
                    f"the logs has {key}={expected}"
                )
        policy = load_recommender(path).policy(simulator.slate_size)
        return Arm(label, spec, policy, str(path.absolute()), model_version(path))
    if path.exists():
        raise ConfigError(f"--{label}: {spec!r} is a path but holds no saved model")
    try:
        policy = resolve_policy(spec, logs, simulator)
    except ConfigError as exc:
        raise ConfigError(
            f"--{label}: {spec!r} is neither a saved model directory nor a policy spec ({exc})"
        ) from None
    return Arm(label, spec, policy, None, policy.name)
