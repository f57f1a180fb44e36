"""Subprocess smoke tests of `causalrec evaluate` and `causalrec ope-bench` (tiny budgets)."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from causalrec.platform.obd import SAMPLE_DIR


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "causalrec.platform.cli", *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_evaluate_on_real_logs_json():
    result = run_cli(
        "evaluate", "--logs", str(SAMPLE_DIR / "random"),
        "--policy", f"empirical:{SAMPLE_DIR / 'bts'}", "--estimators", "ips,snips,dr", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["n_rows"] == 10_000
    names = [row["estimator"] for row in payload["results"]]
    assert names == ["IPS(clip=inf)", "SNIPS()", "DR(clip=inf)"]
    for row in payload["results"]:
        assert row["low"] <= row["estimate"] <= row["high"]


def test_evaluate_human_output_and_errors(tmp_path):
    result = run_cli(
        "evaluate", "--logs", str(SAMPLE_DIR / "random"), "--policy", "uniform",
        "--estimators", "ips:clip=50,snips", "--reward-model", "none",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "IPS(clip=50.0)" in result.stdout and "pscore: logged" in result.stdout
    bad = run_cli("evaluate", "--logs", str(SAMPLE_DIR / "random"), "--policy", "unifrom")
    assert bad.returncode == 2 and "did you mean 'uniform'" in bad.stderr
    missing = run_cli("evaluate", "--logs", str(tmp_path / "nope"), "--policy", "uniform")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    simulated_only = run_cli("evaluate", "--logs", str(SAMPLE_DIR / "random"), "--policy", "oracle")
    assert simulated_only.returncode == 2 and "not simulated" in simulated_only.stderr


def test_ope_bench_writes_csv_png_and_json(tmp_path):
    out = tmp_path / "bench"
    result = run_cli(
        "ope-bench", "--preset", "confounded", "--rounds", "300,600", "--seeds", "2",
        "--estimators", "ips,dr", "--out", str(out), "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert 0 < payload["truth"] < 1
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 4 and set(summary["rounds"]) == {300, 600}
    assert summary["coverage"].between(0, 1).all() and (summary["runs"] == 2).all()
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 8 and (runs["truth"] == payload["truth"]).all()
    png = Path(out / "error_vs_rounds.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    again = run_cli("ope-bench", "--rounds", "300", "--seeds", "1", "--out", str(out))
    assert again.returncode == 2 and "not empty" in again.stderr


def test_evaluate_sensitivity_bounds_in_json_and_table():
    # Catches: bounds missing from either output, bounds that do not contain the SNIPS
    # estimate of the same table, a bad Γ accepted or reported without the option's name.
    args = ["evaluate", "--logs", str(SAMPLE_DIR / "random"), "--policy", "uniform",
            "--estimators", "snips", "--reward-model", "none", "--sensitivity", "2"]  # fmt: skip
    result = run_cli(*args, "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    bounds, snips = payload["sensitivity"], payload["results"][0]["estimate"]
    assert bounds["gamma"] == 2 and bounds["estimate"] == snips
    assert bounds["unit"] == "clicks_per_round" and bounds["estimator"] == "snips"
    assert bounds["lower_bootstrap"] < bounds["lower"] < snips < bounds["upper"]
    assert bounds["upper"] < bounds["upper_bootstrap"]
    table = run_cli(*args)
    assert table.returncode == 0, table.stderr
    assert "sensitivity at Γ = 2" in table.stdout
    assert f"bounds [{bounds['lower']:.4g}, {bounds['upper']:.4g}]" in table.stdout
    bad = run_cli(*args[:-1], "0.5")
    assert bad.returncode == 2 and "--sensitivity must be a finite number >= 1" in bad.stderr
    assert "got 0.5" in bad.stderr


def test_evaluate_auto_reports_the_chosen_estimator_and_why(tmp_path):
    # Catches: 'auto' not understood, no single marked choice, a reason missing from the human
    # output, cluster estimators not added with --item-clusters, a bad N accepted.
    logs = tmp_path / "logs"
    simulated = run_cli(
        "simulate", "--preset", "confounded", "--rounds", "1500", "--out", str(logs),
        "--n-users", "300", "--n-items", "40",
    )  # fmt: skip
    assert simulated.returncode == 0, simulated.stderr
    args = ["evaluate", "--logs", str(logs), "--policy", "softmax:2", "--estimators", "auto",
            "--item-clusters", "8", "--logging-policy", "logging"]  # fmt: skip
    result = run_cli(*args, "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["results"]
    names = {row["estimator"].split("(")[0] for row in rows}
    assert {"MIPS", "OffCEM", "IPSTuning", "DR"} <= names
    chosen = [row for row in rows if row["selected"]]
    assert len(chosen) == 1 and chosen[0]["cv_score"] == min(row["cv_score"] for row in rows)
    table = run_cli(*args)
    assert table.returncode == 0, table.stderr
    assert f"auto: {chosen[0]['estimator']}" in table.stdout and "why: " in table.stdout
    bad = run_cli(*args[:-4], "--item-clusters", "41")
    assert (
        bad.returncode == 2 and "--item-clusters must be in [1, n_items=40]; got 41" in bad.stderr
    )


def test_sharded_evaluate_on_real_logs_equals_the_in_memory_one():
    """`--sharded` (Ray Data over the parts) gives the in-memory IPS and SNIPS rows to 1e-12."""
    common = ("evaluate", "--logs", str(SAMPLE_DIR / "random"), "--policy",
              f"empirical:{SAMPLE_DIR / 'bts'}", "--estimators", "ips,snips",
              "--reward-model", "none", "--json")  # fmt: skip
    memory = run_cli(*common)
    sharded = run_cli(*common, "--sharded", "--batch-rows", "3001", "--workers", "1")
    assert memory.returncode == 0 and sharded.returncode == 0, sharded.stderr[-2000:]
    rows = {"memory": json.loads(memory.stdout)["results"],
            "sharded": json.loads(sharded.stdout)["results"]}  # fmt: skip
    assert [r["estimator"] for r in rows["sharded"]] == ["IPS(clip=inf)", "SNIPS()"]
    for mine, theirs in zip(rows["sharded"], rows["memory"], strict=True):
        for column in ("estimate", "low", "high"):
            assert abs(mine[column] - theirs[column]) < 1e-12, (column, mine, theirs)
        assert mine["n_parts"] == 1 and mine["nodes"] == 1  # one part file, read in 4 batches


def test_sharded_evaluate_refuses_what_it_cannot_do():
    result = run_cli("evaluate", "--logs", str(SAMPLE_DIR / "random"), "--policy", "uniform",
                     "--sharded", "--interval", "betting")  # fmt: skip
    assert result.returncode != 0 and "--interval betting is not available with --sharded" in (
        result.stderr
    )
