"""causalrec: causal (debiased) recommendation.

Simulators with confounded exposure and exact ground truth (`causalrec.simulators`), debiasing
recommenders (`causalrec.methods`), off-policy evaluation (`causalrec.ope`), search with Ray Tune
(`causalrec.tuning`), serving with Ray Serve (`causalrec.serve`), all on top of
`causalrec.platform` (config, storage, Ray runtime, CLI).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("causalrec")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

#: Gymnasium id of :class:`causalrec.simulators.ConfoundedRecEnv`.
ENV_ID = "causalrec/ConfoundedRec-v0"

__all__ = ["ENV_ID", "__version__", "register_envs"]


def register_envs() -> None:
    """Register causalrec's Gymnasium environments; called by ``import causalrec``.

    The entry points are strings, so registering imports neither the simulators nor torch; they
    load on the first ``gymnasium.make``. Calling it again does nothing (Gymnasium warns when an
    id is registered twice). This is the only place the environments are registered.
    """
    from gymnasium.envs.registration import register, registry

    if ENV_ID not in registry:
        register(
            id=ENV_ID,
            entry_point="causalrec.simulators.env:ConfoundedRecEnv",
            vector_entry_point="causalrec.simulators.vector_env:ConfoundedRecVectorEnv",
            max_episode_steps=None,
        )


register_envs()
