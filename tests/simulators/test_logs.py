import itertools
import math

import numpy as np
import pytest
from scipy import stats

from causalrec.platform.errors import ConfigError
from causalrec.simulators import generate_logs, iter_log_chunks

# The logged pscores are checked against oracles written from the logging policy's definition
# (softmax of the logging scores, mixed with ε-uniform; Plackett–Luce slates by enumeration),
# never against the policy's own probability code, which wrote them.


def logging_softmax(simulator, users: np.ndarray, epsilon: float) -> np.ndarray:
    """(1 − ε) softmax(logging scores) + ε / n_items in plain numpy, shape (n, n_items).

    The logging scores already carry the inverse temperature β (and γ · log popularity), so the
    softmax is taken at temperature 1.
    """
    logits = simulator.logging_scorer.scores(users).astype(np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (1 - epsilon) * e / e.sum(axis=1, keepdims=True) + epsilon / simulator.n_items


def enumerated_slates(probs: np.ndarray, k: int, epsilon: float) -> np.ndarray:
    """P(slate) of every ordered slate of k distinct items, from first principles.

    Plackett–Luce: P(a_1..a_k) = Π_j p_{a_j} / (1 − Σ_{l<j} p_{a_l}), mixed with an ε share of
    uniform slates without replacement; every slate from ``itertools.permutations``.

    Args:
        probs: Item probabilities per user, shape (n_users, n_items).

    Returns:
        Shape (n_users,) + (n_items,) * k; zero on slates that repeat an item.
    """
    n_users, n_items = probs.shape
    slates = np.array(list(itertools.permutations(range(n_items), k)))  # (m, k)
    chosen = probs[:, slates]  # (n_users, m, k)
    left = 1.0 - (np.cumsum(chosen, axis=2) - chosen)
    assert left.min() > 1e-3  # no cancellation to worry about in these worlds
    pl = np.prod(chosen / left, axis=2)
    table = np.zeros((n_users,) + (n_items,) * k)
    table[(slice(None), *slates.T)] = (1 - epsilon) * pl + epsilon / math.perm(n_items, k)
    return table


def test_same_seed_same_log_different_seed_different(small_simulator):
    a = generate_logs(small_simulator, n_rounds=5_000, seed=9)
    b = generate_logs(small_simulator, n_rounds=5_000, seed=9)
    c = generate_logs(small_simulator, n_rounds=5_000, seed=10)
    for name in ("user_id", "item_id", "click", "pscore"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.item_id, c.item_id)


def test_chunked_generation_has_no_gaps(small_simulator):
    policy = small_simulator.logging_policy()
    chunks = list(iter_log_chunks(small_simulator, policy, 3_500, seed=0, chunk_rounds=1_000))
    assert [c.n_rows for c in chunks] == [1_000, 1_000, 1_000, 500]
    round_ids = np.concatenate([c.round_id for c in chunks])
    np.testing.assert_array_equal(round_ids, np.arange(3_500))


def test_logged_pscore_is_the_softmax_probability_of_the_logged_item(small_simulator):
    log = generate_logs(small_simulator, n_rounds=2_000, seed=1)
    assert (log.policy == "logging").all()
    epsilon = small_simulator.config.logging_epsilon
    oracle = logging_softmax(small_simulator, log.user_id, epsilon)
    np.testing.assert_allclose(log.pscore, oracle[np.arange(log.n_rows), log.item_id], rtol=1e-12)
    np.testing.assert_array_equal(log.pscore, log.pscore_prefix)
    np.testing.assert_array_equal(
        log.user_features, small_simulator.user_features[log.user_id].astype(np.float32)
    )


def test_slate_logs_have_exact_marginal_and_prefix_pscores(slate_simulator):
    log = generate_logs(slate_simulator, n_rounds=2_000, seed=3)
    assert log.n_rows == 6_000 and log.n_rounds == 2_000
    assert (log.policy == "logging").all()
    np.testing.assert_array_equal(log.position[:6], [0, 1, 2, 0, 1, 2])
    items = log.item_id.reshape(-1, 3)
    assert (np.sort(items, axis=1)[:, 1:] != np.sort(items, axis=1)[:, :-1]).all()
    users = log.user_id[::3]
    unique, inverse = np.unique(users, return_inverse=True)
    table = enumerated_slates(
        logging_softmax(slate_simulator, unique, 0.0), 3, slate_simulator.config.logging_epsilon
    )
    # Item–position marginals: P(i at k) sums the slates with i at position k.
    marginal = np.stack(
        [table.sum(axis=(2, 3)), table.sum(axis=(1, 3)), table.sum(axis=(1, 2))], -1
    )
    np.testing.assert_allclose(marginal.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(
        log.pscore.reshape(-1, 3), marginal[inverse[:, None], items, np.arange(3)], rtol=1e-10
    )
    # Prefix probabilities: P(a_1), P(a_1, a_2) and P(a_1, a_2, a_3) of each logged slate.
    prefix = np.stack(
        [
            table.sum(axis=(2, 3))[inverse, items[:, 0]],
            table.sum(axis=3)[inverse, items[:, 0], items[:, 1]],
            table[inverse, items[:, 0], items[:, 1], items[:, 2]],
        ],
        axis=1,
    )
    np.testing.assert_allclose(log.pscore_prefix.reshape(-1, 3), prefix, rtol=1e-10)
    assert (np.diff(log.pscore_prefix.reshape(-1, 3), axis=1) < 0).all()
    assert slate_simulator.logging_policy().exact_marginals
    assert log.metadata["pscore"] == "exact"


def test_empirical_frequencies_match_the_logging_softmax(small_simulator):
    log = generate_logs(small_simulator, n_rounds=300_000, seed=5)
    epsilon = small_simulator.config.logging_epsilon
    # Given the users drawn, each row's item is an independent draw from that user's softmax:
    # the expected count of item i is the sum of its probabilities over the rows.
    expected = logging_softmax(small_simulator, log.user_id, epsilon).sum(axis=0)
    observed = np.bincount(log.item_id, minlength=small_simulator.n_items)
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    user = np.bincount(log.user_id).argmax()
    rows = log.user_id == user
    probs = logging_softmax(small_simulator, np.array([user]), epsilon)[0]
    observed = np.bincount(log.item_id[rows], minlength=small_simulator.n_items)
    assert stats.chisquare(observed, rows.sum() * probs).pvalue > 1e-3


def test_uniform_fraction_logs_a_uniform_slice(small_simulator):
    log = generate_logs(small_simulator, n_rounds=20_000, seed=2, uniform_fraction=0.25)
    uniform = log.policy == "uniform"
    share = uniform.mean()
    assert abs(share - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 20_000)
    np.testing.assert_allclose(log.pscore[uniform], 1 / small_simulator.n_items)
    oracle = logging_softmax(small_simulator, log.user_id, small_simulator.config.logging_epsilon)
    logged = oracle[np.arange(log.n_rows), log.item_id]
    np.testing.assert_allclose(log.pscore[~uniform], logged[~uniform], rtol=1e-12)
    assert set(np.unique(log.policy)) == {"uniform", "logging"}
    assert log.metadata["uniform_fraction"] == 0.25


def test_bad_requests(small_simulator, slate_simulator):
    with pytest.raises(ConfigError, match="n_rounds must be >= 1; got 0"):
        generate_logs(small_simulator, n_rounds=0)
    with pytest.raises(ConfigError, match="uniform_fraction must be in"):
        generate_logs(small_simulator, n_rounds=10, uniform_fraction=1.5)
    with pytest.raises(ConfigError, match="slate_size"):
        generate_logs(small_simulator, slate_simulator.logging_policy(), n_rounds=10)
