"""A batched Gymnasium interface to the confounded recommender world, stepped in numpy."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from causalrec.platform.errors import ConfigError, InvalidActionError
from causalrec.simulators.config import SimulatorConfig
from causalrec.simulators.dynamics import SessionState, UserDynamics
from causalrec.simulators.env import (
    _resolve_simulator,
    action_space,
    observation_space,
    session_observation,
)
from causalrec.simulators.scm import ConfoundedRecSimulator

__all__ = ["ConfoundedRecVectorEnv"]


class ConfoundedRecVectorEnv(VectorEnv[np.ndarray | dict, np.ndarray, np.ndarray]):
    """``num_envs`` copies of :class:`~causalrec.simulators.env.ConfoundedRecEnv` in one array.

    All sub-environments are stepped at once with array operations (no Python loop over them)
    and share one random generator, ``self.np_random``. The dynamics, spaces and reward of each
    sub-environment are those of ``ConfoundedRecEnv``; see its docstring for the spec card.

    Autoreset follows Gymnasium's default, ``AutoresetMode.NEXT_STEP``: the step after a
    sub-environment's session is truncated starts a new session there (a new user) and ignores
    that sub-environment's action; its reward is 0 and ``terminated``/``truncated`` are False.

    ``info`` holds arrays of shape (num_envs,): ``"expected_reward"`` (Σ_k e_k · r_{u, a_k} of
    the shown slate, 0 on autoreset steps) and ``"user_id"`` (the user after the step; ``reset``'s
    info has it too); dynamic worlds add ``"leave_probability"``.

    In a dynamic world the observations are the ``Dict`` of
    :func:`~causalrec.simulators.env.observation_space` with a leading ``num_envs`` axis, a
    sub-environment terminates when its user leaves, and the ``num_envs`` sessions are one cohort
    of the world: their clicks move one shared popularity, which persists across autoresets and
    returns to the initial popularity only on ``reset()``.

    Args:
        num_envs: Number of sub-environments.
        config: The structural parameters; ``SimulatorConfig()`` (or the simulator's) if ``None``.
        simulator: A prebuilt :class:`ConfoundedRecSimulator` to reuse.
        **overrides: :class:`SimulatorConfig` fields that replace the config's.

    Example:
        >>> import gymnasium as gym
        >>> import numpy as np
        >>> import causalrec  # registers causalrec/ConfoundedRec-v0
        >>> envs = gym.make_vec("causalrec/ConfoundedRec-v0", num_envs=4,
        ...                     vectorization_mode="vector_entry_point", n_users=100, n_items=20)
        >>> obs, info = envs.reset(seed=0)
        >>> obs.shape
        (4, 12)
        >>> obs, reward, terminated, truncated, info = envs.step(np.array([0, 1, 2, 3]))
        >>> reward.shape, sorted(info)
        ((4,), ['expected_reward', 'user_id'])
    """

    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": [],
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        num_envs: int,
        config: SimulatorConfig | None = None,
        *,
        simulator: ConfoundedRecSimulator | None = None,
        **overrides: Any,
    ):
        if isinstance(num_envs, bool) or not isinstance(num_envs, int | np.integer) or num_envs < 1:
            raise ConfigError(f"num_envs must be a positive integer; got {num_envs!r}")
        self.config, self.simulator = _resolve_simulator(config, simulator, overrides)
        self.num_envs = int(num_envs)
        self.session_length = self.config.session_length
        self.n_items, self.slate_size = self.simulator.n_items, self.simulator.slate_size
        n_features = self.simulator.user_features_f32.shape[1]
        self.single_observation_space = observation_space(self.simulator, self.session_length)
        self._dynamics = UserDynamics(self.simulator) if self.config.dynamic else None
        self._state: SessionState | None = None
        self.single_action_space = action_space(self.n_items, self.slate_size)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._action_shape = self.action_space.shape
        self._users: np.ndarray | None = None  # (num_envs,) current user per sub-environment
        self._obs = np.zeros((self.num_envs, n_features), dtype=np.float32)
        self._steps = np.zeros(self.num_envs, dtype=np.int64)
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new session in every sub-environment.

        Args:
            seed: Seeds ``self.np_random`` (only on the first reset or when given).
            options: Unused.

        Returns:
            Observations of shape (num_envs, n_features) and ``{"user_id": (num_envs,)}``.
        """
        super().reset(seed=seed)
        self._users = self.simulator.sample_users(self.num_envs, self.np_random)
        self._steps[:] = 0
        self._needs_reset[:] = False
        if self._dynamics is not None:
            self._state = self._dynamics.start(self._users.copy())
            return session_observation(self.simulator, self._state), {"user_id": self._users.copy()}
        np.take(self.simulator.user_features_f32, self._users, axis=0, out=self._obs)
        return self._obs.copy(), {"user_id": self._users.copy()}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Show one slate per sub-environment.

        Args:
            actions: Item ids, shape (num_envs,) when ``slate_size == 1``, else (num_envs, K).

        Returns:
            ``(observations, rewards, terminated, truncated, info)``, each with a leading
            ``num_envs`` axis.

        Raises:
            InvalidActionError: For actions of the wrong shape or dtype, out of range items or
                slates with duplicates (naming the first offending sub-environment), or a call
                before ``reset``.
        """
        if self._users is None:
            raise InvalidActionError("no sessions are running: call reset() before step()")
        slates = self._check_actions(actions)
        if self._state is not None:
            return self._step_dynamic(slates)
        clicks, expected = self.simulator.sample_clicks(self._users, slates, self.np_random)
        if self.slate_size == 1:
            rewards = clicks[:, 0].astype(np.float64)
            expected_reward = expected[:, 0]
        else:
            rewards = clicks.sum(axis=1, dtype=np.float64)
            expected_reward = expected.sum(axis=1)
        self._steps += 1

        restart = np.flatnonzero(self._needs_reset)
        if len(restart):
            users = self.simulator.sample_users(len(restart), self.np_random)
            self._users[restart] = users
            self._obs[restart] = self.simulator.user_features_f32[users]
            self._steps[restart] = 0
            rewards[restart] = 0.0
            expected_reward[restart] = 0.0

        truncated = self._steps >= self.session_length
        self._needs_reset[:] = truncated
        info = {"expected_reward": expected_reward, "user_id": self._users.copy()}
        terminated = np.zeros(self.num_envs, dtype=bool)
        return self._obs.copy(), rewards, terminated, truncated, info

    def _step_dynamic(
        self, slates: np.ndarray
    ) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """One step of a dynamic world: outcome, transition, leaving, then autoreset."""
        state, dynamics = self._state, self._dynamics
        expected = dynamics.expected_reward(state, slates)
        clicks = (self.np_random.random(expected.shape) < expected).astype(np.int8)
        restart = np.flatnonzero(self._needs_reset)
        clicks[restart] = 0  # the action of an autoreset step is ignored
        leave = dynamics.advance(state, slates, clicks)
        terminated = self.np_random.random(self.num_envs) < leave
        rewards = clicks.sum(axis=1, dtype=np.float64)
        expected_reward = expected.sum(axis=1)
        self._steps += 1
        if len(restart):
            users = self.simulator.sample_users(len(restart), self.np_random)
            self._users[restart] = users
            dynamics.restart(state, restart, users)
            self._steps[restart] = 0
            expected_reward[restart] = leave[restart] = 0.0
            terminated[restart] = False
        truncated = ~terminated & (self._steps >= self.session_length)
        self._needs_reset[:] = terminated | truncated
        info = {
            "expected_reward": expected_reward,
            "user_id": self._users.copy(),
            "leave_probability": leave,
        }
        return session_observation(self.simulator, state), rewards, terminated, truncated, info

    def _check_actions(self, actions: np.ndarray) -> np.ndarray:
        """Return the actions as slates of shape (num_envs, K), or raise InvalidActionError."""
        actions = np.asarray(actions)
        if actions.shape != self._action_shape or actions.dtype.kind not in "iu":
            raise InvalidActionError(
                f"actions must be an integer array of shape {self._action_shape}; got "
                f"{actions.dtype} of shape {actions.shape}"
            )
        if actions.min() < 0 or actions.max() >= self.n_items:
            bad = (actions < 0) | (actions >= self.n_items)
            env = int(np.flatnonzero(bad.reshape(self.num_envs, -1).any(axis=1))[0])
            raise InvalidActionError(
                f"action of env {env} is {actions[env].tolist()}: items must be in "
                f"[0, n_items={self.n_items})"
            )
        if self.slate_size == 1:
            return actions[:, None]
        ordered = np.sort(actions, axis=1)
        duplicated = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
        if duplicated.any():
            env = int(np.flatnonzero(duplicated)[0])
            raise InvalidActionError(
                f"action of env {env} is {actions[env].tolist()}: slate has duplicate items"
            )
        return actions
