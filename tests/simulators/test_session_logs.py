"""Session logs: whole sessions with session_id, step and timestamp, in memory, on disk, by CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from causalrec.platform.errors import ConfigError
from causalrec.platform.storage import read_logs
from causalrec.simulators import ConfoundedRecSimulator, SimulatorConfig
from causalrec.simulators.session_logs import generate_session_logs, write_session_logs

SMALL = dict(n_users=300, n_items=40, seed=2, session_length=6, concurrent_sessions=50)


@pytest.fixture(scope="module")
def retention() -> ConfoundedRecSimulator:
    return ConfoundedRecSimulator(SimulatorConfig(**SMALL, leave_base=0.3, leave_sensitivity=4.0))


def test_sessions_are_contiguous_steps_in_clock_order(retention):
    log = generate_session_logs(retention, n_sessions=400, seed=1)
    assert log.metadata["sessions"] == 400 and log.metadata["schema_version"] == 2
    assert np.all(np.diff(log.round_id) == 1)
    assert np.all(np.diff(log.timestamp) >= 0)  # round ids follow the world clock
    lengths = np.bincount(log.session_id, minlength=400)
    assert lengths.min() >= 1 and lengths.max() == 6 and lengths.mean() < 6  # users left
    for session in range(400):
        steps = log.step[log.session_id == session]
        np.testing.assert_array_equal(steps, np.arange(len(steps)))
        assert len(np.unique(log.user_id[log.session_id == session])) == 1
    np.testing.assert_array_equal(log.timestamp, (log.session_id // 50) * 6 + log.step)
    np.testing.assert_array_equal(log.step_pscore, log.pscore)  # K = 1


def test_logged_propensities_are_the_loggers(retention):
    log = generate_session_logs(retention, n_sessions=200, seed=3)
    exact = retention.logging_policy().action_distribution(log.user_id)
    np.testing.assert_allclose(log.pscore, exact[np.arange(log.n_rows), log.item_id], rtol=1e-12)


def test_observed_clicks_per_session_match_the_rollout_truth(retention):
    log = generate_session_logs(retention, n_sessions=8_000, seed=4)
    per_session = np.bincount(log.session_id, weights=log.click, minlength=8_000)
    truth = retention.long_term_value(retention.session_logging_policy(), n_sessions=40_000, seed=9)
    error = np.hypot(per_session.std(ddof=1) / np.sqrt(8_000), truth.standard_error)
    assert abs(per_session.mean() - truth) < 4 * error


def test_slate_sessions_log_the_whole_slate_probability():
    simulator = ConfoundedRecSimulator(SimulatorConfig(**SMALL, slate_size=3, satiation=0.5))
    log = generate_session_logs(simulator, n_sessions=100, seed=0)
    last = log.position == 2
    for position in range(3):
        rows = log.position == position
        np.testing.assert_array_equal(log.step_pscore[rows], log.pscore_prefix[last])


def test_written_session_log_reads_back_as_generated(retention, tmp_path):
    summary = write_session_logs(retention, tmp_path / "run", 300, seed=5, rows_per_file=500)
    log = read_logs(tmp_path / "run")
    memory = generate_session_logs(retention, n_sessions=300, seed=5)
    assert summary.files == -(-memory.n_rows // 500) and summary.rows == memory.n_rows
    for name in ("round_id", "session_id", "step", "timestamp", "item_id", "click", "pscore"):
        np.testing.assert_array_equal(getattr(log, name), getattr(memory, name), err_msg=name)
    assert summary.clicks_per_session == pytest.approx(memory.click.sum() / 300)
    assert summary.mean_session_steps == pytest.approx(memory.n_rows / 300)


def test_popularity_feedback_rounds_sessions_up_to_whole_cohorts():
    simulator = ConfoundedRecSimulator(SimulatorConfig(**SMALL, popularity_feedback=0.1))
    log = generate_session_logs(simulator, n_sessions=120, seed=0)
    assert log.metadata["sessions"] == 150 and log.session_id.max() == 149


def test_uniform_fraction_is_refused_for_sessions():
    simulator = ConfoundedRecSimulator(SimulatorConfig(**SMALL, uniform_fraction=0.2))
    with pytest.raises(ConfigError, match=r"uniform_fraction=0\.2"):
        generate_session_logs(simulator, n_sessions=10)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "causalrec.platform.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_cli_simulates_the_feedback_loop_preset_as_sessions(tmp_path):
    out = tmp_path / "sessions"
    result = run_cli(
        "simulate", "--preset", "feedback_loop", "--n-users", "300", "--n-items", "60",
        "--concurrent-sessions", "100", "--sessions", "200", "--out", str(out), "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["sessions"] == 200 and summary["rounds"] == 2000
    log = read_logs(out)
    assert log.metadata["simulator"]["popularity_feedback"] == 0.05
    assert log.session_id.max() == 199 and log.step.max() == 9


def test_cli_refuses_bad_session_counts(tmp_path, capsys):
    # In-process: argument errors need no interpreter start-up.
    from causalrec.platform.cli import main

    assert main(["simulate", "--sessions", "0", "--out", str(tmp_path / "x")]) == 2
    assert "--sessions must be >= 1; got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--sessions", "5", "--rounds", "5", "--out", str(tmp_path / "y")])
    assert exited.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
