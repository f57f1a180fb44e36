"""One resolver from what a user names — a saved model directory or a policy spec — to a policy.

``causalrec evaluate --policy``, ``causalrec simulate --policy``, A/B arms and the Serve
evaluator all resolve through :func:`resolve_policy`, so ``causalrec evaluate --policy
runs/tune/best`` works as well as ``--policy oracle``. Named specs are those of
:mod:`causalrec.simulators.policy_spec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from causalrec.methods.artifact import SavedModel, is_saved_model
from causalrec.platform.errors import ConfigError, ForbiddenPathError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.policy import Exploration, Policy
from causalrec.simulators.policy_spec import FILE_SPECS, named_policy
from causalrec.simulators.scm import ConfoundedRecSimulator

__all__ = ["ResolvedPolicy", "resolve_policy"]


@dataclass(frozen=True)
class ResolvedPolicy:
    """A resolved policy and where it came from.

    Attributes:
        spec: What the user named.
        policy: The policy.
        model: The saved model behind it (``None`` for a named policy).
    """

    spec: str
    policy: Policy
    model: SavedModel | None = None

    @property
    def version(self) -> str:
        """The model's version hash (as Serve's ``/model`` reports it), or the policy name."""
        return self.model.version if self.model is not None else self.policy.name


def resolve_policy(
    spec: str,
    *,
    logs: LoggedFeedback | None = None,
    world: ConfoundedRecSimulator | None = None,
    k: int | None = None,
    exploration: Exploration | None = None,
    allow_files: bool = True,
    field: str = "policy",
) -> ResolvedPolicy:
    """The policy named by ``spec``: a saved model directory, else a named policy spec.

    Args:
        spec: A saved model directory, or a spec of :mod:`causalrec.simulators.policy_spec`
            (``uniform``, ``empirical:LOG_DIR``, ``logging``, ``oracle``, ``softmax:T``,
            ``epsilon_greedy:E``).
        logs: The logs the policy will be evaluated on (catalogue and slate size, and their
            simulator for the simulator's specs when ``world`` is not given).
        world: The simulator the policy acts in, if already built (it is reused, not rebuilt).
        k: Slate size of a model's policy (default: the logs' or the world's).
        exploration: How a model's policy explores (default: deterministic top-k).
        allow_files: Whether ``spec`` may name files (model directories, ``empirical:``); a
            server answering HTTP requests refuses them.
        field: The option or field that named ``spec``, for error messages.

    Raises:
        ConfigError: If a model's catalogue differs from the logs' or the world's, ``spec`` is a
            path that holds no saved model, or it is not a known spec (with the closest match).
        ForbiddenPathError: If ``spec`` names files and ``allow_files`` is off.
    """
    if not allow_files:
        if spec.partition(":")[0] in FILE_SPECS or "/" in spec or "\\" in spec:
            raise ForbiddenPathError(
                f"{field}: {spec!r} reads files; this server does not allow it"
            )
        return ResolvedPolicy(spec, named_policy(spec, logs=logs, world=world))
    path = Path(spec)
    if is_saved_model(path):
        model = SavedModel.open(path)
        if world is not None:
            model.check_catalogue(
                field, n_users=world.n_users, n_items=world.n_items, other="the simulator"
            )
        elif logs is not None and model.n_items != logs.n_items:
            raise ConfigError(
                f"{field}: model {spec!r} has n_items={model.n_items}; the log has "
                f"n_items={logs.n_items}"
            )
        if k is None:
            k = logs.slate_size if logs is not None else world.slate_size if world else 1
        policy = model.load().policy(k, exploration or Exploration())
        return ResolvedPolicy(spec, policy, model)
    if path.exists():
        raise ConfigError(f"{field}: {spec!r} is a path but holds no saved model")
    return ResolvedPolicy(spec, named_policy(spec, logs=logs, world=world))
