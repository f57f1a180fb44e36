"""Softmax exploration runs on the log-odds of the predicted click probabilities."""

from dataclasses import dataclass

import numpy as np
import pytest
from scipy import special

from causalrec.methods import make_recommender
from causalrec.platform.policy import SoftmaxPolicy
from causalrec.simulators import ConfoundedRecSimulator, SimulatorConfig, generate_logs


@pytest.fixture(scope="module")
def world():
    sim = ConfoundedRecSimulator(SimulatorConfig(n_users=300, n_items=50, seed=3))
    model = make_recommender("naive", epochs=8, seed=0).fit(
        generate_logs(sim, n_rounds=30_000, seed=1)
    )
    return sim, model


@dataclass(frozen=True)
class _ProbabilityScorer:
    """The old behaviour, for comparison: the softmax over click probabilities."""

    model: object

    @property
    def n_users(self):
        return self.model.n_users_

    @property
    def n_items(self):
        return self.model.n_items_

    def scores(self, users):
        return self.model.score(users)


def test_low_temperature_approaches_the_top_k_value(world):
    sim, model = world
    top = sim.policy_value(model.policy(1))
    values = [sim.policy_value(model.policy(1, "softmax", temperature=t)) for t in (1.0, 0.1, 1e-3)]
    assert values[0] < values[1] < values[2]
    assert values[2] <= top
    assert top - values[2] < min(2e-3, (top - values[1]) / 5)


def test_unit_temperature_differs_measurably_from_uniform(world):
    sim, model = world
    uniform = sim.policy_value(sim.uniform_policy())
    warm = sim.policy_value(model.policy(1, "softmax", temperature=1.0))
    on_probabilities = sim.policy_value(SoftmaxPolicy(_ProbabilityScorer(model)))
    # The softmax over probabilities in (0, 1) was within 0.5% of uniform; over the log-odds of
    # this (weakly trained, logit spread ~0.7) model the gain over uniform is several times larger.
    assert warm - uniform > 3 * (on_probabilities - uniform) > 0
    dist = model.policy(1, "softmax", temperature=1.0).action_distribution(np.arange(20))
    old = SoftmaxPolicy(_ProbabilityScorer(model)).action_distribution(np.arange(20))
    assert np.median(dist.max(axis=1) / dist.min(axis=1)) > 1.5
    assert np.median(old.max(axis=1) / old.min(axis=1)) < 1.2


def test_softmax_propensities_are_exact(world):
    _, model = world
    users = np.arange(40)
    policy = model.policy(1, "softmax", temperature=0.7)
    sample = policy.sample(users, np.random.default_rng(0))
    expected = special.softmax(special.logit(model.score(users)) / 0.7, axis=1)
    chosen = expected[users, sample.actions[:, 0]]
    np.testing.assert_allclose(sample.marginal_pscore[:, 0], chosen, rtol=1e-9)
