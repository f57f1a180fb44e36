"""The recommender replica's drawing, without Ray: propensities a server can log."""

import numpy as np

from causalrec.platform import plackett_luce
from causalrec.platform.policy import Exploration, LogitScorer
from causalrec.serve.recommender import RowScorer, propensity_kinds, served_policy


def test_softmax_slates_over_600_items_never_serve_a_zero_propensity():
    """The issue's reproduction: k = 3 over 600 items served propensity 0 in 2 of 320 slates."""
    rows = np.random.default_rng(0).random((320, 600))  # click probabilities of 320 users
    policy = served_policy(RowScorer(rows), 3, Exploration("softmax", temperature=0.1))
    sample = policy.sample(np.arange(320), np.random.default_rng(1))
    assert (sample.marginal_pscore > 0).all()
    assert propensity_kinds(policy) == ["exact", "exact", "estimated"]
    # Positions 1 and 2 are exact; position 3 within its reported error of enumeration.
    base = policy.softmax_probabilities(np.arange(5))
    for user in range(5):
        exact = plackett_luce.exact_marginal(base[user], 2)[sample.actions[user, 2]]
        assert abs(sample.marginal_pscore[user, 2] / exact - 1) < 4.5 * policy.target_relative_se
        first = plackett_luce.exact_marginal(base[user], 1)[sample.actions[user, 1]]
        assert sample.marginal_pscore[user, 1] == first


def test_softmax_runs_on_the_log_odds_of_the_scores():
    rows = np.array([[0.9, 0.5, 0.1]])
    policy = served_policy(RowScorer(rows), 1, Exploration("softmax", temperature=1.0))
    logits = np.log(rows / (1 - rows))
    expected = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(policy.action_distribution(np.array([0])), expected, rtol=1e-12)
    assert isinstance(policy.scorer, LogitScorer)
    assert propensity_kinds(served_policy(RowScorer(rows), 2, Exploration("epsilon"))) == [
        "exact",
        "exact",
    ]
