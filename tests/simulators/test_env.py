"""Tests of the single Gymnasium environment causalrec/ConfoundedRec-v0."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from causalrec.platform.errors import ConfigError, InvalidActionError
from causalrec.simulators import ENV_ID, ConfoundedRecSimulator, SimulatorConfig
from causalrec.simulators.env import ConfoundedRecEnv

SMALL = {"n_users": 200, "n_items": 50, "latent_dim": 8}


@pytest.fixture(scope="module")
def slate_sim() -> ConfoundedRecSimulator:
    return ConfoundedRecSimulator(SimulatorConfig(**SMALL, slate_size=3, session_length=5, seed=1))


def rollout(env: ConfoundedRecEnv, seed: int, n_steps: int) -> list:
    """Reset and step results of ``n_steps`` steps with fixed uniform slates."""
    rng = np.random.default_rng(0)
    obs, info = env.reset(seed=seed)
    steps = [(obs, info)]
    for _ in range(n_steps):
        result = env.step(rng.permutation(env.simulator.n_items)[: env.simulator.slate_size])
        steps.append(result)
        if result[2] or result[3]:
            steps.append(env.reset())
    return steps


def test_check_env_passes_without_warnings():
    env = gym.make(ENV_ID, **SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)


def test_make_applies_overrides():
    env = gym.make(ENV_ID, n_users=30, n_items=12, slate_size=2, render_mode="ansi")
    assert env.unwrapped.config.n_items == 12
    assert env.unwrapped.simulator.n_users == 30
    assert env.action_space == gym.spaces.MultiDiscrete([12, 12])
    assert env.observation_space.shape == (12,)  # 8 user features + 4 nuisance features
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    np.testing.assert_array_equal(obs, env.unwrapped.simulator.user_features_f32[info["user_id"]])
    env.step(np.array([3, 7]))
    assert "slate [3, 7]" in env.render()


def test_single_item_env_has_discrete_space():
    env = ConfoundedRecEnv(**SMALL)
    assert env.action_space == gym.spaces.Discrete(50)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(7)
    assert reward in (0.0, 1.0)
    assert info["clicks"].shape == (1,)
    assert info["examination"].tolist() == [1.0]


def test_same_seed_same_trajectory_and_different_seed_differs(slate_sim):
    def flat(steps):
        return [np.asarray(v).tolist() for step in steps for v in _leaves(step)]

    first = rollout(ConfoundedRecEnv(simulator=slate_sim), seed=7, n_steps=40)
    again = rollout(ConfoundedRecEnv(simulator=slate_sim), seed=7, n_steps=40)
    other = rollout(ConfoundedRecEnv(simulator=slate_sim), seed=8, n_steps=40)
    assert flat(first) == flat(again)
    assert flat(first) != flat(other)


def _leaves(step):
    for value in step:
        if isinstance(value, dict):
            yield from (value[key] for key in sorted(value))
        else:
            yield value


@pytest.mark.parametrize(
    ("action", "match"),
    [
        (np.array([3, 3, 1]), r"slate has duplicate items \[3, 3, 1\]"),
        (np.array([1, 1, 1]), r"duplicate items \[1, 1, 1\]"),
        (np.array([0, 1, 50]), r"action \[0, 1, 50\].*not in the action space"),
        (np.array([-1, 1, 2]), r"action \[-1, 1, 2\]"),
        (np.array([0, 1]), r"shape \(2,\)"),
        (np.array([0.0, 1.0, 2.0]), r"dtype float64"),
        (5, r"action 5 is not in the action space"),
    ],
)
def test_invalid_slate_is_rejected(slate_sim, action, match):
    env = ConfoundedRecEnv(simulator=slate_sim)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=match):
        env.step(action)


@pytest.mark.parametrize(("action", "match"), [(50, "action 50"), (-1, "action -1"), (1.0, "1.0")])
def test_invalid_item_is_rejected(action, match):
    env = ConfoundedRecEnv(**SMALL)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=match):
        env.step(action)


def test_step_before_reset_is_rejected(slate_sim):
    env = ConfoundedRecEnv(simulator=slate_sim)
    with pytest.raises(InvalidActionError, match=r"call reset\(\) before step\(\)"):
        env.step(np.array([0, 1, 2]))


def test_session_is_truncated_after_session_length(slate_sim):
    env = ConfoundedRecEnv(simulator=slate_sim)
    _, info = env.reset(seed=3)
    user = info["user_id"]
    flags = []
    for _ in range(slate_sim.config.session_length):
        _, _, terminated, truncated, info = env.step(np.array([0, 1, 2]))
        assert terminated is False
        assert info["user_id"] == user  # one user per session
        flags.append(truncated)
    assert flags == [False] * 4 + [True]
    with pytest.raises(InvalidActionError, match="session_length=5"):
        env.step(np.array([0, 1, 2]))
    env.reset()
    assert env.step(np.array([0, 1, 2]))[3] is False


def test_session_length_override_reuses_the_simulator(slate_sim):
    env = ConfoundedRecEnv(simulator=slate_sim, session_length=2)
    assert env.simulator is slate_sim and env.session_length == 2
    with pytest.raises(ConfigError, match="n_items=10"):
        ConfoundedRecEnv(simulator=slate_sim, n_items=10)
    with pytest.raises(ConfigError, match="render_mode"):
        ConfoundedRecEnv(simulator=slate_sim, render_mode="human")


def test_info_carries_ground_truth(slate_sim):
    env = ConfoundedRecEnv(simulator=slate_sim)
    _, info = env.reset(seed=11)
    slate = np.array([9, 2, 30])
    _, reward, _, _, info = env.step(slate)
    users = np.array([info["user_id"]])
    expected = slate_sim.expected_reward(users, slate[None, :])[0]
    assert info["expected_reward"] == pytest.approx(expected.sum())
    np.testing.assert_allclose(info["examination"], [1.0, 1 / 2, 1 / 3])
    assert info["clicks"].shape == (3,) and reward == info["clicks"].sum()


def test_mean_reward_under_uniform_slates_matches_policy_value(slate_sim):
    env = ConfoundedRecEnv(simulator=slate_sim)
    L, n_episodes = slate_sim.config.session_length, 3_000
    rng = np.random.default_rng(0)
    # Uniform slates without replacement: the first K items of random permutations.
    slates = np.argsort(rng.random((n_episodes * L, slate_sim.n_items)), axis=1)[:, :3]
    rewards = np.empty(n_episodes * L)
    env.reset(seed=0)
    for t, slate in enumerate(slates):
        _, rewards[t], _, truncated, _ = env.step(slate)
        if truncated:
            env.reset()
    # Steps of one session share a user, so the standard error is over session means.
    session_means = rewards.reshape(n_episodes, L).mean(axis=1)
    se = session_means.std(ddof=1) / np.sqrt(n_episodes)
    truth = slate_sim.policy_value(slate_sim.uniform_policy())
    assert abs(session_means.mean() - truth) < 4 * se
    assert se < 0.1 * truth  # the test has power
