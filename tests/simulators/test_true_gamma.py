"""The simulator's true Γ and the logger's propensity given the observed features."""

import numpy as np
import pytest
from scipy.special import softmax

from causalrec.platform.errors import ConfigError
from causalrec.simulators import ConfoundedRecSimulator, load_simulator_config

SMALL = {"n_users": 300, "n_items": 30, "latent_dim": 8, "logging_beta": 1.0}


def world(**changes) -> ConfoundedRecSimulator:
    return ConfoundedRecSimulator(
        load_simulator_config(preset="hidden_confounding", **{**SMALL, **changes})
    )


@pytest.mark.parametrize("changes", [{"hidden_confounding": 0.0}, {"confounding": 0.0}])
def test_without_hidden_confounding_gamma_is_exactly_one(changes):
    # Catches: a Γ computed (and reported as estimated) where the logger never sees θ_u[m:],
    # and an observed-feature propensity that is not the logged one there.
    simulator = world(**changes)
    result = simulator.true_sensitivity_gamma()
    assert (result.gamma, result.standard_error, result.exact) == (1.0, 0.0, True)
    users = np.arange(20)
    observed, error = simulator.observed_feature_propensity(users)
    logged = simulator.logging_policy().first_position_probabilities(users)
    np.testing.assert_array_equal(observed, logged)
    assert not error.any()


def test_gamma_grows_with_hidden_confounding():
    # Catches: a Γ that ignores the hidden part's weight (e.g. reads the wrong columns).
    gammas = [world(hidden_confounding=h).true_sensitivity_gamma() for h in (0.1, 0.3, 0.6)]
    values = [g.gamma for g in gammas]
    assert 1 < values[0] < values[1] < values[2], values
    assert all(not g.exact and 0 < g.standard_error < 1e-3 * g.gamma for g in gammas)


def test_gamma_is_the_largest_odds_ratio_of_logged_and_observed_feature_propensities():
    # Catches: a maximum over part of the users (batches), or of one direction of the ratio.
    simulator = world(hidden_confounding=0.4)
    result = simulator.true_sensitivity_gamma()
    observed, _ = simulator.observed_feature_propensity(np.arange(simulator.n_users))
    logged = simulator.logging_policy().first_position_probabilities(np.arange(simulator.n_users))
    odds = (logged / (1 - logged)) / (observed / (1 - observed))
    ratio = np.maximum(odds, 1 / odds)
    assert result.gamma == pytest.approx(ratio.max(), rel=1e-9)
    assert ratio[result.user, result.item] == pytest.approx(result.gamma, rel=1e-9)


def test_observed_feature_propensity_is_the_expectation_over_the_hidden_latents():
    # Catches: not removing the user's actual hidden part, a wrong scale of the integrated
    # θ_u[m:], a standard error that understates the error. Plain Monte Carlo of the
    # structural equation (the softmax of the logits with θ_u[m:] ~ N(0, I) drawn afresh) is
    # the reference; the columns and scale of the hidden part are the world's own.
    simulator = world(hidden_confounding=0.4)
    # θ_u is the first of the world's eight seed streams (see _build_world).
    stream = np.random.SeedSequence(simulator.config.seed).spawn(8)[0]
    theta = np.random.default_rng(stream).normal(size=(simulator.n_users, 8))
    m, scorer = simulator.config.n_visible_latent, simulator.logging_scorer
    hidden_users = scorer.user_factors[:, simulator._hidden_columns]
    np.testing.assert_allclose(hidden_users, simulator._hidden_scale * theta[:, m:], rtol=1e-12)
    hidden_items = simulator._hidden_scale * scorer.item_factors[:, simulator._hidden_columns]
    users = np.arange(12)
    observed, error = simulator.observed_feature_propensity(users, n_draws=2048, seed=5)
    draws = np.random.default_rng(0).normal(size=(100_000, 8 - m)) @ hidden_items.T
    eps, n = simulator.config.logging_epsilon, simulator.n_items
    z = []
    for row, user in enumerate(users):
        base = scorer.scores(user[None])[0] - simulator._hidden_scale * theta[user, m:] @ (
            scorer.item_factors[:, simulator._hidden_columns].T
        )
        probabilities = softmax(base + draws, axis=1)
        reference = (1 - eps) * probabilities.mean(axis=0) + eps / n
        reference_error = (1 - eps) * probabilities.std(axis=0) / np.sqrt(len(draws))
        z.append((observed[row] - reference) / np.hypot(error[row], reference_error))
    z = np.concatenate(z)
    assert np.abs(z).max() < 5 and np.mean(np.abs(z) > 2) < 0.15, np.abs(z).max()
    np.testing.assert_allclose(observed.sum(axis=1), 1.0, rtol=1e-12)


@pytest.mark.parametrize(
    ("changes", "n_draws", "match"),
    [
        ({"slate_size": 2}, 4096, r"needs slate_size 1 .* got slate_size=2"),
        ({}, 1000, r"n_draws must be 8 times a power of two >= 2 .* got 1000"),
        ({}, 8, r"n_draws must be 8 times a power of two >= 2 .* got 8"),
    ],
)
def test_bad_requests_are_refused(changes, n_draws, match):
    simulator = world(hidden_confounding=0.4, **changes)
    with pytest.raises(ConfigError, match=match):
        simulator.true_sensitivity_gamma(n_draws=n_draws)
