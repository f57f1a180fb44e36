"""Sensitivity bounds under the marginal sensitivity model, against SNIPS, an LP and the truth."""

import itertools
import math

import numpy as np
import pytest
from scipy.optimize import linprog

from causalrec.ope import OfflineEvaluator
from causalrec.ope.sensitivity import (
    sensitivity_bounds,
    sensitivity_curve,
    sensitivity_curve_from_inputs,
    snips_bounds,
)
from causalrec.platform.errors import ConfigError, DataError
from causalrec.platform.policy import SoftmaxPolicy
from causalrec.simulators import ConfoundedRecSimulator, generate_logs, load_simulator_config

GAMMAS = [1.0, 1.25, 1.5, 2.0, 3.0, 5.0]


@pytest.fixture(scope="module")
def slate_log(slate_simulator):
    """Slates of three (per-impression weights summed within rounds) and a target policy."""
    logs = generate_logs(slate_simulator, n_rounds=1500, seed=2)
    return logs, slate_simulator.uniform_policy()


def test_gamma_one_is_snips_and_the_bounds_widen_with_gamma(slate_log):
    # Catches: a box that is not the nominal weights at Γ = 1, a per-impression (not per-round)
    # scale, lower and upper swapped, bounds that shrink or cross as Γ grows.
    logs, policy = slate_log
    evaluator = OfflineEvaluator(logs, "snips", reward_model=None)
    snips = float(evaluator.evaluate(policy, warn=False)["estimate"].iloc[0])
    curve = sensitivity_curve(logs, policy, GAMMAS, n_bootstrap=200, seed=1)
    first = curve[0]
    assert first.estimate == snips
    assert abs(first.lower - snips) <= 1e-12 and abs(first.upper - snips) <= 1e-12
    assert first.lower_bootstrap < snips < first.upper_bootstrap
    for before, after in itertools.pairwise(curve):
        assert after.lower < before.lower and after.upper > before.upper
        assert after.lower_bootstrap <= before.lower_bootstrap
        assert after.upper_bootstrap >= before.upper_bootstrap
    for bounds in curve:
        assert bounds.lower_bootstrap <= bounds.lower <= bounds.estimate <= bounds.upper
        assert bounds.upper <= bounds.upper_bootstrap and bounds.unit == "clicks_per_round"
    # One Γ on its own is the curve's entry (same resamples, same seed).
    assert sensitivity_bounds(logs, policy, 2.0, n_bootstrap=200, seed=1) == curve[3]


def brute_force(reward, weight, pscore, gamma):
    """The linear-fractional program by linprog after the Charnes–Cooper transform.

    max (or min) Σ r_i y_i  s.t.  Σ y_i = 1,  lo_i t <= y_i <= hi_i t,  t >= 0,
    with y = w̃ t and t = 1 / Σ w̃.
    """
    n = len(reward)
    low = weight * (1 - (1 - pscore) * (1 - 1 / gamma))
    high = weight * (1 + (gamma - 1) * (1 - pscore))
    eye = np.eye(n)
    a_ub = np.vstack([np.hstack([eye, -high[:, None]]), np.hstack([-eye, low[:, None]])])
    a_eq = np.append(np.ones(n), 0.0)[None, :]
    out = []
    for sign in (-1.0, 1.0):
        result = linprog(
            np.append(-sign * reward, 0.0), A_ub=a_ub, b_ub=np.zeros(2 * n), A_eq=a_eq,
            b_eq=[1.0], bounds=[(0, None)] * (n + 1), method="highs",
        )  # fmt: skip
        assert result.status == 0
        out.append(-sign * result.fun)
    return tuple(out)


@pytest.mark.parametrize("seed", range(6))
def test_closed_form_is_the_linear_fractional_optimum(seed):
    # Catches: a threshold search that misses the optimum (e.g. only all-high / all-low, or a
    # cut inside a group of tied rewards chosen wrongly), a wrong box of weights.
    rng = np.random.default_rng(seed)
    n = 12
    reward = rng.integers(0, 3, n).astype(float) if seed % 2 else rng.normal(size=n)
    weight = rng.exponential(size=n) * (rng.random(n) > 0.2)
    pscore = rng.uniform(0.02, 1.0, n)
    gamma = 1 + 4 * rng.random()
    assert np.allclose(snips_bounds(reward, weight, pscore, gamma), brute_force(reward, weight, pscore, gamma), atol=1e-9)  # fmt: skip


def test_the_box_is_the_marginal_sensitivity_model():
    # Catches: the box [w / Γ, w Γ] in place of Tan's odds-ratio box. One rewarded row with
    # p = 0.5 and one unrewarded with p = 1 (its weight cannot move): at Γ = 3 the rewarded
    # inverse propensity lies in [1 + 1/3, 1 + 3], so the upper bound is 4 / (4 + 1).
    lower, upper = snips_bounds(np.array([1.0, 0.0]), np.array([2.0, 1.0]), np.array([0.5, 1.0]), 3)
    assert upper == pytest.approx(4 / 5) and lower == pytest.approx((4 / 3) / (4 / 3 + 1))


def test_the_inputs_path_is_the_logs_path(slate_log):
    # Catches: an evaluator path that builds other weights or rounds than the logs path.
    logs, policy = slate_log
    evaluator = OfflineEvaluator(logs, "snips", reward_model=None)
    inputs, _ = evaluator.policy_inputs(policy)
    direct = sensitivity_curve_from_inputs(
        inputs, [1.5], pscore=evaluator.pscore, n_bootstrap=50, seed=4
    )
    assert direct == sensitivity_curve(logs, policy, [1.5], pscore=logs.pscore, n_bootstrap=50, seed=4)  # fmt: skip


