"""Gymnasium interface to the confounded recommender world (``causalrec/ConfoundedRec-v0``)."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from causalrec.platform.errors import ConfigError, InvalidActionError
from causalrec.platform.session import NO_ITEM
from causalrec.simulators.config import SimulatorConfig
from causalrec.simulators.dynamics import SessionState, UserDynamics
from causalrec.simulators.scm import ConfoundedRecSimulator

__all__ = ["ConfoundedRecEnv", "SlateSpace", "action_space"]

#: Config fields that shape the environment only, not the simulated world.
_ENV_ONLY_FIELDS = frozenset({"session_length"})


def _resolve_simulator(
    config: SimulatorConfig | None,
    simulator: ConfoundedRecSimulator | None,
    overrides: dict[str, Any],
) -> tuple[SimulatorConfig, ConfoundedRecSimulator]:
    """Combine a config, a prebuilt simulator and field overrides into one consistent pair.

    Args:
        config: The structural parameters; ``SimulatorConfig()`` (or the simulator's) if ``None``.
        simulator: A prebuilt simulator to reuse; built from the config if ``None``.
        overrides: :class:`SimulatorConfig` fields that replace the config's.

    Returns:
        ``(config, simulator)``; ``config`` may differ from ``simulator.config`` only in fields
        that do not change the world (``session_length``).

    Raises:
        ConfigError: For an invalid field, or a config that does not describe ``simulator``.
    """
    if config is None:
        config = simulator.config if simulator is not None else SimulatorConfig()
    elif not isinstance(config, SimulatorConfig):
        raise ConfigError(f"config must be a SimulatorConfig; got {type(config).__name__}")
    if overrides:
        config = config.replace(**overrides)
    if simulator is None:
        return config, ConfoundedRecSimulator(config)
    world = config.model_dump(exclude=set(_ENV_ONLY_FIELDS))
    built = simulator.config.model_dump(exclude=set(_ENV_ONLY_FIELDS))
    differing = sorted(key for key in world if world[key] != built[key])
    if differing:
        details = ", ".join(f"{k}={world[k]!r} (simulator has {built[k]!r})" for k in differing)
        raise ConfigError(f"config does not match the given simulator: {details}")
    return config, simulator


def _user_feature_space(simulator: ConfoundedRecSimulator) -> spaces.Box:
    """The bounding box of the population's user features (float32)."""
    features = simulator.user_features_f32
    return spaces.Box(features.min(axis=0), features.max(axis=0), dtype=np.float32)


class SlateSpace(spaces.MultiDiscrete):
    """``MultiDiscrete([n_items] * K)`` whose :meth:`sample` draws valid slates (K distinct items).

    Membership stays ``MultiDiscrete``'s: a slate that repeats an item is in the box, and
    ``step`` refuses it with :class:`~causalrec.platform.errors.InvalidActionError`. Sampling
    without a mask draws K distinct items uniformly (ordered), so ``action_space.sample()``, which
    Gymnasium's ``check_env`` and random agents use, never draws a slate the environment refuses.

    Args:
        n_items: Catalogue size.
        slate_size: K >= 2.
        seed: Seed of the space's random stream.
    """

    def __init__(self, n_items: int, slate_size: int, seed: int | None = None):
        super().__init__([n_items] * slate_size, dtype=np.int64, seed=seed)

    def sample(self, mask=None, probability=None) -> np.ndarray:
        """A slate of K distinct items (with ``mask`` or ``probability``: MultiDiscrete's)."""
        if mask is not None or probability is not None:
            return super().sample(mask=mask, probability=probability)
        n_items, slate_size = int(self.nvec[0]), len(self.nvec)
        return self.np_random.choice(n_items, size=slate_size, replace=False).astype(self.dtype)


def action_space(n_items: int, slate_size: int) -> spaces.Discrete | SlateSpace:
    """``Discrete(n_items)`` for K = 1, else a :class:`SlateSpace` of K positions."""
    return spaces.Discrete(n_items) if slate_size == 1 else SlateSpace(n_items, slate_size)


def observation_space(simulator: ConfoundedRecSimulator, session_length: int) -> spaces.Space:
    """The observation space: the user features, plus the session's recent history if dynamic.

    A static world's observation is the ``Box`` of user features. A dynamic world's is a ``Dict``
    with ``user_features`` (that box), ``history_items`` (shape (L, K), int64, item ids of the last
    L slates oldest first, -1 where empty), ``history_clicks`` (``MultiBinary((L, K))``) and
    ``step`` (``Discrete(session_length + 1)``, steps taken).
    """
    features = _user_feature_space(simulator)
    if not simulator.config.dynamic:
        return features
    shape = (simulator.config.history_window, simulator.slate_size)
    return spaces.Dict(
        {
            "user_features": features,
            "history_items": spaces.Box(NO_ITEM, simulator.n_items - 1, shape, dtype=np.int64),
            "history_clicks": spaces.MultiBinary(shape),
            "step": spaces.Discrete(session_length + 1),
        }
    )


def session_observation(simulator: ConfoundedRecSimulator, state: SessionState) -> dict:
    """The ``Dict`` observations of a batch of sessions (arrays with a leading batch axis)."""
    return {
        "user_features": simulator.user_features_f32[state.users],
        "history_items": state.history_items.copy(),
        "history_clicks": state.history_clicks.copy(),
        "step": state.step.copy(),
    }


class ConfoundedRecEnv(gym.Env[np.ndarray | dict[str, Any], np.ndarray | int]):
    """A user session with a recommender, on the confounded structural causal model.

    ## Description

    Each episode is one user u drawn uniformly from the simulator's population. For
    ``session_length`` steps the user sends a request; the agent shows a slate of ``slate_size``
    distinct items and the user clicks each shown item independently with probability
    ``e_k · r_ui`` (position-based model: examination ``e_k = k^(-η)`` times relevance ``r_ui``).
    In a static world relevance is a fixed function of the user's and item's latent traits, so
    every step is a new request from the same user. With the dynamics fields on
    (``interest_drift``, ``satiation``, ``popularity_feedback``, ``leave_base``; see
    :mod:`causalrec.simulators.dynamics`) the session is a real MDP: clicks move the user's
    preference, tire the clicked cluster and feed the item's popularity, and the user may leave.

    ## Action Space

    ``Discrete(n_items)`` when ``slate_size == 1``; otherwise ``MultiDiscrete([n_items] * K)``
    (a :class:`SlateSpace`), the items shown at positions 1..K. A slate must not repeat an item:
    ``action_space.sample()`` draws K distinct items, and invalid actions raise
    :class:`~causalrec.platform.errors.InvalidActionError`.

    ## Observation Space

    Static world: ``Box(low, high, (user_feature_dim + nuisance_feature_dim,), float32)``, the
    observed user features x_u. They reveal only part of the latent preference θ_u and include
    nuisance features. ``low`` and ``high`` are the per-feature minimum and maximum over the user
    population (the features are Gaussian, so the bounds are finite only because the population
    is).

    Dynamic world: a ``Dict`` with ``user_features`` (that box), ``history_items`` (the last
    L = ``history_window`` slates, shape (L, K), int64, oldest first, -1 where the session is
    shorter), ``history_clicks`` (their clicks, ``MultiBinary((L, K))``) and ``step``
    (``Discrete(session_length + 1)``). The latent state (θ_u(t), satiation) stays hidden.

    ## Rewards

    The number of clicks on the slate (a float in [0, K]). ``info`` carries the ground truth:

    * ``"expected_reward"``: Σ_k e_k · r_{u, a_k}, the exact expected number of clicks (float).
    * ``"clicks"``: the clicks per position, shape (K,), ``int8``.
    * ``"examination"``: e_k per position, shape (K,).
    * ``"user_id"``: the id of the session's user (also in ``reset``'s info).
    * ``"leave_probability"``: the chance that the user left after this step (dynamic worlds).

    ## Starting State and Episode End

    ``reset`` draws a user uniformly (and, with popularity feedback, restores the initial
    popularity: the session is its own cohort). A static world's episodes never terminate; a
    dynamic one's terminate when the user leaves. Episodes are truncated after
    ``session_length`` steps (done in the environment itself, no ``TimeLimit`` needed).

    ## Causal Graph

    ``simulator.causal_graph()`` gives the structural causal model (see
    :mod:`causalrec.simulators.scm`). The agent intervenes on exposure, do(exposure := slate),
    which cuts the confounding paths from user traits to exposure that the logged data has.

    ## Arguments

    * ``config``: a :class:`SimulatorConfig` (default ``SimulatorConfig()``).
    * ``simulator``: a prebuilt :class:`ConfoundedRecSimulator` to reuse (building one takes time);
      its config is used when ``config`` is ``None``.
    * ``render_mode``: ``None`` or ``"ansi"``.
    * ``**overrides``: :class:`SimulatorConfig` fields, e.g.
      ``gym.make("causalrec/ConfoundedRec-v0", n_items=50, slate_size=3)``.

    ## Version History

    * v0: initial version

    Example:
        >>> import gymnasium as gym
        >>> import numpy as np
        >>> import causalrec  # registers causalrec/ConfoundedRec-v0
        >>> env = gym.make("causalrec/ConfoundedRec-v0", n_users=100, n_items=20, slate_size=3)
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, obs.dtype
        ((12,), dtype('float32'))
        >>> obs, reward, terminated, truncated, info = env.step(np.array([4, 7, 1]))
        >>> sorted(info)
        ['clicks', 'examination', 'expected_reward', 'user_id']
        >>> 0.0 <= reward <= 3.0, terminated, truncated
        (True, False, False)
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        simulator: ConfoundedRecSimulator | None = None,
        render_mode: str | None = None,
        **overrides: Any,
    ):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(
                f"render_mode must be None or one of {self.metadata['render_modes']}; "
                f"got {render_mode!r}"
            )
        self.config, self.simulator = _resolve_simulator(config, simulator, overrides)
        self.render_mode = render_mode
        self.session_length = self.config.session_length
        n_items, K = self.simulator.n_items, self.simulator.slate_size
        self.observation_space = observation_space(self.simulator, self.session_length)
        self._dynamics = UserDynamics(self.simulator) if self.config.dynamic else None
        self._state: SessionState | None = None
        self.action_space: spaces.Discrete | SlateSpace = action_space(n_items, K)
        self._user: int | None = None
        self._steps = 0
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # (slate, clicks) of last step
        self._ended = False  # the user left (dynamic worlds)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a session with a user drawn uniformly at random.

        Args:
            seed: Seeds ``self.np_random`` (only on the first reset or when given).
            options: Unused.

        Returns:
            ``(observation, info)``; ``info["user_id"]`` is the user's id.
        """
        super().reset(seed=seed)
        self._user = int(self.simulator.sample_users(1, self.np_random)[0])
        self._steps = 0
        self._last = None
        self._ended = False
        if self._dynamics is not None:
            self._state = self._dynamics.start(np.array([self._user]))
        return self._observation(), {"user_id": self._user}

    def step(
        self, action: np.ndarray | int
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Show a slate to the session's user and observe the clicks.

        Args:
            action: An item id (``slate_size == 1``) or item ids of shape (K,) in position order.

        Returns:
            ``(observation, reward, terminated, truncated, info)``; see the class docstring.

        Raises:
            InvalidActionError: If the action is outside the action space, repeats an item, or
                no session is running (``reset`` not called, or the session was truncated).
        """
        if self._user is None:
            raise InvalidActionError("no session is running: call reset() before step()")
        if self._steps >= self.session_length:
            raise InvalidActionError(
                f"the session ended after session_length={self.session_length} steps "
                "(truncated=True): call reset() before step()"
            )
        if self._ended:
            raise InvalidActionError(
                "the user left the session (terminated=True): call reset() before step()"
            )
        slate = self._check_action(action)
        users = np.array([self._user], dtype=np.int64)
        terminated, info = False, {}
        if self._state is None:
            clicks, expected = self.simulator.sample_clicks(users, slate[None, :], self.np_random)
        else:
            expected = self._dynamics.expected_reward(self._state, slate[None, :])
            clicks = (self.np_random.random(expected.shape) < expected).astype(np.int8)
            leave = float(self._dynamics.advance(self._state, slate[None, :], clicks)[0])
            terminated = self._ended = bool(self.np_random.random() < leave)
            info["leave_probability"] = leave
        self._steps += 1
        self._last = (slate, clicks[0])
        info.update(
            {
                "expected_reward": float(expected.sum()),
                "examination": self.simulator.examination.copy(),
                "user_id": self._user,
                "clicks": clicks[0].copy(),
            }
        )
        truncated = not terminated and self._steps >= self.session_length
        return self._observation(), float(clicks.sum()), terminated, truncated, info

    def render(self) -> str | None:
        """Describe the session as text (``render_mode="ansi"``); ``None`` for no render mode."""
        if self.render_mode is None:
            return None
        if self._user is None:
            return "no session (call reset())"
        text = f"user {self._user} | step {self._steps}/{self.session_length}"
        if self._last is not None:
            slate, clicks = self._last
            text += f" | slate {slate.tolist()} | clicks {clicks.tolist()}"
        return text + "\n"

    def _observation(self) -> np.ndarray | dict[str, Any]:
        if self._state is None:
            return self.simulator.user_features_f32[self._user].copy()
        batch = session_observation(self.simulator, self._state)
        return {key: (int(value[0]) if key == "step" else value[0]) for key, value in batch.items()}

    def _check_action(self, action: np.ndarray | int) -> np.ndarray:
        """Return the action as a slate of shape (K,) ``int64``, or raise InvalidActionError."""
        if not self.action_space.contains(action):
            raise InvalidActionError(
                f"action {_describe(action)} is not in the action space {self.action_space}"
            )
        slate = np.asarray(action, dtype=np.int64).reshape(-1)
        if len(slate) > 1 and len(np.unique(slate)) < len(slate):
            raise InvalidActionError(f"slate has duplicate items {slate.tolist()}")
        return slate


def _describe(action: object) -> str:
    if isinstance(action, np.ndarray):
        return f"{action.tolist()!r} (dtype {action.dtype}, shape {action.shape})"
    return repr(action)
