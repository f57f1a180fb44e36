"""Subprocess smoke tests of `causalrec train` (tiny budgets)."""

import json
import subprocess
import sys

import pytest

from causalrec.methods import load_recommender
from causalrec.methods.cli import parse_assignments
from causalrec.platform.errors import ConfigError
from causalrec.platform.obd import SAMPLE_DIR


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "causalrec.platform.cli", *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def simulated_logs(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "logs"
    result = run_cli(
        "simulate", "--preset", "confounded", "--n-users", "300", "--n-items", "40",
        "--latent-dim", "8", "--rounds", "6000", "--out", str(out), "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out


def test_train_reports_exact_value_and_saves(simulated_logs, tmp_path):
    out = tmp_path / "model"
    result = run_cli(
        "train", "--logs", str(simulated_logs), "--method", "ips",
        "--set", "epochs=3", "--set", "propensity=popularity", "--out", str(out), "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["params"]["propensity"] == "popularity" and report["params"]["epochs"] == 3
    assert 0 < report["policy_value"] <= report["oracle_value"]
    assert report["regret"] == pytest.approx(report["oracle_value"] - report["policy_value"])
    assert 0 <= report["auc"] <= 1 and 0 <= report["ndcg"] <= 1
    low, high = report["dr_interval"]
    assert low <= report["dr_estimate"] <= high
    assert report["train_rows"] + report["holdout_rows"] == 6000
    model = load_recommender(out)
    assert model.get_params()["propensity"] == "popularity"
    assert json.loads((out / "metrics.json").read_text())["method"] == "ips"


def test_train_on_real_logs_has_no_ground_truth(tmp_path):
    result = run_cli(
        "train", "--logs", str(SAMPLE_DIR / "random"), "--method", "naive",
        "--set", "epochs=1", "--out", str(tmp_path / "m"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "n/a (real logs)" in result.stdout and "dr_estimate" in result.stdout


def test_train_bad_input(simulated_logs, tmp_path):
    bad_method = run_cli(
        "train", "--logs", str(simulated_logs), "--method", "ipss", "--out", str(tmp_path / "a")
    )
    assert bad_method.returncode == 2 and "did you mean 'ips'" in bad_method.stderr
    bad_param = run_cli(
        "train", "--logs", str(simulated_logs), "--method", "ips", "--set", "epoch=3",
        "--out", str(tmp_path / "b"),
    )  # fmt: skip
    assert bad_param.returncode == 2 and "did you mean 'epochs'" in bad_param.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(ConfigError, match="--set expects KEY=VALUE; got 'epochs'"):
        parse_assignments(["epochs"])
    assert parse_assignments(["lr=0.05", "feedback=implicit"]) == {
        "lr": 0.05,
        "feedback": "implicit",
    }