@pytest.mark.slow
def test_bootstrap_bounds_at_the_true_gamma_cover_the_exact_value():
    """Measured (24 seeds, 40,000 rounds each, true Γ ≈ 2.68): Γ_true covers 24/24; Γ = 1 on
    the analyst's propensities covers 8/24; Γ = 1 on the logger's own covers 23/24."""
    # Catches: bounds that do not contain the truth where the model holds (wrong box, wrong
    # unit, a bootstrap that ignores sampling error). That coverage is not automatic is shown by
    # Γ = 1 on the analyst's propensities, which misses; with the logged (actual) propensities
    # Γ = 1 covers, so what misses is the hidden confounding, not the bootstrap.
    config = load_simulator_config(
        preset="hidden_confounding", n_users=300, n_items=30, latent_dim=8, logging_beta=1.0,
        hidden_confounding=0.2,
    )  # fmt: skip
    simulator = ConfoundedRecSimulator(config)
    true_gamma = simulator.true_sensitivity_gamma()
    assert 2 < true_gamma.gamma < 4 and true_gamma.standard_error < 1e-3
    # The log records the logger's actual propensities; an analyst who sees only the features
    # has at best those given the observed features.
    analyst, _ = simulator.observed_feature_propensity(np.arange(simulator.n_users))
    policy = SoftmaxPolicy(simulator.relevance_scorer, name="target")
    truth = simulator.policy_value(policy)
    seeds = range(24)
    covered = {"true gamma": 0, "gamma 1": 0, "gamma 1, logged pscore": 0}
    for seed in seeds:
        logs = generate_logs(simulator, n_rounds=40_000, seed=seed)
        pscore = analyst[logs.user_id, logs.item_id]
        at_one, at_truth = sensitivity_curve(
            logs, policy, [1.0, true_gamma.gamma], pscore=pscore, n_bootstrap=200, seed=seed
        )
        logged = sensitivity_bounds(logs, policy, 1.0, n_bootstrap=200, seed=seed)
        for name, bounds in [("true gamma", at_truth), ("gamma 1", at_one), ("gamma 1, logged pscore", logged)]:  # fmt: skip
            covered[name] += bounds.lower_bootstrap <= truth <= bounds.upper_bootstrap
    assert covered["true gamma"] >= math.ceil(0.95 * len(seeds)), covered
    assert covered["gamma 1"] <= len(seeds) // 2, covered
    assert covered["gamma 1, logged pscore"] >= 20, covered


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"gammas": [0.5]}, ConfigError, r"gammas\[0\] must be a finite number >= 1; got 0\.5"),
        ({"gammas": [1.0, float("nan")]}, ConfigError, r"gammas\[1\] must be .* got nan"),
        ({"gammas": [float("inf")]}, ConfigError, r"gammas\[0\] .* got inf"),
        ({"gammas": ["two"]}, ConfigError, r"gammas\[0\] must be a finite number >= 1; got 'two'"),
        ({"gammas": []}, ConfigError, r"gammas must hold at least one"),
        ({"alpha": 0.0}, ConfigError, r"alpha must be in \(0, 1\); got 0\.0"),
        ({"alpha": 1.5}, ConfigError, r"alpha must be in \(0, 1\); got 1\.5"),
        ({"n_bootstrap": 1}, ConfigError, r"n_bootstrap must be an integer >= 2; got 1"),
        ({"n_bootstrap": 10.5}, ConfigError, r"n_bootstrap must be an integer >= 2; got 10\.5"),
        ({"pscore": "zero"}, DataError, r"pscore must be in \(0, 1\]; got 0\.0 at row 0"),
        ({"pscore": "above one"}, DataError, r"pscore must be in \(0, 1\]; got 1\.5 at row 0"),
        ({"pscore": "short"}, DataError, r"pscore must have length 4500"),
    ],
)  # fmt: skip
def test_bad_inputs_name_the_argument_and_value(slate_log, change, error, match):
    # Catches: missing validation (NaN Γ would silently give NaN bounds, Γ < 1 inverted ones).
    logs, policy = slate_log
    pscores = {"zero": 0.0, "above one": 1.5}
    kwargs = {"gammas": [2.0], "n_bootstrap": 20, **change}
    if kwargs.get("pscore") == "short":
        kwargs["pscore"] = logs.pscore[:-1]
    elif "pscore" in kwargs:
        kwargs["pscore"] = np.full(logs.n_rows, pscores[kwargs["pscore"]])
    with pytest.raises(error, match=match):
        sensitivity_curve(logs, policy, **kwargs)


@pytest.mark.parametrize(
    ("arrays", "gamma", "match"),
    [
        ({"reward": np.ones(3)}, 2.0, r"reward and weight must have one shape"),
        ({"weight": -np.ones(2)}, 2.0, r"weight finite and >= 0"),
        ({"reward": np.array([np.nan, 1.0])}, 2.0, r"reward must be finite"),
        ({}, 0.99, r"gamma must be a finite number >= 1; got 0\.99"),
    ],
)
def test_snips_bounds_refuse_bad_arrays(arrays, gamma, match):
    base = {"reward": np.array([0.0, 1.0]), "weight": np.ones(2), "pscore": np.full(2, 0.5)}
    with pytest.raises((ConfigError, DataError), match=match):
        snips_bounds(**{**base, **arrays}, gamma=gamma)
