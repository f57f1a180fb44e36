"""Sequential estimators against the exact value of a small MDP (dynamic programming).

The MDP: 2 states, 3 actions, 3 steps, a Bernoulli click per step; its exact value under any
policy comes from backward induction, and the expectation of an estimator under the logger by
enumerating all 3,456 logged trajectories with their probabilities.
"""

import itertools

import numpy as np
import pytest

from causalrec.ope.sequential import PDIS, WDR, WPDIS, SequentialDR, sequential_inputs
from causalrec.platform.errors import ConfigError, DataError

S, A, T = 2, 3, 3
RNG = np.random.default_rng(7)
START = np.array([0.6, 0.4])
TRANSITION = RNG.dirichlet(np.ones(S), size=(S, A))  # (s, a) -> s'
CLICK = RNG.uniform(0.05, 0.6, size=(S, A))
LOGGER = np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
TARGET = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
Q_HAT = RNG.uniform(0, 1, size=(T, S, A))  # any Q model: DR stays unbiased


def exact_value(policy, gamma):
    value = np.zeros(S)
    for _ in range(T):
        q = CLICK + gamma * TRANSITION @ value
        value = (policy * q).sum(axis=1)
    return float(START @ value)


def arrays(states, actions, rewards, policy=TARGET, q_hat=True):
    """Flat estimator arrays of sessions given as (n, T) states, actions and rewards."""
    flat_states, flat_actions = states.ravel(), actions.ravel()
    steps = np.tile(np.arange(T), len(states))
    out = {
        "step_per_episode": T,
        "action": flat_actions,
        "reward": rewards.ravel().astype(float),
        "pscore": LOGGER[flat_states, flat_actions],
        "evaluation_policy_action_dist": policy[flat_states],
    }
    if q_hat:
        out["state_action_value_prediction"] = Q_HAT[steps, flat_states]
    return out


def all_trajectories():
    """Every logged trajectory and its probability under the logger."""
    states, actions, rewards, probabilities = [], [], [], []
    step = list(itertools.product(range(A), range(2), range(S)))  # action, click, next state
    for s0 in range(S):
        for path in itertools.product(step, repeat=T):
            s, p, row = s0, START[s0], ([], [], [])
            for a, r, nxt in path:
                p *= LOGGER[s, a] * (CLICK[s, a] if r else 1 - CLICK[s, a])
                p *= TRANSITION[s, a, nxt]
                for column, value in zip(row, (s, a, r), strict=True):
                    column.append(value)
                s = nxt
            states.append(row[0]), actions.append(row[1]), rewards.append(row[2])
            probabilities.append(p)
    return np.array(states), np.array(actions), np.array(rewards), np.array(probabilities)


def sample(n, seed):
    """``n`` sessions logged by the logger: (n, T) states, actions, rewards."""
    rng = np.random.default_rng(seed)
    states, actions, rewards = (np.zeros((n, T), dtype=np.int64) for _ in range(3))
    s = (rng.random(n) < START[1]).astype(np.int64)
    for t in range(T):
        a = (rng.random((n, 1)) > LOGGER[s].cumsum(axis=1)).sum(axis=1)
        r = (rng.random(n) < CLICK[s, a]).astype(np.int64)
        states[:, t], actions[:, t], rewards[:, t] = s, a, r
        s = (rng.random(n) < TRANSITION[s, a, 1]).astype(np.int64)
    return states, actions, rewards


@pytest.mark.parametrize("gamma", [1.0, 0.8])
@pytest.mark.parametrize("estimator", [PDIS, SequentialDR])
def test_pdis_and_dr_are_exactly_unbiased(estimator, gamma):
    states, actions, rewards, probability = all_trajectories()
    assert probability.sum() == pytest.approx(1.0, abs=1e-12)
    inputs = sequential_inputs(**arrays(states, actions, rewards))
    per_session = estimator(gamma=gamma).terms(inputs).plain
    assert probability @ per_session == pytest.approx(exact_value(TARGET, gamma), abs=1e-12)


def test_the_exact_q_model_gives_dr_a_smaller_standard_error_than_pdis():
    """(Any Q model leaves DR unbiased: the enumeration test above.)"""
    states, actions, rewards = sample(20_000, seed=1)
    truth = exact_value(TARGET, 1.0)
    pdis = PDIS().terms(sequential_inputs(**arrays(states, actions, rewards, q_hat=False)))
    exact_q = np.zeros((T, S, A))
    value = np.zeros(S)
    for t in reversed(range(T)):
        exact_q[t] = CLICK + TRANSITION @ value
        value = (TARGET * exact_q[t]).sum(axis=1)
    flat = arrays(states, actions, rewards)
    flat["state_action_value_prediction"] = exact_q[np.tile(np.arange(T), len(states)),
                                                    states.ravel()]  # fmt: skip
    dr = SequentialDR().terms(sequential_inputs(**flat))
    assert abs(dr.value() - truth) < 4 * dr.standard_error()
    assert dr.standard_error() < pdis.standard_error()


