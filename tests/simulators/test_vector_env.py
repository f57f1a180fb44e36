"""Tests of the batched environment behind gym.make_vec(causalrec/ConfoundedRec-v0)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from causalrec.platform.errors import ConfigError, InvalidActionError
from causalrec.simulators import ENV_ID, ConfoundedRecSimulator, SimulatorConfig
from causalrec.simulators.vector_env import ConfoundedRecVectorEnv

SMALL = {"n_users": 200, "n_items": 50, "latent_dim": 8}


@pytest.fixture(scope="module")
def slate_sim() -> ConfoundedRecSimulator:
    return ConfoundedRecSimulator(SimulatorConfig(**SMALL, slate_size=3, session_length=4, seed=2))


def uniform_slates(rng: np.random.Generator, n: int, n_items: int, k: int) -> np.ndarray:
    return np.argsort(rng.random((n, n_items)), axis=1)[:, :k]


def test_make_vec_uses_the_vector_entry_point():
    envs = gym.make_vec(
        ENV_ID, num_envs=8, vectorization_mode="vector_entry_point", **SMALL, session_length=3
    )
    assert isinstance(envs.unwrapped, ConfoundedRecVectorEnv)
    assert envs.num_envs == 8 and envs.unwrapped.config.n_items == 50
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert envs.single_action_space == gym.spaces.Discrete(50)
    assert envs.action_space == gym.spaces.MultiDiscrete([50] * 8)
    obs, info = envs.reset(seed=0)
    assert obs.shape == (8, 12) and obs.dtype == np.float32
    assert envs.observation_space.contains(obs)
    np.testing.assert_array_equal(obs, envs.unwrapped.simulator.user_features_f32[info["user_id"]])
    obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
    assert obs.shape == (8, 12) and envs.observation_space.contains(obs)
    assert reward.shape == (8,) and reward.dtype == np.float64
    assert terminated.shape == truncated.shape == (8,)
    assert terminated.dtype == truncated.dtype == np.bool_
    assert info["expected_reward"].shape == info["user_id"].shape == (8,)
    envs.close()


def test_slate_spaces(slate_sim):
    envs = ConfoundedRecVectorEnv(5, simulator=slate_sim)
    assert envs.single_action_space == gym.spaces.MultiDiscrete([50, 50, 50])
    assert envs.action_space.shape == (5, 3)
    envs.reset(seed=0)
    slates = uniform_slates(np.random.default_rng(0), 5, 50, 3)
    _, reward, _, _, info = envs.step(slates)
    assert set(reward.tolist()) <= {0.0, 1.0, 2.0, 3.0}
    expected = slate_sim.expected_reward(info["user_id"], slates).sum(axis=1)
    np.testing.assert_allclose(info["expected_reward"], expected)


def test_same_seed_same_trajectory_and_different_seed_differs(slate_sim):
    slates = uniform_slates(np.random.default_rng(0), 12 * 16, 50, 3).reshape(12, 16, 3)

    def trajectory(seed: int) -> list[np.ndarray]:
        envs = ConfoundedRecVectorEnv(16, simulator=slate_sim)
        obs, info = envs.reset(seed=seed)
        out = [obs, info["user_id"]]
        for actions in slates:
            obs, reward, terminated, truncated, info = envs.step(actions)
            out += [obs, reward, terminated, truncated, info["expected_reward"], info["user_id"]]
        return out

    first, again, other = trajectory(5), trajectory(5), trajectory(6)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_autoreset_on_the_step_after_truncation(slate_sim):
    L = slate_sim.config.session_length
    envs = ConfoundedRecVectorEnv(64, simulator=slate_sim)
    obs0, info = envs.reset(seed=1)
    users0 = info["user_id"]
    slates = uniform_slates(np.random.default_rng(1), 64, 50, 3)
    for t in range(1, L + 1):
        obs, reward, terminated, truncated, info = envs.step(slates)
        assert not terminated.any()
        assert truncated.all() == (t == L) and truncated.any() == (t == L)
        np.testing.assert_array_equal(info["user_id"], users0)  # same users within a session
        np.testing.assert_array_equal(obs, obs0)
    # The next step starts new sessions: the actions are ignored, rewards are zero.
    obs, reward, terminated, truncated, info = envs.step(slates)
    assert not (terminated.any() or truncated.any())
    assert not reward.any() and not info["expected_reward"].any()
    assert not np.array_equal(info["user_id"], users0)
    np.testing.assert_array_equal(obs, slate_sim.user_features_f32[info["user_id"]])
    # ...and the new sessions again last session_length steps.
    truncations = [envs.step(slates)[3].all() for _ in range(L)]
    assert truncations == [False] * (L - 1) + [True]


@pytest.mark.parametrize(
    ("actions", "match"),
    [
        ({2: [3, 3, 1]}, r"env 2 is \[3, 3, 1\]: slate has duplicate items"),
        ({0: [0, 7, 0]}, r"env 0 is \[0, 7, 0\]: slate has duplicate items"),
        ({4: [1, 2, 50]}, r"env 4 is \[1, 2, 50\]: items must be in \[0, n_items=50\)"),
        ({1: [-1, 2, 3], 3: [60, 2, 3]}, r"env 1 is \[-1, 2, 3\]"),
    ],
)
def test_invalid_slates_name_the_env(slate_sim, actions, match):
    envs = ConfoundedRecVectorEnv(5, simulator=slate_sim)
    envs.reset(seed=0)
    slates = np.tile(np.arange(3), (5, 1))
    for env, slate in actions.items():
        slates[env] = slate
    with pytest.raises(InvalidActionError, match=match):
        envs.step(slates)


@pytest.mark.parametrize(
    ("actions", "match"),
    [
        (np.array([0, 1, 2, 50]), r"env 3 is 50"),
        (np.array([0, -2, 2, 3]), r"env 1 is -2"),
        (np.array([0, 1, 2]), r"shape \(4,\); got int64 of shape \(3,\)"),
        (np.zeros((4, 1), dtype=np.int64), r"got int64 of shape \(4, 1\)"),
        (np.array([0.0, 1.0, 2.0, 3.0]), r"integer array.*got float64"),
    ],
)
def test_invalid_items_are_rejected(actions, match):
    envs = ConfoundedRecVectorEnv(4, **SMALL)
    envs.reset(seed=0)
    with pytest.raises(InvalidActionError, match=match):
        envs.step(actions)


def test_step_before_reset_and_bad_config_are_rejected(slate_sim):
    envs = ConfoundedRecVectorEnv(2, simulator=slate_sim)
    with pytest.raises(InvalidActionError, match=r"call reset\(\) before step\(\)"):
        envs.step(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ConfigError, match="num_envs"):
        ConfoundedRecVectorEnv(0, simulator=slate_sim)
    with pytest.raises(ConfigError, match="slate_size=1"):
        ConfoundedRecVectorEnv(2, simulator=slate_sim, slate_size=1)


def test_mean_reward_under_logging_policy_matches_policy_value(slate_sim):
    L, n_envs, n_sessions = slate_sim.config.session_length, 500, 20
    policy = slate_sim.logging_policy()
    envs = ConfoundedRecVectorEnv(n_envs, simulator=slate_sim)
    _, info = envs.reset(seed=0)
    rng = np.random.default_rng(0)
    rewards = []
    # Each session takes L steps plus one autoreset step (reward 0) before the next begins.
    for step in range(n_sessions * (L + 1)):
        actions = policy.sample(info["user_id"], rng).actions
        _, reward, _, truncated, info = envs.step(actions)
        assert truncated.all() == (step % (L + 1) == L - 1)
        rewards.append(reward)
    sessions = np.asarray(rewards).reshape(n_sessions, L + 1, n_envs)
    assert not sessions[:, L].any()  # autoreset steps
    # Steps of one session share a user, so the standard error is over session means.
    session_means = sessions[:, :L].mean(axis=1).ravel()
    se = session_means.std(ddof=1) / np.sqrt(session_means.size)
    truth = slate_sim.policy_value(policy)
    assert abs(session_means.mean() - truth) < 4 * se
    assert se < 0.05 * truth  # the test has power
