import numpy as np
import pytest
from scipy import stats

from causalrec.platform.errors import ConfigError, DataError
from causalrec.platform.policy import SoftmaxPolicy, TopKPolicy, UniformPolicy
from causalrec.simulators.scm import BilinearScorer


@pytest.fixture(scope="module")
def scorer() -> BilinearScorer:
    rng = np.random.default_rng(0)
    return BilinearScorer(rng.normal(size=(20, 3)), rng.normal(size=(8, 3)), rng.normal(size=8))


def chi_square_pvalue(draws: np.ndarray, probs: np.ndarray) -> float:
    observed = np.bincount(draws, minlength=len(probs))
    support = probs > 0
    assert observed[~support].sum() == 0, "drew an item of probability zero"
    if support.sum() == 1:  # a point mass: every draw must be that item
        return 1.0 if observed[support][0] == len(draws) else 0.0
    return stats.chisquare(observed[support], len(draws) * probs[support]).pvalue


@pytest.mark.parametrize("epsilon", [0.0, 0.2])
def test_softmax_draws_match_distribution_and_pscore(scorer, epsilon):
    policy = SoftmaxPolicy(scorer, temperature=0.7, epsilon=epsilon)
    users = np.full(30_000, 4)
    sample = policy.sample(users, np.random.default_rng(1))
    dist = policy.action_distribution(np.array([4]))[0]
    assert dist.sum() == pytest.approx(1.0)
    assert chi_square_pvalue(sample.actions[:, 0], dist) > 1e-3
    np.testing.assert_allclose(sample.marginal_pscore[:, 0], dist[sample.actions[:, 0]], rtol=1e-12)
    np.testing.assert_array_equal(sample.prefix_pscore, sample.marginal_pscore)


def test_softmax_without_table_matches_table(scorer, monkeypatch):
    from causalrec.platform import policy as policy_module

    cached = SoftmaxPolicy(scorer, epsilon=0.1)
    monkeypatch.setattr(policy_module, "TABLE_BUDGET", 0)
    uncached = SoftmaxPolicy(scorer, epsilon=0.1)
    users = np.arange(20)
    np.testing.assert_allclose(
        cached.action_distribution(users), uncached.action_distribution(users)
    )
    sample = uncached.sample(np.full(20_000, 2), np.random.default_rng(3))
    assert (
        chi_square_pvalue(sample.actions[:, 0], cached.action_distribution(np.array([2]))[0]) > 1e-3
    )


def test_softmax_slates_marginals_and_prefix(scorer):
    policy = SoftmaxPolicy(scorer, epsilon=0.1, slate_size=3)
    users = np.full(30_000, 7)
    sample = policy.sample(users, np.random.default_rng(2))
    dist = policy.action_distribution(np.array([7]))[0]  # (n_items, K)
    assert dist.shape == (8, 3)
    np.testing.assert_allclose(dist.sum(axis=0), 1.0)
    assert all(len(set(row)) == 3 for row in sample.actions[:200])
    for k in range(3):
        assert chi_square_pvalue(sample.actions[:, k], dist[:, k]) > 1e-3
        np.testing.assert_allclose(sample.marginal_pscore[:, k], dist[sample.actions[:, k], k])
    # Prefix probabilities are decreasing and the first equals the first-position marginal.
    assert (np.diff(sample.prefix_pscore, axis=1) <= 0).all()
    np.testing.assert_allclose(sample.prefix_pscore[:, 0], sample.marginal_pscore[:, 0])
    # Empirical frequency of the most common full slate matches its prefix probability.
    slates, counts = np.unique(sample.actions, axis=0, return_counts=True)
    top = counts.argmax()
    row = np.flatnonzero((sample.actions == slates[top]).all(axis=1))[0]
    expected = sample.prefix_pscore[row, 2]
    se = np.sqrt(expected * (1 - expected) / len(users))
    assert abs(counts[top] / len(users) - expected) < 4 * se


@pytest.mark.parametrize("epsilon", [0.0, 0.3])
def test_top_k_is_greedy_with_epsilon_exploration(scorer, epsilon):
    policy = TopKPolicy(scorer, slate_size=2, epsilon=epsilon)
    users = np.full(20_000, 5)
    greedy = np.argsort(-scorer.scores(np.array([5]))[0])[:2]
    np.testing.assert_array_equal(policy.top_k(np.array([5]))[0], greedy)
    sample = policy.sample(users, np.random.default_rng(4))
    dist = policy.action_distribution(np.array([5]))[0]
    for k in range(2):
        assert chi_square_pvalue(sample.actions[:, k], dist[:, k]) > 1e-3
        np.testing.assert_allclose(sample.marginal_pscore[:, k], dist[sample.actions[:, k], k])
    is_greedy = (sample.actions == greedy).all(axis=1)
    uniform_slate = 1 / (8 * 7)
    expected_prefix = np.where(is_greedy, 1 - epsilon, 0) + epsilon * uniform_slate
    np.testing.assert_allclose(sample.prefix_pscore[:, 1], expected_prefix)


def test_uniform_policy(scorer):
    policy = UniformPolicy(8, slate_size=3)
    sample = policy.sample(np.zeros(10_000, dtype=int), np.random.default_rng(5))
    np.testing.assert_allclose(sample.prefix_pscore[0], [1 / 8, 1 / 56, 1 / 336])
    np.testing.assert_allclose(sample.marginal_pscore, 1 / 8)
    assert chi_square_pvalue(sample.actions[:, 2], np.full(8, 1 / 8)) > 1e-3


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"temperature": -1.0}, r"temperature must be > 0; got -1.0"),
        ({"temperature": 0.0}, r"temperature must be > 0; got 0.0"),
        ({"epsilon": 1.5}, r"epsilon must be in \[0, 1\]; got 1.5"),
        ({"slate_size": 9}, r"slate_size must be in \[1, n_items=8\]; got 9"),
    ],
)
def test_bad_policy_arguments(scorer, kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        SoftmaxPolicy(scorer, **kwargs)


def test_users_must_be_integer_ids(scorer):
    with pytest.raises(DataError, match="users must be a 1-d integer array"):
        SoftmaxPolicy(scorer).action_distribution(np.array([0.5]))
