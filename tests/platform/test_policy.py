import itertools
import math

import numpy as np
import pytest
from scipy import stats

from causalrec.platform.errors import ConfigError, DataError
from causalrec.platform.policy import SoftmaxPolicy, TopKPolicy, UniformPolicy
from causalrec.simulators.scm import BilinearScorer

# Oracles below are written from the definitions with plain numpy and itertools, never with the
# policy's own probability code: a policy can only pass by drawing and scoring slates correctly.


@pytest.fixture(scope="module")
def scorer() -> BilinearScorer:
    rng = np.random.default_rng(0)
    return BilinearScorer(rng.normal(size=(20, 3)), rng.normal(size=(8, 3)), rng.normal(size=8))


def make_scorer(n_users: int, n_items: int, seed: int) -> BilinearScorer:
    rng = np.random.default_rng(seed)
    return BilinearScorer(
        rng.normal(size=(n_users, 3)), rng.normal(size=(n_items, 3)), rng.normal(size=n_items)
    )


def softmax_oracle(scores: np.ndarray, temperature: float, epsilon: float) -> np.ndarray:
    """(1 − ε) softmax(scores / T) + ε / n_items, row by row, shape (n, n_items)."""
    logits = scores / temperature
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (1 - epsilon) * e / e.sum(axis=1, keepdims=True) + epsilon / scores.shape[1]


def slate_table(probs: np.ndarray, k: int, epsilon: float) -> np.ndarray:
    """P(slate) of every ordered slate of k distinct items, by enumeration.

    Plackett–Luce from first principles, P(a_1..a_k) = Π_j p_{a_j} / (1 − Σ_{l<j} p_{a_l}),
    mixed with an ε share of uniform slates without replacement.

    Args:
        probs: Item probabilities per user, shape (n_users, n_items).

    Returns:
        Shape (n_users,) + (n_items,) * k; zero on slates that repeat an item.
    """
    n_users, n_items = probs.shape
    table = np.zeros((n_users,) + (n_items,) * k)
    uniform = 1 / math.perm(n_items, k)
    for slate in itertools.permutations(range(n_items), k):
        prob = np.ones(n_users)
        for j, item in enumerate(slate):
            # The mass left is summed over the remaining items (no 1 − Σ cancellation).
            left = probs[:, [i for i in range(n_items) if i not in slate[:j]]].sum(axis=1)
            prob = prob * probs[:, item] / left
        table[(slice(None), *slate)] = (1 - epsilon) * prob + epsilon * uniform
    return table


def table_marginals(table: np.ndarray) -> np.ndarray:
    """P(item i at position j) from a slate table, shape (n_users, n_items, K)."""
    k = table.ndim - 1
    return np.stack(
        [table.sum(axis=tuple(a for a in range(1, k + 1) if a != j + 1)) for j in range(k)],
        axis=-1,
    )


def table_prefix(table: np.ndarray, rows: np.ndarray, slates: np.ndarray) -> np.ndarray:
    """P(a_1..a_j) for j = 1..K of given slates, shape (n, K)."""
    k = table.ndim - 1
    columns = []
    for j in range(k):
        prefix_table = table.sum(axis=tuple(range(j + 2, k + 1)))
        columns.append(prefix_table[(rows, *slates[:, : j + 1].T)])
    return np.stack(columns, axis=1)


def assert_frequencies_match(actions: np.ndarray, marginal: np.ndarray, z_max: float = 4.5):
    """Observed item–position frequencies of n draws vs marginals of shape (n_items, K).

    Binomial standard error per cell; a cell of probability 0 or 1 must be matched exactly.
    """
    n, K = actions.shape
    for k in range(K):
        freq = np.bincount(actions[:, k], minlength=marginal.shape[0]) / n
        expected = np.clip(marginal[:, k], 0.0, 1.0)  # 1 + 1e-16 is a rounding of 1
        se = np.sqrt(expected * (1 - expected) / n)
        sure = se == 0
        np.testing.assert_array_equal(freq[sure], expected[sure])
        z = np.abs(freq - expected)[~sure] / se[~sure]
        assert z.max(initial=0.0) < z_max, f"position {k}: z = {z.max(initial=0.0):.2f}"


def returned_marginals(actions: np.ndarray, marginal_pscore: np.ndarray, n_items: int):
    """The (n_items, K) table of what ``sample`` returned for one user; NaN where never drawn.

    Also checks the returned value is the same every time an item is drawn at a position.
    """
    K = actions.shape[1]
    table = np.full((n_items, K), np.nan)
    for k in range(K):
        for item in np.unique(actions[:, k]):
            values = marginal_pscore[actions[:, k] == item, k]
            np.testing.assert_allclose(values, values[0], rtol=1e-12)
            table[item, k] = values[0]
    return table


