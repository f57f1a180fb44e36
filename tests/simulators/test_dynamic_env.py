"""The Gymnasium environments of a dynamic world: Dict observations, leaving, autoreset."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from causalrec.platform.errors import InvalidActionError
from causalrec.simulators import ENV_ID, ConfoundedRecVectorEnv
from causalrec.simulators.env import ConfoundedRecEnv

SMALL = {"n_users": 200, "n_items": 50, "latent_dim": 8, "history_window": 3}
DYNAMIC = {"interest_drift": 0.1, "satiation": 0.5, "popularity_feedback": 0.1, "leave_base": 0.2}


@pytest.mark.parametrize("slate_size", [1, 3])
def test_check_env_passes_with_dynamics_on(slate_size):
    env = gym.make(ENV_ID, **SMALL, **DYNAMIC, slate_size=slate_size)
    assert isinstance(env.observation_space, gym.spaces.Dict)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)


def test_the_action_spaces_sample_only_slates_the_env_accepts():
    """Gymnasium's check_env and random agents step ``action_space.sample()``: with 10 items and
    K = 3 a plain MultiDiscrete repeats an item in 28% of draws, which the env refuses (the
    check_env test above failed on one such draw in 2026-12)."""
    env = ConfoundedRecEnv(**{**SMALL, "n_items": 10}, slate_size=3)
    env.reset(seed=0)
    env.action_space.seed(0)
    slates = np.array([env.action_space.sample() for _ in range(2_000)])
    assert all(len(set(slate)) == 3 for slate in slates)
    assert all(env.action_space.contains(slate) for slate in slates[:50])
    assert len({tuple(slate) for slate in slates}) > 500  # ordered draws over 720 slates
    for slate in slates[:20]:
        _, _, terminated, truncated, _ = env.step(slate)  # never refused
        if terminated or truncated:
            env.reset()
    vector = ConfoundedRecVectorEnv(num_envs=4, **{**SMALL, "n_items": 10}, slate_size=3)
    vector.single_action_space.seed(1)
    assert all(len(set(vector.single_action_space.sample())) == 3 for _ in range(500))


def test_observation_holds_the_recent_slates_and_clicks():
    env = ConfoundedRecEnv(**SMALL, satiation=0.5, slate_size=2, session_length=6)
    obs, info = env.reset(seed=3)
    assert (obs["history_items"] == -1).all() and obs["step"] == 0
    np.testing.assert_array_equal(
        obs["user_features"], env.simulator.user_features_f32[info["user_id"]]
    )
    shown = []
    for t in range(4):
        slate = np.array([2 * t, 2 * t + 1])
        obs, reward, terminated, _, info = env.step(slate)
        shown.append((slate, info["clicks"]))
        assert env.observation_space.contains(obs)
        assert obs["step"] == t + 1 and reward == info["clicks"].sum()
        assert not terminated  # leave_base is 0
    for lag in (1, 2, 3):
        np.testing.assert_array_equal(obs["history_items"][-lag], shown[-lag][0])
        np.testing.assert_array_equal(obs["history_clicks"][-lag], shown[-lag][1])


def test_a_user_who_leaves_terminates_the_episode():
    env = ConfoundedRecEnv(**SMALL, leave_base=1.0)
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step(4)
    assert terminated and not truncated and info["leave_probability"] == 1.0
    with pytest.raises(InvalidActionError, match="left the session"):
        env.step(4)
    env.reset()
    env.step(4)


def test_static_worlds_keep_the_box_observation():
    env = ConfoundedRecEnv(**SMALL)
    assert isinstance(env.observation_space, gym.spaces.Box)


def test_vector_env_with_dynamics_terminates_and_autoresets():
    envs = ConfoundedRecVectorEnv(16, **SMALL, **{**DYNAMIC, "leave_base": 1.0})
    obs, info = envs.reset(seed=1)
    assert obs["history_items"].shape == (16, 3, 1) and (obs["step"] == 0).all()
    actions = np.arange(16) % 50
    obs, rewards, terminated, truncated, info = envs.step(actions)
    assert terminated.all() and not truncated.any()
    assert (obs["history_items"][:, -1, 0] == actions).all() and (obs["step"] == 1).all()
    # Next step: every sub-environment starts a new session and ignores its action.
    obs, rewards, terminated, truncated, info = envs.step(actions)
    assert (rewards == 0).all() and not terminated.any() and not truncated.any()
    assert (obs["history_items"] == -1).all() and (obs["step"] == 0).all()
    assert (info["expected_reward"] == 0).all()


def test_vector_env_sessions_share_one_popularity():
    envs = ConfoundedRecVectorEnv(32, **SMALL, popularity_feedback=0.2, global_bias=2.0)
    envs.reset(seed=0)
    before = envs._state.popularity.copy()
    _, rewards, *_ = envs.step(np.full(32, 7))
    assert rewards.sum() > 0 and envs._state.popularity.shape == (1, 50)
    expected = 0.8 * before[0] + 0.2 * np.eye(50)[7]
    np.testing.assert_allclose(envs._state.popularity[0], expected, rtol=1e-12)


def test_vector_env_truncates_after_the_session_length():
    envs = ConfoundedRecVectorEnv(4, **SMALL, satiation=0.3, session_length=2)
    envs.reset(seed=0)
    assert not envs.step(np.arange(4))[3].any()
    assert envs.step(np.arange(4))[3].all()
