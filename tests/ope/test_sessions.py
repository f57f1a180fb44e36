"""Sequential OPE on session logs: rebuilt histories, fitted Q evaluation, rollout truth."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from causalrec.ope.evaluate import OverlapWarning
from causalrec.ope.evaluate_sessions import evaluate_sessions
from causalrec.ope.fqe import FittedQEvaluation
from causalrec.ope.sessions import LoggedSessions
from causalrec.platform.errors import DataError, UnknownNameError
from causalrec.platform.policy import SoftmaxPolicy
from causalrec.platform.session import PolicyOnSessions
from causalrec.platform.units import CLICKS_PER_SESSION
from causalrec.simulators import ConfoundedRecSimulator, SimulatorConfig
from causalrec.simulators.rollout import iter_session_steps
from causalrec.simulators.session_logs import generate_session_logs

SMALL = dict(
    n_users=300, n_items=20, seed=3, session_length=3, logging_epsilon=0.3, history_window=3
)
MECHANISMS = {
    "drift": {"interest_drift": 0.2},
    "satiation": {"satiation": 1.0},
    "retention": {"leave_base": 0.3, "leave_sensitivity": 5.0},
    "feedback_loop": {
        "popularity_feedback": 0.1,
        "conformity": 0.5,
        "logging_gamma": 1.0,
        "concurrent_sessions": 500,
    },
}
#: Where sessions interfere (popularity pooled over a cohort) no per-session estimator is
#: unbiased: the logged states carry the logger's popularity, the truth the target's.
INTERFERING = {"feedback_loop"}


def _world(**fields) -> ConfoundedRecSimulator:
    return ConfoundedRecSimulator(SimulatorConfig(**{**SMALL, **fields}))


def test_rebuilt_contexts_are_what_the_logger_saw():
    simulator = _world(satiation=0.5, leave_base=0.2, session_length=5, history_window=2)
    logs = generate_session_logs(simulator, n_sessions=300, seed=7)
    sessions = LoggedSessions.from_logs(logs, horizon=5, window=2)
    records = list(
        iter_session_steps(
            simulator, simulator.session_logging_policy(), horizon=5, n_sessions=300, seed=7
        )
    )
    for record in records:
        rows = np.flatnonzero(record.alive)
        rebuilt = sessions.context(record.step, rows)
        np.testing.assert_array_equal(rebuilt.history_items, record.context.history_items[rows])
        np.testing.assert_array_equal(rebuilt.history_clicks, record.context.history_clicks[rows])
        np.testing.assert_array_equal(rebuilt.users, record.context.users[rows])


def test_a_context_never_sees_later_steps():
    logs = generate_session_logs(_world(satiation=0.5), n_sessions=50, seed=0)
    sessions = LoggedSessions.from_logs(logs)
    before = sessions.context(1)
    later = logs.step >= 1  # a sentinel item in every step from 1 on
    changed = dataclasses.replace(logs, item_id=np.where(later, 19, logs.item_id))
    after = LoggedSessions.from_logs(changed).context(1)
    np.testing.assert_array_equal(after.history_items, before.history_items)
    assert (LoggedSessions.from_logs(changed).context(2).history_items[:, -1, 0] == 19).all()


def test_the_logger_has_ratio_one_at_every_logged_step():
    simulator = _world(leave_base=0.3)
    logs = generate_session_logs(simulator, n_sessions=200, seed=1)
    sessions = LoggedSessions.from_logs(logs)
    ratio = sessions.policy_ratio(PolicyOnSessions(simulator.logging_policy()))
    np.testing.assert_allclose(ratio, 1.0, rtol=1e-12)
    assert not sessions.mask.all()  # some users left


def test_broken_session_logs_are_refused_by_name():
    logs = generate_session_logs(_world(), n_sessions=20, seed=0)
    gap = logs.select(logs.step != 1)
    with pytest.raises(DataError, match="skips a step"):
        LoggedSessions.from_logs(gap, horizon=3)
    twice = dataclasses.replace(logs, step=np.where(logs.step == 1, 0, logs.step))
    with pytest.raises(DataError, match="more than once"):
        LoggedSessions.from_logs(twice)
    users = dataclasses.replace(logs, user_id=logs.user_id + (logs.step == 2))
    with pytest.raises(DataError, match="more than one user_id"):
        LoggedSessions.from_logs(users)
    with pytest.raises(DataError, match="beyond horizon=2"):
        LoggedSessions.from_logs(logs, horizon=2)


def test_fqe_recovers_a_constant_click_rate():
    # Relevance is the same for every user and item: V_t = p (T - t) for any policy.
    simulator = _world(relevance_scale=0.0, item_bias_std=0.0, global_bias=-1.0)
    p = 1 / (1 + np.exp(1.0))
    logs = generate_session_logs(simulator, n_sessions=3_000, seed=2)
    sessions = LoggedSessions.from_logs(logs)
    target = SoftmaxPolicy(simulator.logging_scorer, temperature=3.0)
    _, v = FittedQEvaluation().fit_predict(
        sessions, PolicyOnSessions(target).session_action_distribution, logs.item_table
    )
    np.testing.assert_allclose(v.mean(axis=0), p * np.array([3.0, 2.0, 1.0]), rtol=0.1)


@pytest.mark.parametrize("mechanism", sorted(MECHANISMS))
def test_sequential_estimators_against_rollout_truth(mechanism):
    simulator = _world(**MECHANISMS[mechanism])
    target = SoftmaxPolicy(simulator.relevance_scorer, temperature=2.0, name="target")
    truth = simulator.long_term_value(target, n_sessions=200_000, seed=99)
    seeds = 12
    estimates: dict[str, list[float]] = {}
    covered: dict[str, int] = {}
    for seed in range(seeds):
        logs = generate_session_logs(simulator, n_sessions=1_500, seed=seed)
        table = evaluate_sessions(logs, target)
        assert set(table["unit"]) == {CLICKS_PER_SESSION}
        for row in table.itertuples():
            estimates.setdefault(row.estimator, []).append(row.estimate)
            covered[row.estimator] = covered.get(row.estimator, 0) + (row.low <= truth <= row.high)
    unbiased = () if mechanism in INTERFERING else ("pdis", "dr")
    for name in unbiased:  # unbiased with the logger's exact propensities
        values = np.array(estimates[name])
        error = np.hypot(values.std(ddof=1) / np.sqrt(seeds), truth.standard_error)
        assert abs(values.mean() - truth) < 4 * error, (name, values.mean(), float(truth))
    for name, hits in covered.items():
        assert hits >= 8, (name, hits)  # nominal 95%: 8 of 12 or fewer has probability < 0.2%


def test_evaluate_sessions_refuses_what_it_cannot_do():
    simulator = _world(slate_size=2, satiation=0.5)
    logs = generate_session_logs(simulator, n_sessions=100, seed=0)
    target = SoftmaxPolicy(simulator.relevance_scorer, slate_size=2)
    table = evaluate_sessions(logs, target, "pdis,wpdis")
    assert list(table["estimator"]) == ["pdis", "wpdis"] and table["estimate"].notna().all()
    with pytest.raises(DataError, match="K = 2"):
        evaluate_sessions(logs, target, "dr")
    with pytest.raises(UnknownNameError, match="pdsi"):
        evaluate_sessions(logs, target, "pdsi")


def test_cli_evaluates_a_session_log(tmp_path, capsys):
    import json

    from causalrec.platform.cli import main
    from causalrec.simulators.session_logs import write_session_logs

    write_session_logs(_world(satiation=0.5), tmp_path / "logs", 500, seed=0)
    logs = str(tmp_path / "logs")
    assert main(["evaluate", "--logs", logs, "--policy", "softmax:2", "--sessions", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert [row["estimator"] for row in rows] == ["pdis", "wpdis", "dr", "wdr"]
    assert {row["unit"] for row in rows} == {CLICKS_PER_SESSION}
    assert all(row["low"] <= row["estimate"] <= row["high"] for row in rows)
    assert main(["evaluate", "--logs", logs, "--policy", "oracle", "--sessions"]) == 0
    printed = capsys.readouterr().out
    assert "unit: clicks per session   sessions: 500   steps: 3" in printed
    assert "warning: poor overlap: the sessions' cumulative weights keep an effective" in printed
    bad = ["evaluate", "--logs", logs, "--policy", "oracle", "--sessions", "--estimators", "pdsi"]
    assert main(bad) == 2
    error = capsys.readouterr().err
    assert "pdsi" in error and "pdis" in error


def test_poor_overlap_over_the_session_is_flagged():
    simulator = _world(logging_epsilon=0.05, logging_beta=4.0)
    logs = generate_session_logs(simulator, n_sessions=2_000, seed=0)
    with pytest.warns(OverlapWarning, match="poor overlap"):
        far = evaluate_sessions(logs, simulator.oracle_policy(), "pdis")
    assert far["ess_share"].iloc[0] < 0.01 and far["warning"].iloc[0].startswith("poor overlap")
    with warnings.catch_warnings():
        warnings.simplefilter("error", OverlapWarning)
        near = evaluate_sessions(logs, simulator.logging_policy(), "pdis")
    assert near["ess_share"].iloc[0] == pytest.approx(1.0) and near["warning"].iloc[0] == ""