def assert_returned_marginals_match_frequencies(sample, n_items: int, z_max: float = 4.5):
    """Empirical item–position frequencies of one user's draws vs the marginals returned."""
    table = returned_marginals(sample.actions, sample.marginal_pscore, n_items)
    n, K = sample.actions.shape
    for k in range(K):
        drawn = np.flatnonzero(~np.isnan(table[:, k]))
        freq = np.bincount(sample.actions[:, k], minlength=n_items)[drawn] / n
        expected = table[drawn, k]
        se = np.sqrt(expected * (1 - expected) / n)
        np.testing.assert_array_equal(freq[se == 0], expected[se == 0])
        z = np.abs(freq - expected)[se > 0] / se[se > 0]
        assert z.max(initial=0.0) < z_max, f"position {k}: z = {z.max(initial=0.0):.2f}"


def chi_square_pvalue(draws: np.ndarray, probs: np.ndarray) -> float:
    observed = np.bincount(draws, minlength=len(probs))
    support = probs > 0
    assert observed[~support].sum() == 0, "drew an item of probability zero"
    if support.sum() == 1:  # a point mass: every draw must be that item
        return 1.0 if observed[support][0] == len(draws) else 0.0
    return stats.chisquare(observed[support], len(draws) * probs[support]).pvalue


@pytest.mark.parametrize("epsilon", [0.0, 0.2])
def test_softmax_draws_and_pscores_match_numpy_softmax(scorer, epsilon):
    policy = SoftmaxPolicy(scorer, temperature=0.7, epsilon=epsilon)
    oracle = softmax_oracle(scorer.scores(np.arange(20)), 0.7, epsilon)
    np.testing.assert_allclose(policy.action_distribution(np.arange(20)), oracle, rtol=1e-12)
    users = np.full(30_000, 4)
    sample = policy.sample(users, np.random.default_rng(1))
    assert chi_square_pvalue(sample.actions[:, 0], oracle[4]) > 1e-3
    np.testing.assert_allclose(
        sample.marginal_pscore[:, 0], oracle[4, sample.actions[:, 0]], rtol=1e-12
    )
    np.testing.assert_array_equal(sample.pscore_prefix, sample.marginal_pscore)
    assert_returned_marginals_match_frequencies(sample, 8)


def test_softmax_without_table_matches_numpy_softmax(scorer, monkeypatch):
    from causalrec.platform import policy as policy_module

    oracle = softmax_oracle(scorer.scores(np.arange(20)), 1.0, 0.1)
    cached = SoftmaxPolicy(scorer, epsilon=0.1)
    monkeypatch.setattr(policy_module, "TABLE_BUDGET", 0)
    uncached = SoftmaxPolicy(scorer, epsilon=0.1)
    for policy in (cached, uncached):
        np.testing.assert_allclose(policy.action_distribution(np.arange(20)), oracle, rtol=1e-12)
    users = np.tile(np.arange(20), 1_000)
    sample = uncached.sample(users, np.random.default_rng(3))
    np.testing.assert_allclose(
        sample.marginal_pscore[:, 0], oracle[users, sample.actions[:, 0]], rtol=1e-12
    )
    one = np.full(20_000, 2)
    sample = uncached.sample(one, np.random.default_rng(4))
    assert chi_square_pvalue(sample.actions[:, 0], oracle[2]) > 1e-3
    assert_returned_marginals_match_frequencies(sample, 8)


SLATE_CASES = [  # (n_users, n_items, K, temperature, epsilon, seed, draws per user)
    (6, 5, 3, 0.5, 0.0, 11, 20_000),
    (6, 6, 3, 1.0, 0.2, 12, 20_000),
    (6, 6, 2, 0.3, 0.05, 13, 20_000),
    # Peaked: the first items hold almost all the mass (1 − Σp cancels); fewer draws, as each
    # of these slates takes the slow, cancellation-safe path.
    (6, 6, 3, 0.05, 0.0, 14, 2_000),
]


@pytest.mark.parametrize(
    ("n_users", "n_items", "K", "temperature", "epsilon", "seed", "draws"), SLATE_CASES
)
def test_plackett_luce_marginals_and_prefixes_match_enumeration(
    n_users, n_items, K, temperature, epsilon, seed, draws
):
    tiny = make_scorer(n_users, n_items, seed)
    policy = SoftmaxPolicy(tiny, temperature=temperature, epsilon=epsilon, slate_size=K)
    users = np.arange(n_users)
    table = slate_table(softmax_oracle(tiny.scores(users), temperature, 0.0), K, epsilon)
    np.testing.assert_allclose(table.reshape(n_users, -1).sum(axis=1), 1.0, rtol=1e-12)
    truth = table_marginals(table)  # (n_users, n_items, K)
    np.testing.assert_allclose(policy.action_distribution(users), truth, rtol=1e-10, atol=1e-15)
    assert policy.exact_marginals

    drawn_users = np.repeat(users, draws)
    sample = policy.sample(drawn_users, np.random.default_rng(seed))
    assert all(len(set(row)) == K for row in sample.actions)
    positions = np.arange(K)[None, :]
    np.testing.assert_allclose(
        sample.marginal_pscore, truth[drawn_users[:, None], sample.actions, positions], rtol=1e-10
    )
    prefix = table_prefix(table, drawn_users, sample.actions)
    np.testing.assert_allclose(sample.pscore_prefix, prefix, rtol=1e-10)
    np.testing.assert_allclose(
        policy.prefix_probability(drawn_users, sample.actions), prefix, rtol=1e-10
    )
    for user in users:
        rows = drawn_users == user
        assert_frequencies_match(sample.actions[rows], truth[user])


