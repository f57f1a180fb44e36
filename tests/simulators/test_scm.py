import numpy as np
import pytest

from causalrec.platform.errors import ConfigError
from causalrec.platform.policy import SoftmaxPolicy, TopKPolicy
from causalrec.simulators import (
    ConfoundedRecSimulator,
    SimulatorConfig,
    generate_logs,
    load_simulator_config,
)


def naive_and_ips(simulator: ConfoundedRecSimulator, target: TopKPolicy, n_rounds: int, seed: int):
    """Naive and IPS estimates of a deterministic target's value, with standard errors."""
    log = generate_logs(simulator, n_rounds=n_rounds, seed=seed)
    chosen = target.top_k(np.arange(simulator.n_users))[:, 0]
    match = log.item_id == chosen[log.user_id]
    clicks = log.click[match]
    naive, naive_se = clicks.mean(), clicks.std() / np.sqrt(match.sum())
    terms = match * log.click / log.pscore
    ips, ips_se = terms.mean(), terms.std() / np.sqrt(len(terms))
    return naive, naive_se, ips, ips_se


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    ("preset", "naive_is_biased"), [("confounded", True), ("unconfounded", False)]
)
def test_confounding_biases_naive_but_not_ips(preset, naive_is_biased, seed):
    """Naive estimates miss by far more than noise under confounding only; IPS never does."""
    simulator = ConfoundedRecSimulator(
        load_simulator_config(preset=preset, n_users=2000, n_items=50)
    )
    target = simulator.oracle_policy()
    truth = simulator.policy_value(target)
    naive, naive_se, ips, ips_se = naive_and_ips(simulator, target, 100_000, seed)
    if naive_is_biased:
        assert (naive - truth) / naive_se > 5, "naive estimate should be far off under confounding"
    else:
        assert abs(naive - truth) / naive_se < 4, "naive estimate should be within noise"
    assert abs(ips - truth) / ips_se < 4, "IPS with the logged pscore should be within noise"


def test_logging_policy_value_equals_mean_expected_reward(small_simulator):
    log = generate_logs(small_simulator, n_rounds=200_000, seed=4)
    value = small_simulator.policy_value(small_simulator.logging_policy())
    se = log.expected_reward.std() / np.sqrt(log.n_rows)
    assert abs(log.expected_reward.mean() - value) < 4 * se
    click_se = log.click.std() / np.sqrt(log.n_rows)
    assert abs(log.click.mean() - value) < 4 * click_se


def test_slate_policy_value_equals_mean_clicks_per_round(slate_simulator):
    log = generate_logs(slate_simulator, n_rounds=60_000, seed=2)
    per_round = log.expected_reward.reshape(-1, 3).sum(axis=1)
    value = slate_simulator.policy_value(slate_simulator.logging_policy())
    assert abs(per_round.mean() - value) < 4 * per_round.std() / np.sqrt(len(per_round))


def test_oracle_bounds_every_policy(small_simulator, slate_simulator):
    for simulator in (small_simulator, slate_simulator):
        oracle = simulator.oracle_value()
        policies = [
            simulator.logging_policy(),
            simulator.uniform_policy(),
            simulator.oracle_policy(),
            SoftmaxPolicy(
                simulator.relevance_scorer, temperature=0.1, slate_size=simulator.slate_size
            ),
            TopKPolicy(simulator.logging_scorer, slate_size=simulator.slate_size, epsilon=0.1),
        ]
        values = [simulator.policy_value(policy) for policy in policies]
        assert all(value <= oracle + 1e-12 for value in values)
        assert simulator.policy_value(simulator.oracle_policy()) == pytest.approx(oracle, rel=1e-12)
        assert values[1] < values[0] < oracle  # the confounded logger beats uniform exposure


def test_oracle_value_by_brute_force(slate_simulator):
    relevance = slate_simulator.relevance(np.arange(slate_simulator.n_users))
    best = -np.sort(-relevance, axis=1)[:, :3] @ slate_simulator.examination
    assert slate_simulator.oracle_value() == pytest.approx(best.mean(), rel=1e-12)


def test_world_is_determined_by_seed():
    a = ConfoundedRecSimulator(SimulatorConfig(n_users=50, n_items=20, seed=1))
    b = ConfoundedRecSimulator(SimulatorConfig(n_users=50, n_items=20, seed=1))
    c = ConfoundedRecSimulator(SimulatorConfig(n_users=50, n_items=20, seed=2))
    np.testing.assert_array_equal(a.user_features, b.user_features)
    np.testing.assert_array_equal(a.relevance(np.arange(50)), b.relevance(np.arange(50)))
    assert not np.allclose(a.relevance(np.arange(50)), c.relevance(np.arange(50)))


def test_examination_follows_position_based_model():
    simulator = ConfoundedRecSimulator(
        SimulatorConfig(n_users=10, n_items=10, slate_size=4, position_bias=0.5)
    )
    np.testing.assert_allclose(simulator.examination, np.arange(1, 5) ** -0.5)


def test_observed_features_reveal_only_part_of_preference():
    simulator = ConfoundedRecSimulator(
        SimulatorConfig(
            n_users=3000, n_items=10, latent_dim=8, observed_latent_fraction=0.5, feature_noise=0.0
        )
    )
    theta = simulator.relevance_scorer.user_factors / simulator.config.relevance_scale
    features = simulator.user_features[:, : simulator.config.user_feature_dim]
    coef, *_ = np.linalg.lstsq(features, theta, rcond=None)
    explained = 1 - ((theta - features @ coef) ** 2).sum(axis=0) / (theta**2).sum(axis=0)
    assert (explained[:4] > 0.99).all() and (explained[4:] < 0.05).all()


def test_causal_graph_reflects_config():
    confounded = ConfoundedRecSimulator(load_simulator_config(preset="confounded", n_users=20))
    hidden = ConfoundedRecSimulator(load_simulator_config(preset="hidden_confounding", n_users=20))
    graph, hidden_graph = confounded.causal_graph(), hidden.causal_graph()
    for edge in [
        ("user_latent", "user_features"),
        ("user_latent", "relevance"),
        ("user_features", "exposure"),
        ("popularity", "exposure"),
        ("exposure", "click"),
        ("position", "examination"),
        ("examination", "click"),
        ("relevance", "click"),
    ]:
        assert graph.has_edge(*edge), edge
    assert graph.has_edge("popularity", "relevance")  # conformity > 0 in the preset
    assert not graph.has_edge("user_latent", "exposure")
    assert hidden_graph.has_edge("user_latent", "exposure")
    assert not hidden_graph.has_edge("popularity", "relevance")
    mermaid = graph.to_mermaid()
    assert mermaid.startswith("flowchart LR") and "exposure --> click" in mermaid
    assert set(graph.parents("click")) == {"exposure", "examination", "relevance"}


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"hidden_confounding": 0.5, "observed_latent_fraction": 1.0}, "observed_latent_fraction"),
        ({"confounding": 0.5, "nuisance_feature_dim": 0}, "nuisance_feature_dim"),
    ],
)
def test_inconsistent_worlds_are_refused(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        ConfoundedRecSimulator(SimulatorConfig(n_users=10, n_items=10, **overrides))


def test_policy_for_another_catalogue_is_refused(small_simulator):
    other = ConfoundedRecSimulator(SimulatorConfig(n_users=10, n_items=7))
    with pytest.raises(ConfigError, match="n_items=7"):
        small_simulator.policy_value(other.uniform_policy())