@pytest.mark.parametrize("estimator", [WPDIS, WDR])
def test_the_weighted_forms_are_consistent(estimator):
    states, actions, rewards = sample(100_000, seed=2)
    terms = estimator().terms(sequential_inputs(**arrays(states, actions, rewards)))
    assert abs(terms.value() - exact_value(TARGET, 1.0)) < 4 * terms.standard_error()


def test_on_policy_wpdis_is_the_mean_discounted_return():
    states, actions, rewards = sample(500, seed=3)
    flat = arrays(states, actions, rewards, policy=LOGGER, q_hat=False)
    expected = (rewards * 0.9 ** np.arange(T)).sum(axis=1).mean()
    assert WPDIS(gamma=0.9).estimate(**flat) == pytest.approx(expected, rel=1e-12)
    assert PDIS(gamma=0.9).estimate(**flat) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("estimator", [PDIS, WPDIS, SequentialDR, WDR])
def test_normal_intervals_cover_the_exact_value(estimator):
    """200 logs of 400 sessions: the 95% interval covers the exact value 88-99% of the time."""
    truth = exact_value(TARGET, 1.0)
    covered = 0
    for seed in range(200):
        low, high = estimator().interval(**arrays(*sample(400, seed=100 + seed)))
        covered += low <= truth <= high
    assert 176 <= covered <= 198, covered


def test_bootstrap_interval_is_close_to_the_normal_one_on_a_large_log():
    flat = arrays(*sample(5_000, seed=4))
    normal = SequentialDR().interval(**flat)
    boot = SequentialDR().interval(**flat, method="bootstrap", n_bootstrap=300, seed=0)
    width = normal[1] - normal[0]
    assert abs(boot[0] - normal[0]) < 0.1 * width and abs(boot[1] - normal[1]) < 0.1 * width


def test_padded_steps_of_a_session_that_ended_change_nothing():
    states, actions, rewards = sample(300, seed=5)
    rewards[:100, 2] = 0  # sessions 0..99 ended after step 1: padded at step 2
    mask = np.ones((300, T), dtype=bool)
    mask[:100, 2] = False
    flat = arrays(states, actions, rewards)
    masked = dict(flat, step_mask=mask.ravel())
    short = {  # the same sessions with their padded step's action made improbable
        **masked, "pscore": np.where(mask.ravel(), flat["pscore"], 1e-9)}  # fmt: skip
    for estimator in (PDIS(), WPDIS(), SequentialDR(), WDR()):
        assert estimator.estimate(**masked) == pytest.approx(estimator.estimate(**short), 1e-12)
    for estimator in (WPDIS(), SequentialDR(), WDR()):  # the padded step's weight and Q̂ count
        assert estimator.estimate(**masked) != pytest.approx(estimator.estimate(**flat), 1e-6)


def test_bad_inputs_name_the_field():
    flat = arrays(*sample(10, seed=6))
    with pytest.raises(DataError, match="multiple of step_per_episode=4"):
        PDIS().estimate(**dict(flat, step_per_episode=4))
    with pytest.raises(DataError, match=r"pscore must be in \(0, 1\]"):
        PDIS().estimate(**dict(flat, pscore=np.zeros(30)))
    with pytest.raises(DataError, match="row 0 sums to"):
        PDIS().estimate(**dict(flat, evaluation_policy_action_dist=np.ones((30, A))))
    with pytest.raises(DataError, match="dr needs state_action_value_prediction"):
        SequentialDR().estimate(**dict(flat, state_action_value_prediction=None))
    with pytest.raises(DataError, match=r"action must be in \[0, n_actions=3\)"):
        PDIS().estimate(**dict(flat, action=np.full(30, 3)))
    with pytest.raises(DataError, match="reward must be 0 on padded steps"):
        PDIS().estimate(**dict(flat, reward=np.ones(30), step_mask=np.zeros(30, dtype=bool)))
    with pytest.raises(ConfigError, match=r"gamma must be in \(0, 1\]; got 0"):
        PDIS(gamma=0)
    never = np.tile([1.0, 0.0, 0.0], (30, 1))  # π never takes the logged actions (not all 0)
    logged = dict(
        flat, action=np.full(30, 1), pscore=np.full(30, 0.3), evaluation_policy_action_dist=never
    )
    with pytest.raises(DataError, match="weighted estimate is undefined"):
        WPDIS().estimate(**logged)
    assert PDIS().estimate(**logged) == 0.0
