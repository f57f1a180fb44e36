"""The closed loop end to end, small: twins, resume, failures, config errors, CLI and report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from causalrec.loop import runner as loop_runner
from causalrec.loop.config import LoopConfig
from causalrec.loop.runner import read_results, run_loop
from causalrec.platform.cli import main
from causalrec.platform.errors import ConfigError, OutputExistsError, UnknownNameError
from causalrec.platform.storage import read_log_column

#: Columns that are measurements of the world (not of wall time or the arm's name).
MEASURED = ["generation", "version", "truth", "truth_se", "realised", "clicks_per_session",
            "steps_per_session", "ctr", "tail_exposure", "tail_clicks", "coverage", "gini",
            "homogenisation", "sessions", "impressions"]  # fmt: skip


def tiny(**changes) -> LoopConfig:
    values = {
        "seeds": [0],
        "generations": 2,
        "world": {
            "preset": "feedback_loop",
            "overrides": {
                "n_users": 150,
                "n_items": 40,
                "latent_dim": 8,
                "session_length": 3,
                "interest_drift": 0.1,
                "leave_base": 0.1,
                "leave_sensitivity": 1.0,
            },
        },
        "arms": [
            {"name": "naive", "method": "naive", "params": {"epochs": 1, "dim": 8}},
            {"name": "logger", "policy": "logging"},
        ],
        "truth_replicas": 2,
    }
    values.update(changes)
    return LoopConfig.from_dict(values)


def _arm(results: pd.DataFrame, name: str, columns=MEASURED) -> pd.DataFrame:
    return results[results.arm == name][columns].reset_index(drop=True)


def test_arms_that_deploy_the_same_policy_are_bit_identical_twins(tmp_path):
    naive = {"method": "naive", "params": {"epochs": 1, "dim": 8}}
    config = tiny(
        arms=[
            {"name": "a", **naive},
            {"name": "b", **naive},
            {"name": "explore", **naive, "exploration": "epsilon", "epsilon": 0.3},
        ]
    )
    results = run_loop(config, tmp_path / "run").results
    assert len(results) == 3 * 3
    pd.testing.assert_frame_equal(_arm(results, "a"), _arm(results, "b"), check_exact=True)
    for column in ("item_id", "click", "pscore", "session_id", "timestamp"):
        logs = [
            read_log_column(tmp_path / "run" / "runs" / "seed=0" / arm / "gen-002" / "logs", column)
            for arm in ("a", "b", "explore")
        ]
        np.testing.assert_array_equal(logs[0], logs[1])
    # Generation 0 is the logger in every twin; afterwards exploration changes what is served.
    pd.testing.assert_frame_equal(_arm(results, "a")[:1], _arm(results, "explore")[:1])
    assert not np.array_equal(logs[0], logs[2])
    assert (_arm(results, "explore").truth[1:] != _arm(results, "a").truth[1:]).all()


def test_an_interrupted_loop_resumes_without_redoing_finished_generations(tmp_path):
    config = tiny()
    whole = run_loop(config, tmp_path / "whole").results

    def interrupt(line: str) -> None:
        if line.startswith("[loop] generation 0/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_loop(config, tmp_path / "part", progress=interrupt)
    first = tmp_path / "part" / "runs" / "seed=0" / "naive" / "gen-000" / "record.json"
    written = first.read_text()
    assert not (first.parent.parent / "gen-001").exists()
    lines = []
    resumed = run_loop(config, tmp_path / "part", resume=True, progress=lines.append).results
    assert first.read_text() == written  # generation 0 was not run again ("seconds" would differ)
    assert [line.split(":")[0] for line in lines] == [
        "[loop] generation 1/2",
        "[loop] generation 2/2",
    ]
    columns = [*MEASURED, "ope_next", "next_truth"]
    for arm in ("naive", "logger"):
        pd.testing.assert_frame_equal(
            _arm(whole, arm, columns), _arm(resumed, arm, columns), check_exact=True
        )
    pd.testing.assert_frame_equal(read_results(tmp_path / "part"), resumed)


def test_an_interrupt_inside_a_generation_leaves_no_part_of_it(tmp_path, monkeypatch, capsys):
    real_retrain, calls = loop_runner.retrain, []

    def interrupted(arm, logs, seed):
        calls.append(arm.name)
        if len(calls) == 2:  # naive's retraining after generation 1
            raise KeyboardInterrupt
        return real_retrain(arm, logs, seed)

    monkeypatch.setattr(loop_runner, "retrain", interrupted)
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(tiny().model_dump()))
    out = tmp_path / "run"
    assert main(["loop", "--config", str(path), "--out", str(out)]) == 130
    assert f"--out {out} --resume" in capsys.readouterr().err
    arm_dir = out / "runs" / "seed=0" / "naive"
    assert sorted(p.name for p in arm_dir.iterdir()) == ["gen-000"]  # no gen-001, no staging
    monkeypatch.setattr(loop_runner, "retrain", real_retrain)
    assert main(["loop", "--config", str(path), "--out", str(out), "--resume"]) == 0
    resumed = read_results(out)
    whole = run_loop(tiny(), tmp_path / "whole").results
    pd.testing.assert_frame_equal(
        _arm(whole, "naive", [*MEASURED, "ope_next"]),
        _arm(resumed, "naive", [*MEASURED, "ope_next"]),
        check_exact=True,
    )


def test_a_failed_generation_is_recorded_and_the_rest_of_the_loop_goes_on(tmp_path, monkeypatch):
    real_retrain, calls = loop_runner.retrain, []

    def flaky(arm, logs, seed):
        calls.append(arm.name)
        if len(calls) == 2:
            raise RuntimeError("the trainer's node went away")
        return real_retrain(arm, logs, seed)

    monkeypatch.setattr(loop_runner, "retrain", flaky)
    result = run_loop(tiny(), tmp_path / "run")
    assert [(f["arm"], f["generation"]) for f in result.failures] == [("naive", 1)]
    assert "RuntimeError: the trainer's node went away" in result.failures[0]["error"]
    assert list(_arm(result.results, "naive").generation) == [0]  # generation 0 is kept
    assert list(_arm(result.results, "logger").generation) == [0, 1, 2]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "arm naive: generation 1 failed (RuntimeError: the trainer's node went away)" in report
    state = json.loads((tmp_path / "run" / "loop.json").read_text())
    assert state["failures"][0]["generation"] == 1 and state["finished"]

    monkeypatch.setattr(loop_runner, "retrain", real_retrain)
    resumed = run_loop(tiny(), tmp_path / "run", resume=True)  # retries the failed generation
    assert resumed.failures == []
    assert list(_arm(resumed.results, "naive").generation) == [0, 1, 2]


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"arms": [{"name": "x", "method": "naive", "policy": "uniform"}]}, ConfigError,
         "arm 'x': give exactly one of 'method'"),
        ({"arms": [{"name": "x", "method": "nave"}]}, UnknownNameError, "arms.x: .*naive"),
        ({"arms": [{"name": "x", "method": "naive", "params": {"epoch": 1}}]}, UnknownNameError,
         "arms.x: .*epochs"),
        ({"arms": [{"name": "x", "policy": "logging"}, {"name": "x", "policy": "uniform"}]},
         ConfigError, "repeated: \\['x'\\]"),
        ({"world": {"overrides": {"seed": 3}}}, ConfigError, "world.overrides.seed"),
        ({"world": {"preset": "no_such_world"}}, ConfigError, "no_such_world"),
        ({"seeds": [1, 1]}, ConfigError, "seeds must be distinct"),
    ],
)  # fmt: skip
def test_bad_configs_are_refused_naming_the_field_before_any_output(
    tmp_path, change, error, message
):
    with pytest.raises(error, match=message):
        run_loop(tiny(**change), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_run_directory_is_protected(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("results of last week")
    with pytest.raises(OutputExistsError, match="not empty"):
        run_loop(tiny(), tmp_path / "run")
    with pytest.raises(ConfigError, match="holds no loop run"):
        run_loop(tiny(), tmp_path / "run", resume=True)
    assert (tmp_path / "run" / "keep.txt").read_text() == "results of last week"
    run_loop(tiny(generations=1), tmp_path / "done")
    with pytest.raises(ConfigError, match="the config differs"):
        run_loop(tiny(generations=2), tmp_path / "done", resume=True)


def test_causalrec_loop_writes_results_and_the_report(tmp_path, capsys):
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(tiny(seeds=[0, 1]).model_dump()))
    assert main(["loop", "--config", str(path), "--out", str(tmp_path / "run")]) == 0
    output = capsys.readouterr().out
    assert "[loop] generation 2/2: true clicks per session (mean over 2 seeds)" in output
    assert "report:" in output
    results = read_results(tmp_path / "run")
    assert sorted(results.seed.unique()) == [0, 1] and results.generation.max() == 2
    retrained = results[(results.arm == "naive") & (results.generation < 2)]
    assert retrained.ope_next.notna().all() and retrained.next_truth.notna().all()
    report = (tmp_path / "run" / "report.md").read_text()
    for metric in ("truth", "ctr", "tail_exposure", "tail_clicks", "coverage", "gini",
                   "homogenisation"):  # fmt: skip
        assert (tmp_path / "run" / "figures" / f"{metric}.png").is_file()
        assert f"figures/{metric}.png" in report
    assert "Off-policy estimate of each next model" in report
    assert (tmp_path / "run" / "report.html").is_file()
