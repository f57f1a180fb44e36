"""The dynamic world: drift, satiation, popularity feedback, leaving and long-term value by rollouts."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy.special import expit, log_softmax

from causalrec.platform.errors import ConfigError
from causalrec.platform.policy import SlateSample, SoftmaxPolicy, TopKPolicy
from causalrec.platform.session import NO_ITEM, SessionContext, SessionPolicy
from causalrec.platform.units import CLICKS_PER_SESSION
from causalrec.simulators import ConfoundedRecSimulator, SimulatorConfig, generate_logs
from causalrec.simulators.config import load_simulator_config
from causalrec.simulators.dynamics import PopularityFeedbackLogger, UserDynamics
from causalrec.simulators.rollout import iter_session_steps

SMALL = dict(n_users=300, n_items=40, seed=1)


def _world(**fields) -> ConfoundedRecSimulator:
    return ConfoundedRecSimulator(SimulatorConfig(**{**SMALL, **fields}))


def _draws_fingerprint(logs) -> str:
    """SHA-256 of the drawn columns (rounds, users, positions, items, clicks): the draws."""
    digest = hashlib.sha256()
    for name in ("round_id", "user_id", "position", "item_id", "click"):
        digest.update(np.ascontiguousarray(getattr(logs, name)).tobytes())
    return digest.hexdigest()[:16]


@pytest.mark.parametrize(
    ("fields", "draws", "pscore_sum", "expected_sum"),
    [
        ({}, "d95242f89d3578dd", 265.4416400373759, 362.49568903125396),
        ({"slate_size": 3}, "f3052bfd09a80111", 554.6694064199019, 668.0838223459157),
    ],
)
def test_static_logs_are_unchanged_by_the_dynamics_fields(fields, draws, pscore_sum, expected_sum):
    # Golden values of the simulator before the dynamics fields existed (commit 0b85c3d, run on
    # the machine that wrote this check, where its whole-log fingerprints equal today's). With every
    # dynamics field at its default the logs are the same, draw for draw. The draws are compared
    # exactly; propensities and expected rewards to 1e-9, because their last bits depend on the
    # CPU (numpy's SIMD kernels and OpenBLAS pick other instructions on other machines: the
    # whole-log fingerprint of these logs differs between an AVX-512 machine and the same one
    # with AVX-512 switched off).
    simulator = ConfoundedRecSimulator(SimulatorConfig(n_users=200, n_items=50, **fields))
    assert not simulator.config.dynamic
    logs = generate_logs(simulator, n_rounds=2000, seed=3)
    assert _draws_fingerprint(logs) == draws
    assert float(logs.pscore.sum()) == pytest.approx(pscore_sum, rel=1e-9)
    assert float(logs.expected_reward.sum()) == pytest.approx(expected_sum, rel=1e-9)


@pytest.mark.parametrize("slate_size", [1, 3])
def test_horizon_one_without_dynamics_estimates_the_exact_policy_value(slate_size):
    simulator = _world(slate_size=slate_size)
    for policy in (simulator.logging_policy(), simulator.uniform_policy()):
        exact = simulator.policy_value(policy)
        rollout = simulator.long_term_value(policy, horizon=1, n_sessions=40_000, seed=5)
        assert rollout.unit == CLICKS_PER_SESSION
        assert rollout.n_sessions == 40_000 and rollout.horizon == 1
        assert 0 < rollout.standard_error < 0.02 * exact
        assert abs(rollout - exact) < 4 * rollout.standard_error


def test_without_dynamics_a_session_is_horizon_times_one_step():
    simulator = _world()
    policy = simulator.logging_policy()
    rollout = simulator.long_term_value(policy, horizon=6, n_sessions=20_000, seed=2)
    exact = 6 * simulator.policy_value(policy)
    assert abs(rollout - exact) < 4 * rollout.standard_error


def test_common_random_numbers_make_the_paired_difference_precise():
    # Two close policies: the oracle and its ε-greedy version show the same item in most steps,
    # and with common random numbers the same item is clicked under the same draw.
    simulator = _world(interest_drift=0.1, satiation=0.5)
    greedy = TopKPolicy(simulator.relevance_scorer, epsilon=0.1, name="greedy")
    paired = simulator.paired_long_term_value(
        simulator.oracle_policy(), greedy, horizon=5, n_sessions=4_000, seed=3
    )
    assert paired.difference == pytest.approx(paired.policy - paired.baseline, abs=1e-12)
    independent = np.hypot(paired.policy.standard_error, paired.baseline.standard_error)
    assert paired.difference_se < 0.3 * independent
    # The same seed reproduces the same rollout.
    again = simulator.long_term_value(
        simulator.oracle_policy(), horizon=5, n_sessions=4_000, seed=3
    )
    assert float(again) == float(paired.policy)


def test_interest_drift_moves_the_user_towards_the_clicked_item():
    simulator = _world(interest_drift=0.25)
    dynamics = UserDynamics(simulator)
    state = dynamics.start(np.array([3, 3]))
    slates = np.array([[7], [7]])
    before = dynamics.relevance_logits(state, slates).copy()
    dynamics.advance(state, slates, np.array([[1], [0]], dtype=np.int8))
    after = dynamics.relevance_logits(state, slates)
    scorer = simulator.relevance_scorer
    target = simulator.config.relevance_scale * np.sqrt(16) * scorer.item_factors[7]
    expected_theta = scorer.user_factors[3] + 0.25 * (target - scorer.user_factors[3])
    np.testing.assert_allclose(state.theta[0], expected_theta, rtol=1e-12)
    np.testing.assert_allclose(state.theta[1], scorer.user_factors[3], rtol=0)
    assert after[0, 0] > before[0, 0] and after[1, 0] == before[1, 0]


def test_satiation_lowers_the_clicked_cluster_and_recovers():
    simulator = _world(satiation=0.8, satiation_recovery=0.25)
    dynamics = UserDynamics(simulator)
    state = dynamics.start(np.array([0]))
    item = np.array([[5]])
    cluster = dynamics.item_cluster[5]
    same = np.flatnonzero(dynamics.item_cluster == cluster)
    other = np.flatnonzero(dynamics.item_cluster != cluster)[:1]
    both = np.array([[same[0], other[0]]]).reshape(1, 2)
    before = dynamics.relevance_logits(state, both).copy()
    dynamics.advance(state, item, np.array([[1]], dtype=np.int8))
    np.testing.assert_allclose(
        before - dynamics.relevance_logits(state, both), [[0.8, 0.0]], atol=1e-12
    )
    dynamics.advance(state, item, np.array([[0]], dtype=np.int8))
    np.testing.assert_allclose(
        before - dynamics.relevance_logits(state, both), [[0.6, 0.0]], atol=1e-12
    )


def test_popularity_follows_the_cohort_click_share_and_drives_the_logger():
    simulator = _world(popularity_feedback=0.1, conformity=0.5, logging_gamma=1.0)
    dynamics = UserDynamics(simulator)
    state = dynamics.start(np.array([0, 1, 2, 3]), cohort=np.array([0, 0, 1, 1]))
    slates = np.array([[2], [2], [9], [4]])
    clicks = np.array([[1], [1], [1], [0]], dtype=np.int8)
    dynamics.advance(state, slates, clicks)
    pop0 = simulator.popularity
    expected0 = 0.9 * pop0 + 0.1 * np.eye(40)[2]
    expected1 = 0.9 * pop0 + 0.1 * np.eye(40)[9]
    np.testing.assert_allclose(state.popularity, np.vstack([expected0, expected1]), rtol=1e-12)
    # A step without clicks in a cohort leaves its popularity as it was.
    dynamics.advance(state, slates, np.zeros((4, 1), dtype=np.int8))
    np.testing.assert_allclose(state.popularity, np.vstack([expected0, expected1]), rtol=1e-12)

    # The logger's softmax reads γ·log pop of the session's cohort at this step.
    logger = PopularityFeedbackLogger(simulator)
    context = state.context()
    logits = simulator.logging_scorer.scores(state.users) + 1.0 * (
        np.log(state.popularity[state.cohort]) - np.log(pop0)
    )
    eps = simulator.config.logging_epsilon
    expected = (1 - eps) * np.exp(log_softmax(logits, axis=1)) + eps / 40
    np.testing.assert_allclose(logger.session_action_distribution(context), expected, rtol=1e-12)
    sample = logger.sample_session(context, np.random.default_rng(0))
    rows = np.arange(4)
    np.testing.assert_allclose(sample.marginal_pscore[:, 0], expected[rows, sample.actions[:, 0]])
    # Conformity: relevance of item 2 rose in cohort 0 (its popularity rose), not in cohort 1.
    static = UserDynamics(simulator).start(state.users, state.cohort)
    gain = dynamics.relevance_logits(state, np.full((4, 1), 2)) - dynamics.relevance_logits(
        static, np.full((4, 1), 2)
    )
    assert gain[0, 0] > 0 and gain[2, 0] < 0


def test_leaving_follows_recent_satisfaction():
    simulator = _world(leave_base=0.4, leave_sensitivity=3.0, history_window=2)
    dynamics = UserDynamics(simulator)
    state = dynamics.start(np.array([0, 1]))
    slates = np.array([[1], [2]])
    p = dynamics.advance(state, slates, np.array([[1], [0]], dtype=np.int8))
    np.testing.assert_allclose(p, [0.4 * np.exp(-3.0), 0.4])
    p = dynamics.advance(state, slates, np.array([[0], [0]], dtype=np.int8))
    np.testing.assert_allclose(p, [0.4 * np.exp(-1.5), 0.4])
    p = dynamics.advance(state, slates, np.array([[0], [0]], dtype=np.int8))
    np.testing.assert_allclose(p, [0.4, 0.4])  # the click fell out of the window of 2 steps


def test_users_who_always_leave_give_one_step_of_value():
    simulator = _world(leave_base=1.0)
    policy = simulator.logging_policy()
    rollout = simulator.long_term_value(policy, horizon=8, n_sessions=40_000, seed=4)
    exact = simulator.policy_value(policy)
    assert abs(rollout - exact) < 4 * rollout.standard_error


class _RepeatLastClick(SessionPolicy):
    """Shows the last clicked item again, else item 0 (a history-aware policy)."""

    def __init__(self, n_items: int):
        self.name, self.n_items, self.slate_size = "repeat", n_items, 1

    def _choice(self, context: SessionContext) -> np.ndarray:
        clicked = np.where(context.history_clicks[:, :, 0] > 0, context.history_items[:, :, 0], -1)
        last = np.full(context.n, 0)
        for j in range(clicked.shape[1]):
            last = np.where(clicked[:, j] >= 0, clicked[:, j], last)
        return last

    def sample_session(self, context, rng):
        actions = self._choice(context)[:, None]
        ones = np.ones((context.n, 1))
        return SlateSample(actions, ones, ones.copy())

    def session_action_distribution(self, context):
        return np.eye(self.n_items)[self._choice(context)]


def test_a_session_policy_sees_the_history_of_its_own_session():
    simulator = _world(history_window=3)
    records = list(
        iter_session_steps(simulator, _RepeatLastClick(40), horizon=5, n_sessions=50, seed=0)
    )
    assert [r.step for r in records] == [0, 1, 2, 3, 4]
    assert (records[0].context.history_items == NO_ITEM).all()
    for t in range(1, 5):
        seen = records[t].context
        for lag in range(1, min(t, 3) + 1):
            np.testing.assert_array_equal(
                seen.history_items[:, -lag], records[t - lag].sample.actions
            )
            np.testing.assert_array_equal(seen.history_clicks[:, -lag], records[t - lag].clicks)
    value = simulator.long_term_value(_RepeatLastClick(40), horizon=5, n_sessions=2_000)
    assert value > 0


def test_rollouts_accept_saved_model_policies():
    # Any Policy over the world's catalogue can be rolled out: here a softmax over a fitted-like
    # scorer (the world's logging scores) at a different temperature.
    simulator = _world(satiation=0.5)
    policy = SoftmaxPolicy(simulator.logging_scorer, temperature=2.0, name="model")
    value = simulator.long_term_value(policy, horizon=4, n_sessions=3_000)
    assert 0 < value < 4 * simulator.oracle_value()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"horizon": 0}, "horizon"),
        ({"horizon": 2.5}, "horizon"),
        ({"n_sessions": 0}, "n_sessions"),
    ],
)
def test_bad_rollout_arguments_name_the_field(kwargs, field):
    simulator = _world()
    with pytest.raises(ConfigError, match=field):
        simulator.long_term_value(simulator.logging_policy(), **{"n_sessions": 10, **kwargs})


def test_a_policy_that_cannot_act_on_sessions_is_refused():
    simulator = _world()
    with pytest.raises(ConfigError, match="cannot score a history"):
        simulator.long_term_value(object(), n_sessions=10)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("interest_drift", 1.5),
        ("satiation", -0.1),
        ("satiation_recovery", 2.0),
        ("popularity_feedback", 1.0),
        ("leave_base", -0.5),
        ("leave_sensitivity", -1.0),
        ("history_window", 0),
        ("concurrent_sessions", 0),
    ],
)
def test_dynamics_fields_out_of_range_name_the_field_and_value(field, value):
    with pytest.raises(ConfigError, match=rf"{field}.*{value}"):
        SimulatorConfig(**SMALL).replace(**{field: value})


def test_the_graph_gains_next_step_nodes_only_with_dynamics():
    static = _world().causal_graph()
    assert not any(node.name.endswith("_next") for node in static.nodes)
    world = _world(interest_drift=0.1, satiation=0.5, popularity_feedback=0.1, leave_base=0.2)
    graph = world.causal_graph()
    assert graph.has_edge("click", "user_latent_next")
    assert graph.has_edge("click", "satiation_next")
    assert graph.has_edge("click", "popularity_next")
    assert graph.has_edge("popularity_next", "exposure_next")
    assert graph.has_edge("click", "leave")
    drift_only = _world(interest_drift=0.1).causal_graph()
    assert not drift_only.has_edge("click", "popularity_next")
    assert "satiation_next" not in {node.name for node in drift_only.nodes}


@pytest.mark.parametrize("preset", ["drift", "satiation", "feedback_loop", "retention"])
def test_dynamic_presets_are_dynamic_and_differ_from_the_default_in_their_mechanism(preset):
    config = load_simulator_config(preset=preset)
    default = load_simulator_config(preset="default")
    assert config.dynamic and not default.dynamic
    changed = {k for k, v in config.model_dump().items() if default.model_dump()[k] != v}
    mechanism = {
        "drift": {"interest_drift"},
        "satiation": {"satiation"},
        "feedback_loop": {"popularity_feedback"},
        "retention": {"leave_base", "leave_sensitivity"},
    }[preset]
    assert mechanism <= changed


def test_expit_of_the_state_logits_is_the_expected_reward():
    simulator = _world(interest_drift=0.2, slate_size=2)
    dynamics = UserDynamics(simulator)
    state = dynamics.start(np.array([4, 8]))
    slates = np.array([[1, 2], [3, 4]])
    dynamics.advance(state, slates, np.array([[1, 0], [0, 1]], dtype=np.int8))
    np.testing.assert_allclose(
        dynamics.expected_reward(state, slates),
        expit(dynamics.relevance_logits(state, slates)) * simulator.examination,
        rtol=1e-12,
    )


def test_the_report_figure_draws_the_time_indexed_graph(tmp_path):
    from causalrec.pipeline.figures import layered_layout, plot_causal_graph

    world = _world(interest_drift=0.1, satiation=0.5, popularity_feedback=0.1, leave_base=0.2)
    graph = world.causal_graph().to_dict()
    layers = layered_layout(graph)
    assert layers["click_next"][0] > layers["click"][0]  # step t+1 is drawn after step t
    assert layers["popularity_next"][0] > layers["click"][0]
    assert plot_causal_graph(graph, tmp_path / "graph.png").stat().st_size > 0
