"""Online A/B statistics: interval coverage, p-values and MDE under repeated experiments."""

import numpy as np
import pytest
from scipy import stats

from causalrec.abtest.statistics import arm_outcome, compare_arms
from causalrec.platform.errors import DataError


def _arm(rng, n_visits, n_users, rate, user_sd=0.0, k=2):
    """Visits of users with their own click rates (repeat visits are correlated)."""
    users = rng.integers(n_users, size=n_visits)
    user_rate = np.clip(rate + user_sd * rng.standard_normal(n_users), 0.01, 0.99)
    clicks = (rng.random((n_visits, k)) < user_rate[users, None]).astype(np.int8)
    return users, clicks


def test_outcome_counts():
    users = np.array([0, 0, 1, 2])
    clicks = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
    outcome = arm_outcome(users, clicks)
    assert (outcome.users, outcome.visits, outcome.impressions, outcome.clicks) == (3, 4, 8, 4)
    assert outcome.ctr == pytest.approx(0.5) and outcome.clicks_per_visit == pytest.approx(1.0)


def test_clustered_variance_matches_the_spread_over_experiments():
    """With repeat visits and user effects, the delta-method variance is the real one."""
    rng = np.random.default_rng(0)
    metrics, variances = [], []
    for _ in range(300):
        outcome = arm_outcome(*_arm(rng, 2_000, 300, 0.3, user_sd=0.2))
        metrics.append(outcome.clicks_per_visit)
        variances.append(outcome.variance)
    ratio = np.var(metrics, ddof=1) / np.mean(variances)
    assert 0.8 < ratio < 1.25
    # ignoring the clustering (visits as independent) would understate the variance:
    naive = np.var(_arm(rng, 2_000, 300, 0.3, user_sd=0.2)[1].sum(axis=1), ddof=1) / 2_000
    assert naive < 0.7 * np.var(metrics, ddof=1)


def test_a_a_tests_have_nominal_coverage_and_uniform_p_values():
    rng = np.random.default_rng(1)
    covered, p_values = [], []
    for _ in range(400):
        a = arm_outcome(*_arm(rng, 1_000, 400, 0.2, user_sd=0.1))
        b = arm_outcome(*_arm(rng, 1_000, 400, 0.2, user_sd=0.1))
        lift = compare_arms(a, b)
        covered.append(lift.low <= 0 <= lift.high)
        p_values.append(lift.p_value)
    assert 0.92 < np.mean(covered) < 0.98
    assert stats.kstest(p_values, "uniform").pvalue > 0.01


def test_power_at_the_minimum_detectable_effect_is_about_eighty_percent():
    rng = np.random.default_rng(2)
    base = compare_arms(
        arm_outcome(*_arm(rng, 2_000, 2_000, 0.3)), arm_outcome(*_arm(rng, 2_000, 2_000, 0.3))
    )
    effect = base.mde / 2  # per position: the metric sums k = 2 positions
    detected = []
    for _ in range(300):
        a = arm_outcome(*_arm(rng, 2_000, 2_000, 0.3))
        b = arm_outcome(*_arm(rng, 2_000, 2_000, 0.3 + effect))
        detected.append(compare_arms(a, b).p_value < 0.05)
    assert 0.72 < np.mean(detected) < 0.88


def test_relative_lift_interval_has_nominal_coverage():
    rng = np.random.default_rng(3)
    covered = []
    for _ in range(300):
        a = arm_outcome(*_arm(rng, 2_000, 2_000, 0.2))
        b = arm_outcome(*_arm(rng, 2_000, 2_000, 0.3))
        lift = compare_arms(a, b)
        covered.append(lift.relative_low < 0.5 < lift.relative_high)  # 0.6 / 0.4 - 1
    assert 0.91 < np.mean(covered) < 0.98


def test_an_arm_needs_two_visits():
    with pytest.raises(DataError, match="at least 2 visits"):
        arm_outcome(np.array([1]), np.array([[1]]))