def test_softmax_slates_frequencies_match_returned_pscores(scorer):
    policy = SoftmaxPolicy(scorer, epsilon=0.1, slate_size=3)
    users = np.full(30_000, 7)
    sample = policy.sample(users, np.random.default_rng(2))
    assert_returned_marginals_match_frequencies(sample, 8)
    table = slate_table(softmax_oracle(scorer.scores(np.array([7])), 1.0, 0.0), 3, 0.1)
    assert_frequencies_match(sample.actions, table_marginals(table)[0])
    # The most common full slate is drawn as often as its (enumerated) probability says.
    slates, counts = np.unique(sample.actions, axis=0, return_counts=True)
    top = slates[counts.argmax()]
    expected = table[(0, *top)]
    row = np.flatnonzero((sample.actions == top).all(axis=1))[0]
    np.testing.assert_allclose(
        sample.pscore_prefix[row], table_prefix(table, np.array([0]), top[None])[0], rtol=1e-10
    )
    se = np.sqrt(expected * (1 - expected) / len(users))
    assert abs(counts.max() / len(users) - expected) < 4.5 * se


@pytest.mark.parametrize("epsilon", [0.0, 0.3])
def test_top_k_is_greedy_with_epsilon_exploration(scorer, epsilon):
    policy = TopKPolicy(scorer, slate_size=2, epsilon=epsilon)
    users = np.full(20_000, 5)
    greedy = np.argsort(-scorer.scores(np.array([5]))[0])[:2]
    np.testing.assert_array_equal(policy.top_k(np.array([5]))[0], greedy)
    # Closed form: ε/n everywhere, plus 1 − ε on the greedy item of each position.
    closed = np.full((8, 2), epsilon / 8)
    closed[greedy, [0, 1]] += 1 - epsilon
    np.testing.assert_allclose(policy.action_distribution(np.array([5]))[0], closed, rtol=1e-12)
    sample = policy.sample(users, np.random.default_rng(4))
    assert_frequencies_match(sample.actions, closed)
    np.testing.assert_allclose(sample.marginal_pscore, closed[sample.actions, [0, 1]], rtol=1e-12)
    is_greedy = (sample.actions == greedy).all(axis=1)
    uniform_slate = 1 / (8 * 7)
    expected_prefix = np.where(is_greedy, 1 - epsilon, 0) + epsilon * uniform_slate
    np.testing.assert_allclose(sample.pscore_prefix[:, 1], expected_prefix)
    first = sample.actions[:, 0] == greedy[0]
    np.testing.assert_allclose(
        sample.pscore_prefix[:, 0], np.where(first, 1 - epsilon, 0) + epsilon / 8
    )


def test_uniform_policy(scorer):
    policy = UniformPolicy(8, slate_size=3)
    np.testing.assert_array_equal(
        policy.action_distribution(np.zeros(2, dtype=int)), np.full((2, 8, 3), 1 / 8)
    )
    sample = policy.sample(np.zeros(10_000, dtype=int), np.random.default_rng(5))
    assert all(len(set(row)) == 3 for row in sample.actions)
    np.testing.assert_allclose(
        sample.pscore_prefix, np.broadcast_to([1 / 8, 1 / 56, 1 / 336], (10_000, 3))
    )
    np.testing.assert_allclose(sample.marginal_pscore, 1 / 8)
    assert_frequencies_match(sample.actions, np.full((8, 3), 1 / 8))
    # Every ordered pair of the first two positions is equally likely: 1/56 each.
    pairs = np.bincount(sample.actions[:, 0] * 8 + sample.actions[:, 1], minlength=64).reshape(8, 8)
    assert np.diag(pairs).sum() == 0
    off = pairs[~np.eye(8, dtype=bool)]
    assert stats.chisquare(off, np.full(56, 10_000 / 56)).pvalue > 1e-3


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


@pytest.mark.parametrize("temperature", [1e-300, 2.225073858507203e-309])
def test_a_vanishing_temperature_is_the_argmax_for_one_item(scorer, temperature):
    """scores / T overflowed to inf, and inf - inf made every probability NaN."""
    users = np.arange(20)
    probabilities = SoftmaxPolicy(scorer, temperature=temperature).action_distribution(users)
    expected = np.zeros((20, 8))
    expected[users, scorer.scores(users).argmax(axis=1)] = 1.0
    np.testing.assert_array_equal(probabilities, expected)


def test_a_softmax_with_its_mass_on_fewer_than_k_items_is_refused_naming_temperature(scorer):
    policy = SoftmaxPolicy(scorer, temperature=1e-300, epsilon=0.5, slate_size=3)
    with pytest.raises(DataError, match=r"temperature: 1e-300 is too low .* fewer than K = 3"):
        policy.sample(np.arange(20), np.random.default_rng(0))
    fine = SoftmaxPolicy(scorer, temperature=0.05, epsilon=0.5, slate_size=3)
    sample = fine.sample(np.arange(20), np.random.default_rng(0))
    assert (sample.marginal_pscore > 0).all()
