"""Interventions: exact propensities of the changed policies, and their effects three ways."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import logit, softmax

from causalrec.loop.arms import Deployment, fixed_deployment
from causalrec.loop.config import InterventionConfig
from causalrec.loop.interventions import (
    ExcludeItems,
    SplitPolicy,
    UniformMixture,
    ab_assignment,
    apply_intervention,
)
from causalrec.loop.metrics import METRICS
from causalrec.loop.runner import run_loop
from causalrec.methods import make_recommender
from causalrec.platform.errors import ConfigError
from causalrec.platform.policy import Exploration
from causalrec.platform.session import NO_ITEM, SessionContext, as_session_policy
from causalrec.simulators import generate_logs

from .test_runner import MEASURED, tiny


def _context(users: np.ndarray) -> SessionContext:
    n = len(users)
    return SessionContext(
        users=users,
        step=np.zeros(n, np.int64),
        history_items=np.full((n, 1, 1), NO_ITEM, np.int64),
        history_clicks=np.zeros((n, 1, 1), np.int8),
    )


def _intervention(**values) -> InterventionConfig:
    return InterventionConfig.from_dict({"name": "i", "arm": "a", "from_generation": 1, **values})


@pytest.fixture(scope="module")
def fitted(small_simulator):
    logs = generate_logs(small_simulator, n_rounds=3_000, seed=0)
    return make_recommender("naive", epochs=1, dim=8, seed=0, device="cpu").fit(logs)


def test_uniform_mixture_propensities_are_exact_and_match_its_draws(small_simulator):
    logger = small_simulator.session_logging_policy()
    mixture = UniformMixture(logger, 0.3, "explore")
    users = np.repeat(np.arange(5), 20_000)
    context = _context(users)
    sample = mixture.sample_session(context, np.random.default_rng(0))
    expected = 0.7 * logger.session_action_distribution(context) + 0.3 / small_simulator.n_items
    rows = np.arange(len(users))
    np.testing.assert_allclose(sample.marginal_pscore[:, 0], expected[rows, sample.actions[:, 0]])
    np.testing.assert_allclose(sample.pscore_prefix, sample.marginal_pscore)
    for user in range(5):  # frequencies within 5 standard errors of the exact probabilities
        shown = np.bincount(sample.actions[users == user, 0], minlength=small_simulator.n_items)
        p = expected[user * 20_000]
        se = np.sqrt(p * (1 - p) / 20_000)
        assert np.all(np.abs(shown / 20_000 - p) <= 5 * se + 1e-12)


def test_removed_items_are_never_shown_and_a_ranker_shows_its_next_item(small_simulator, fitted):
    users = np.arange(small_simulator.n_users)
    top = fitted.policy(1).deterministic_slates(users)[:, 0]
    removed = np.unique(top)[:2]
    deployment = Deployment(as_session_policy(fitted.policy(1)), "m", fitted)
    changed = apply_intervention(
        _intervention(kind="remove", items=removed.tolist()),
        deployment,
        small_simulator,
        exploration=Exploration("epsilon", epsilon=0.2),
        head_share=0.2,
    )
    assert isinstance(changed.policy, ExcludeItems) and changed.version == "m+i"
    context = _context(users)
    dist = changed.policy.session_action_distribution(context)
    assert dist[:, removed].max() == 0 and np.allclose(dist.sum(axis=1), 1)
    scores = fitted.score(users)
    scores[:, removed] = -np.inf
    greedy = scores.argmax(axis=1)  # the next item of each user whose top item was removed
    n = small_simulator.n_items
    expected = np.full((len(users), n), 0.2 / n)
    expected[users, greedy] += 0.8
    expected[:, removed] = 0
    np.testing.assert_allclose(dist, expected / expected.sum(axis=1, keepdims=True))
    sample = changed.policy.sample_session(context, np.random.default_rng(1))
    assert not np.isin(sample.actions, removed).any()
    np.testing.assert_allclose(sample.marginal_pscore[:, 0], dist[users, sample.actions[:, 0]])


def test_boost_multiplies_the_odds_of_the_boosted_items_in_the_ranking(small_simulator, fitted):
    users = np.arange(small_simulator.n_users)
    deployment = Deployment(as_session_policy(fitted.policy(1)), "m", fitted)
    items = [3, 7, 11]
    changed = apply_intervention(
        _intervention(kind="boost", items=items, factor=4.0),
        deployment,
        small_simulator,
        exploration=Exploration("softmax", temperature=0.5),
        head_share=0.2,
    )
    odds = logit(np.clip(fitted.score(users), 1e-15, 1 - 1e-15))
    odds[:, items] += np.log(4.0)
    expected = softmax(odds / 0.5, axis=1)
    dist = changed.policy.session_action_distribution(_context(users))
    np.testing.assert_allclose(dist, expected, rtol=1e-9, atol=1e-12)
    unboosted = fitted.policy(1, "softmax", temperature=0.5).action_distribution(users)
    assert (dist[:, items].sum(axis=1) > unboosted[:, items].sum(axis=1)).all()


def test_capping_popularity_removes_the_loggers_popularity_weight(small_simulator):
    users = np.arange(small_simulator.n_users)
    changed = apply_intervention(
        _intervention(kind="cap_popularity", weight=0.0),
        fixed_deployment("logging", small_simulator),
        small_simulator,
        exploration=Exploration(),
        head_share=0.2,
    )
    c = small_simulator.config
    logits = small_simulator.logging_scorer.scores(users)
    logits = logits - c.logging_gamma * np.log(small_simulator.popularity)
    expected = (1 - c.logging_epsilon) * softmax(logits, axis=1) + c.logging_epsilon / 40
    dist = changed.policy.session_action_distribution(_context(users))
    np.testing.assert_allclose(dist, expected, rtol=1e-9)


def test_a_split_serves_each_user_its_arms_policy(small_simulator):
    treated = ab_assignment(small_simulator.n_users, 0.25, seed=3, generation=2)
    assert treated.sum() == 75
    assert not np.array_equal(treated, ab_assignment(small_simulator.n_users, 0.25, 3, 1))
    oracle = as_session_policy(small_simulator.oracle_policy())
    uniform = as_session_policy(small_simulator.uniform_policy())
    split = SplitPolicy(oracle, uniform, treated, "ab")
    context = _context(np.arange(small_simulator.n_users))
    sample = split.sample_session(context, np.random.default_rng(0))
    best = small_simulator.oracle_policy().deterministic_slates(context.users)
    np.testing.assert_array_equal(sample.actions[~treated], best[~treated])
    assert np.allclose(sample.marginal_pscore[treated], 1 / 40)
    assert np.allclose(sample.marginal_pscore[~treated], 1.0)


def test_an_intervened_twin_equals_its_arm_until_the_intervention_and_effects_are_reported(
    tmp_path,
):
    config = tiny(
        seeds=[0, 1],
        interventions=[
            {"name": "boost", "arm": "naive", "from_generation": 2, "kind": "boost",
             "items": "tail", "factor": 3.0},
            {"name": "cap", "arm": "logger", "from_generation": 1, "kind": "cap_popularity",
             "weight": 0.0},
        ],
    )  # fmt: skip
    results = run_loop(config, tmp_path / "run").results
    for name, arm, g in (("boost", "naive", 2), ("cap", "logger", 1)):
        twin = results[results.arm == name].set_index(["seed", "generation"])[MEASURED[1:]]
        base = results[results.arm == arm].set_index(["seed", "generation"])[MEASURED[1:]]
        before = twin.index.get_level_values("generation") < g
        cols = [c for c in MEASURED[1:] if c != "version"]
        pd.testing.assert_frame_equal(twin[before], base[before], check_exact=True)
        assert (twin.loc[~before, "version"] != base.loc[~before, "version"]).all()
        assert (twin.loc[~before, cols[0]] != base.loc[~before, cols[0]]).all()
    effects = pd.read_csv(tmp_path / "run" / "effects.csv")
    methods = set(effects.method)
    assert methods == {"exact, first generation", "exact, last generation", "A/B test",
                       "off-policy"}  # fmt: skip
    # The exact effect is the twins' difference in the results, seed by seed.
    exact = effects[(effects.intervention == "boost") & (effects.method.str.startswith("exact, f"))]
    for row in exact.itertuples():
        pick = results[(results.seed == row.seed) & (results.generation == 2)].set_index("arm")
        assert row.effect == pick.loc["boost", row.metric] - pick.loc["naive", row.metric]
    assert set(exact.metric) == {m.column for m in METRICS}
    assert effects[effects.method == "A/B test"].effect.notna().all()
    ab_value = (effects.method == "A/B test") & (effects.metric == "truth")
    assert (effects[ab_value].standard_error > 0).all()
    assert effects[~ab_value].standard_error.isna().all()
    offline = effects[effects.method == "off-policy"]
    assert offline[offline.metric == "truth"].effect.notna().all()
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Interventions: exact, A/B test and off-policy effects" in report
    assert "boost: on arm naive from generation 2" in report
    assert "interval within the seed" in report


def test_the_ab_tests_within_seed_standard_error_is_calibrated(small_simulator):
    # Treatment = control: the true effect is 0, so effect / standard error is a z-score; over
    # 40 independent splits about 95% of them lie within 1.96 and their spread is about 1.
    from causalrec.loop.effects import ab_effect
    from causalrec.loop.metrics import long_tail_items
    from causalrec.loop.world import WorldState

    logger = fixed_deployment("logging", small_simulator)
    tail = long_tail_items(small_simulator.popularity, 0.2)
    state = WorldState.initial(small_simulator)
    z = np.array([
        (effect := ab_effect(small_simulator, state, logger, logger, share=0.5, seed=seed,
                             tail=tail))["truth"] / effect["truth_se"]
        for seed in range(40)
    ])  # fmt: skip
    assert 0.6 < z.std(ddof=1) < 1.5, z
    assert np.mean(np.abs(z) < 1.96) >= 0.85, z


@pytest.mark.parametrize(
    ("intervention", "message"),
    [
        ({"name": "i", "arm": "nobody", "from_generation": 1, "kind": "explore", "epsilon": 0.1},
         "interventions.i.arm: no arm 'nobody'"),
        ({"name": "i", "arm": "naive", "from_generation": 1, "kind": "cap_popularity",
          "weight": 0.5}, "does not serve policy: logging"),
        ({"name": "i", "arm": "naive", "from_generation": 9, "kind": "explore", "epsilon": 0.1},
         "after the last generation"),
        ({"name": "i", "arm": "naive", "from_generation": 1, "kind": "boost", "items": "tail"},
         "boost needs 'factor'"),
        ({"name": "i", "arm": "naive", "from_generation": 1, "kind": "explore", "epsilon": 0.1,
          "factor": 2.0}, "explore takes no 'factor'"),
        ({"name": "naive", "arm": "naive", "from_generation": 1, "kind": "explore",
          "epsilon": 0.1}, "already an arm's"),
        ({"name": "i", "arm": "naive", "from_generation": 1, "kind": "remove", "items": [40]},
         "interventions.i.items: 40 is not an item of the world's 40"),
    ],
)  # fmt: skip
def test_bad_interventions_are_refused_before_any_output(tmp_path, intervention, message):
    with pytest.raises(ConfigError, match=message):
        run_loop(tiny(interventions=[intervention]), tmp_path / "run")
    assert not (tmp_path / "run").exists()
