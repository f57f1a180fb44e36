import itertools

import numpy as np
import pytest
from scipy import stats

from causalrec.platform import plackett_luce


def brute_force(p: np.ndarray, K: int):
    """Item-position marginals and slate probabilities by enumerating every slate."""
    n = len(p)
    marginal = np.zeros((n, K))
    slate_prob = {}
    for slate in itertools.permutations(range(n), K):
        prob, remaining = 1.0, 1.0
        for item in slate:
            prob *= p[item] / remaining
            remaining -= p[item]
        slate_prob[slate] = prob
        for k, item in enumerate(slate):
            marginal[item, k] += prob
    return marginal, slate_prob


@pytest.mark.parametrize(("n", "K", "concentration"), [(5, 1, 1.0), (6, 3, 0.3), (7, 4, 2.0)])
def test_exact_marginals_match_enumeration(n, K, concentration):
    p = np.random.default_rng(n).dirichlet(np.full(n, concentration))
    marginal, exact = plackett_luce.marginals(p, K)
    expected, _ = brute_force(p, K)
    assert exact.all()
    np.testing.assert_allclose(marginal, expected, atol=1e-12)
    np.testing.assert_allclose(marginal.sum(axis=0), 1.0, atol=1e-12)


def test_prefix_probabilities_match_enumeration():
    p = np.random.default_rng(0).dirichlet(np.ones(6))
    _, slate_prob = brute_force(p, 3)
    slates = np.array([[0, 1, 2], [5, 3, 1], [2, 0, 4]])
    prefix = plackett_luce.prefix_probabilities(np.tile(p, (3, 1)), slates)
    for row, slate in enumerate(slates):
        assert prefix[row, 2] == pytest.approx(slate_prob[tuple(slate)], rel=1e-12)
        assert prefix[row, 0] == pytest.approx(p[slate[0]], rel=1e-12)


def test_monte_carlo_used_beyond_budget_and_close(monkeypatch):
    monkeypatch.setattr(plackett_luce, "EXACT_PREFIX_BUDGET", 10)
    p = np.random.default_rng(1).dirichlet(np.ones(6))
    marginal, exact = plackett_luce.marginals(p, 3, np.random.default_rng(2), mc_draws=40_000)
    expected, _ = brute_force(p, 3)
    assert exact.tolist() == [True, True, False]  # 6**2 = 36 prefixes > budget 10
    np.testing.assert_allclose(marginal[:, :2], expected[:, :2], atol=1e-12)
    np.testing.assert_allclose(marginal[:, 2], expected[:, 2], atol=0.01)


def test_gumbel_top_k_frequencies_match_plackett_luce():
    p = np.array([0.4, 0.3, 0.2, 0.1])
    rng = np.random.default_rng(7)
    n = 40_000
    slates = plackett_luce.gumbel_top_k(np.tile(np.log(p), (n, 1)), 2, rng)
    assert (slates[:, 0] != slates[:, 1]).all()
    _, slate_prob = brute_force(p, 2)
    keys = list(slate_prob)
    observed = np.array([np.sum((slates[:, 0] == a) & (slates[:, 1] == b)) for a, b in keys])
    result = stats.chisquare(observed, n * np.array([slate_prob[k] for k in keys]))
    assert result.pvalue > 1e-3


def test_peaked_distributions_stay_exact():
    """Prefixes that hold almost all the mass must not lose the remaining items' probabilities."""
    from fractions import Fraction

    logits = np.array([60.0, 40.0, 20.0, 0.0, -5.0])
    p = np.exp(logits - logits.max())
    p /= p.sum()
    marginal, _ = plackett_luce.marginals(p, 3)
    exact = [Fraction(x) for x in p]
    total = sum(exact)
    exact = [x / total for x in exact]
    expected = np.zeros((5, 3))
    for slate in itertools.permutations(range(5), 3):
        prob, used = Fraction(1), []
        for item in slate:
            prob *= exact[item] / (1 - sum(exact[j] for j in used))
            used.append(item)
        for k, item in enumerate(slate):
            expected[item, k] += float(prob)
    np.testing.assert_allclose(marginal, expected, rtol=1e-9, atol=1e-300)
    prefix = plackett_luce.prefix_probabilities(p[None, :], np.array([[0, 1, 2]]))
    exact_prefix = exact[0] * exact[1] / (1 - exact[0]) * exact[2] / (1 - exact[0] - exact[1])
    assert prefix[0, 2] == pytest.approx(float(exact_prefix), rel=1e-9)
