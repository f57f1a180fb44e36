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


def exact_fraction_marginals(p: np.ndarray, K: int):
    """Marginals by enumeration in exact rational arithmetic, and the normalised Fractions."""
    from fractions import Fraction

    exact = [Fraction(x) for x in p]
    exact = [x / sum(exact) for x in exact]
    expected = np.zeros((len(p), K))
    for slate in itertools.permutations(range(len(p)), K):
        prob, used = Fraction(1), []
        for item in slate:
            prob *= exact[item] / (1 - sum(exact[j] for j in used))
            used.append(item)
        for k, item in enumerate(slate):
            expected[item, k] += float(prob)
    return expected, exact


@pytest.mark.parametrize(("n", "K", "concentration"), [(5, 1, 1.0), (6, 3, 0.3), (7, 4, 2.0)])
def test_exact_marginals_match_enumeration(n, K, concentration):
    p = np.random.default_rng(n).dirichlet(np.full(n, concentration))
    result = plackett_luce.marginals(p, K)
    marginal, exact = result.marginal, result.exact
    expected, _ = brute_force(p, K)
    assert exact.all()
    assert (result.relative_se == 0).all() and result.draws == 0
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


@pytest.mark.parametrize("concentration", [0.3, 1.0, 3.0])
def test_rao_blackwellised_marginals_beyond_budget(monkeypatch, concentration):
    monkeypatch.setattr(plackett_luce, "EXACT_PREFIX_BUDGET", 10)
    p = np.random.default_rng(1).dirichlet(np.full(7, concentration))
    result = plackett_luce.marginals(p, 4, np.random.default_rng(2), target_relative_se=0.005)
    expected, _ = brute_force(p, 4)
    assert result.exact.tolist() == [True, True, False, False]  # 7**2 = 49 prefixes > budget 10
    np.testing.assert_allclose(result.marginal[:, :2], expected[:, :2], atol=1e-12)
    assert (result.marginal > 0).all()  # every item can reach every position
    assert (result.relative_se[2:] <= 0.005).all() and result.relative_se[2:].min() > 0
    # Each estimate is within 4.5 of its reported standard errors of the truth: the reported
    # error is honest (counting slates, as before, was off by 5-10% at this budget).
    z = (result.marginal[:, 2:] - expected[:, 2:]) / (result.relative_se[2:] * expected[:, 2:])
    assert np.abs(z).max() < 4.5


def test_counting_would_give_zero_but_rao_blackwell_never_does(monkeypatch):
    """A shown item always gets a positive marginal, even where counting slates gives 0."""
    monkeypatch.setattr(plackett_luce, "EXACT_PREFIX_BUDGET", 10)
    p = np.random.default_rng(3).dirichlet(np.full(40, 0.2))
    result = plackett_luce.marginals(p, 3, np.random.default_rng(4))
    slates = plackett_luce.gumbel_top_k(
        np.tile(np.log(p), (20_000, 1)), 3, np.random.default_rng(5)
    )
    counted = np.bincount(slates[:, 2], minlength=40) / 20_000
    assert (counted == 0).any()  # what the old estimator reported for these items
    assert (result.marginal[p > 0, 2] > 0).all()
    np.testing.assert_allclose(result.marginal[:, 2].sum(), 1.0, rtol=0.02)


def test_marginals_of_shown_items_only_agree_with_full_marginals(monkeypatch):
    from causalrec.platform import pl_estimates

    p = np.random.default_rng(6).dirichlet(np.ones(1000))
    items = np.array([5, 17, 400, 999])
    positions = [2, 5, 7, 9]
    asked = pl_estimates.estimate_position_marginals(
        p, positions, np.random.default_rng(7), items=items
    )
    full = pl_estimates.estimate_position_marginals(p, positions, np.random.default_rng(8))
    assert asked.marginal.shape == (4,)
    columns = np.arange(4)
    scale = np.hypot(asked.relative_se, full.relative_se[items, columns]) * asked.marginal
    assert np.abs(asked.marginal - full.marginal[items, columns]).max() < 4.5 * scale.max()
    assert (asked.relative_se <= pl_estimates.TARGET_RELATIVE_SE).all()


def test_prefix_sampler_draws_plackett_luce_prefixes():
    from causalrec.platform import pl_estimates

    p = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    n = 60_000
    prefixes = pl_estimates.sample_prefixes(p, 2, n, np.random.default_rng(9))
    assert (prefixes[:, 0] != prefixes[:, 1]).all()
    _, slate_prob = brute_force(p, 2)
    keys = list(slate_prob)
    observed = np.array([np.sum((prefixes[:, 0] == a) & (prefixes[:, 1] == b)) for a, b in keys])
    assert stats.chisquare(observed, n * np.array([slate_prob[k] for k in keys])).pvalue > 1e-3
    without = pl_estimates.sample_prefixes(p, 2, n, np.random.default_rng(10), exclude=0)
    assert (without != 0).all()
    q = p[1:] / p[1:].sum()  # the law without item 0
    assert np.mean(without[:, 0] == 1) == pytest.approx(q[0], abs=4.5 * np.sqrt(q[0] / n))


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
    logits = np.array([60.0, 40.0, 20.0, 0.0, -5.0])
    p = np.exp(logits - logits.max())
    p /= p.sum()
    marginal = plackett_luce.marginals(p, 3).marginal
    expected, exact = exact_fraction_marginals(p, 3)
    np.testing.assert_allclose(marginal, expected, rtol=1e-9, atol=1e-300)
    prefix = plackett_luce.prefix_probabilities(p[None, :], np.array([[0, 1, 2]]))
    exact_prefix = exact[0] * exact[1] / (1 - exact[0]) * exact[2] / (1 - exact[0] - exact[1])
    assert prefix[0, 2] == pytest.approx(float(exact_prefix), rel=1e-9)


def test_dominant_items_beyond_budget_match_exact_fractions(monkeypatch):
    """An item with almost all the mass: its own draws must not miss the prefixes that matter."""
    monkeypatch.setattr(plackett_luce, "EXACT_PREFIX_BUDGET", 1)
    logits = np.array([60.0, 40.0, 20.0, 0.0, -5.0, -6.0, -7.0])
    p = np.exp(logits - logits.max())
    p /= p.sum()
    result = plackett_luce.marginals(p, 3, np.random.default_rng(0))
    expected, _ = exact_fraction_marginals(p, 3)
    assert result.exact.tolist() == [True, False, False]
    np.testing.assert_allclose(result.marginal, expected, rtol=1e-6, atol=1e-300)


def test_a_law_too_peaked_for_float64_gives_nan_after_one_batch_of_draws():
    """Cancelled sums cannot be mended by more draws: stop at once, say NaN, never a wrong number.

    The fuzzer's subnormal softmax temperature reached this: the old loop drew ``MAX_DRAWS``
    prefixes per shown item (seconds per user, past the server's deadline) and still got NaN.
    """
    from scipy.special import log_softmax

    from causalrec.platform import pl_estimates

    p = np.exp(log_softmax(np.random.default_rng(3).normal(size=40) * 300))
    items = np.array([23, 21, 8, 1, 10, 22, 32, 28, 12])
    with np.errstate(all="ignore"):
        estimate = pl_estimates.estimate_position_marginals(
            p, list(range(1, 10)), np.random.default_rng(0), items=items
        )
    assert estimate.draws == pl_estimates.DRAW_BATCH
    broken = np.isnan(estimate.marginal)
    assert broken.any() and (np.isnan(estimate.relative_se) == broken).all()
    assert ((estimate.marginal[~broken] >= 0) & (estimate.marginal[~broken] <= 1)).all()
