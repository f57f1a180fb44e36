"""The end-to-end pipeline on a tiny world: checks before work, stage failures, reproducibility."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from causalrec.pipeline import stages
from causalrec.pipeline.config import load_pipeline_config
from causalrec.pipeline.runner import run_pipeline, summary_lines
from causalrec.platform.cli import main
from causalrec.platform.errors import ConfigError, OutputExistsError
from causalrec.platform.storage import read_logs

TINY = {
    "seed": 3,
    "simulate": {
        "preset": "confounded",
        "overrides": {"n_users": 300, "n_items": 40, "latent_dim": 8},
        "rounds": 6_000,
        "uniform_rounds": 1_000,
    },
    "tuning": {
        "search": {"algorithm": "random", "num_samples": 3, "max_concurrent_trials": 1, "seed": 0},
        "scheduler": {"kind": "fifo"},
        "max_failures": 0,
        "methods": {
            "naive": {"epochs": 2, "lr": {"loguniform": [0.01, 0.05]}},
            "ips": {"epochs": 2},
            "gboost": {"max_iter": 30},
        },
    },
    "serve": {"deploy": False},
    "abtest": {"users": 2_000, "via": "in-process"},
    "ope": {"estimators": ["ips", "snips", "dr"]},
}

#: Columns of results tables that measure time or name Ray's trial directories.
TIMING = ["trial_id", "train_seconds", "eval_seconds", "finished_at"]


def _config(tmp_path, **changes):
    values = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        section, _, field = key.partition(".")
        if field:
            values[section][field] = value
        else:
            values[section] = value
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"tuning": {**TINY["tuning"], "methods": {"naive": {}, "ipss": {}}}},
            r"tuning: .*ipss.*did you mean 'ips'",
        ),
        (
            {"tuning": {**TINY["tuning"], "search": {"num_samples": 2}}},
            r"tuning.search.num_samples: 2 trials cannot try each of the 3 methods",
        ),
        ({"simulate.rounds": 2_000}, r"simulate.rounds: 2000 rounds leave 400 held-out rounds"),
        ({"abtest.baseline": "dice"}, r"abtest.baseline: 'dice' is not among the tuned methods"),
        ({"abtest.via": "http"}, r"abtest.via: 'http' needs the deployment"),
        ({"simulate.preset": "confoundd"}, r"simulate: .*confoundd"),
    ],
)
def test_impossible_configs_fail_before_any_work(tmp_path, capsys, change, message):
    path = _config(tmp_path, **change)
    out = tmp_path / "run"
    assert main(["pipeline", "--config", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "causalrec pipeline: error:" in err
    with pytest.raises(ConfigError, match=message):
        run_pipeline(*load_pipeline_config(path), out)
    assert not out.exists()


def test_unknown_config_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**TINY, "abtest": {"userz": 10}}))
    with pytest.raises(ConfigError, match="userz"):
        load_pipeline_config(path)


def test_a_previous_run_is_refused_and_kept(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.md").write_text("previous")
    path = _config(tmp_path)
    assert main(["pipeline", "--config", str(path), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(OutputExistsError):
        run_pipeline(*load_pipeline_config(path), out)
    assert (out / "report.md").read_text() == "previous"


@pytest.mark.ray
def test_failed_stage_keeps_earlier_outputs_and_says_why(
    ray_session, tmp_path, monkeypatch, capsys
):
    def broken_ope(ctx):
        raise RuntimeError("the reward model ran out of memory")

    monkeypatch.setitem(stages.STAGES, "ope", broken_ope)
    path = _config(tmp_path)
    out = tmp_path / "run"
    assert main(["pipeline", "--config", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "stage 'ope' failed: RuntimeError: the reward model ran out of memory" in err
    record = json.loads((out / "pipeline.json").read_text())
    status = {stage["name"]: stage["status"] for stage in record["stages"]}
    assert status == {"simulate": "done", "tune": "done", "deploy": "skipped",
                      "abtest": "done", "ope": "failed", "report": "done"}  # fmt: skip
    assert read_logs(out / "logs").n_rows == 6_000
    assert (out / "tune" / "best" / "manifest.json").exists()
    assert (out / "abtest" / "result.json").exists()
    report = (out / "report.md").read_text()
    assert "the reward model ran out of memory" in report
    assert not (out / "ope.csv").exists()


@pytest.mark.ray
@pytest.mark.slow
def test_same_config_and_seed_give_identical_logs_and_results(ray_session, tmp_path):
    path = _config(tmp_path)
    runs = []
    for name in ("first", "second"):
        run_pipeline(*load_pipeline_config(path), tmp_path / name, log=lambda _: None)
        runs.append(tmp_path / name)
    first, second = runs
    assert read_logs(first / "logs").fingerprint() == read_logs(second / "logs").fingerprint()
    assert read_logs(first / "uniform").fingerprint() == read_logs(second / "uniform").fingerprint()

    def results(run):
        frame = pd.read_parquet(run / "tune" / "results.parquet").drop(columns=TIMING)
        return frame.sort_values("params").reset_index(drop=True)

    pd.testing.assert_frame_equal(results(first), results(second))
    assert len(results(first)) == 3 and set(results(first)["status"]) == {"completed"}
    for table in ("candidates.csv", "ope.csv", "ope_uniform.csv"):
        a = pd.read_csv(first / table).drop(columns=["trial_id"], errors="ignore")
        b = pd.read_csv(second / table).drop(columns=["trial_id"], errors="ignore")
        pd.testing.assert_frame_equal(a, b)
    ab = [json.loads((run / "abtest" / "result.json").read_text()) for run in runs]
    for result in ab:
        for arm in result["arms"].values():
            arm.pop("spec")  # the run directory is part of the model path
    assert ab[0] == ab[1]
    summary = json.loads((first / "summary.json").read_text())
    assert np.isfinite(summary["selection_regret"]) and summary["selection_regret"] >= 0
    rules = summary["selection_rules"]
    assert set(rules) == {"ope_dr", "ope_dr_low", "ope_auto", "ope_auto_low"}
    assert rules["ope_dr"]["regret"] == pytest.approx(summary["selection_regret"])
    assert all(rule["regret"] >= 0 for rule in rules.values())
    assert (first / "report.html").exists() and (first / "figures" / "ab_lift.png").exists()
    console = "\n".join(summary_lines(first))
    assert "A/B test (in-process, 2,000 visits):" in console and "online lift (b - a)" in console


@pytest.mark.parametrize("name", ["quick.yaml", "full.yaml"])
def test_shipped_pipeline_configs_pass_the_checks(name):
    from causalrec.pipeline.runner import check_config
    from causalrec.platform.config import config_dir

    config, tuning = load_pipeline_config(config_dir() / "pipeline" / name)
    check_config(config, tuning, address="127.0.0.1:6379")  # no port check: a cluster
    assert config.abtest.via == "http" and config.abtest.baseline in tuning.methods
