"""Subprocess smoke tests of the `causalrec` command line (tiny budgets)."""

import json
import subprocess
import sys

import pytest

from causalrec.platform.storage import read_logs


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "causalrec.platform.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_help_lists_commands_and_options():
    top = run_cli("--help")
    assert top.returncode == 0 and "simulate" in top.stdout and "graph" in top.stdout
    sub = run_cli("simulate", "--help")
    assert sub.returncode == 0
    for option in ("--preset", "--rounds", "--out", "--seed", "--policy", "--overwrite", "--json"):
        assert option in sub.stdout
    assert "--hidden-confounding" in sub.stdout and "Share of the belief" in sub.stdout


def test_simulate_json_summary_and_readable_log(tmp_path):
    out = tmp_path / "logs"
    result = run_cli(
        "simulate", "--preset", "confounded", "--n-users", "200", "--n-items", "30",
        "--rounds", "5000", "--out", str(out), "--seed", "3", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["rows"] == 5000 and summary["rounds"] == 5000
    assert 0 < summary["logging_policy_value"] < summary["oracle_value"] <= 1
    assert summary["max_inverse_pscore"] >= summary["mean_inverse_pscore"] > 1
    assert 0 < summary["effective_sample_size"] <= 5000
    log = read_logs(out)
    assert log.n_rows == 5000 and log.metadata["seed"] == 3
    assert log.metadata["simulator"]["n_items"] == 30
    assert summary["ctr"] == pytest.approx(log.click.mean())


def test_simulate_human_summary_and_slates(tmp_path):
    result = run_cli(
        "simulate", "--preset", "slate", "--n-users", "100", "--rounds", "300",
        "--out", str(tmp_path / "slate"), "--policy", "uniform",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "effective sample size" in result.stdout and "exact oracle value" in result.stdout
    log = read_logs(tmp_path / "slate")
    assert log.n_rows == 900 and set(log.position) == {0, 1, 2}
    assert set(log.policy) == {"uniform"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "confoundd"], "did you mean 'confounded'"),
        (["--policy", "logginng"], "did you mean 'logging'"),
        (["--n-items", "0"], "n_items=0"),
        (["--n-items", "2", "--slate-size", "3"], "slate_size must be <= n_items"),
        (["--logging-epsilon", "1.5"], "logging_epsilon=1.5"),
        (["--rounds", "0"], "--rounds must be >= 1; got 0"),
    ],
)
def test_bad_input_is_reported(tmp_path, args, message):
    argv = ["simulate", "--rounds", "10", "--out", str(tmp_path / "x"), *args]
    result = run_cli(*argv)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "x").exists()


def test_unknown_config_key_in_file(tmp_path):
    config = tmp_path / "sim.yaml"
    config.write_text("n_items: 10\nconfunding: 0.3\n")
    result = run_cli(
        "simulate", "--config", str(config), "--rounds", "5", "--out", str(tmp_path / "o")
    )
    assert result.returncode == 2 and "did you mean 'confounding'" in result.stderr


def test_non_empty_output_is_refused_without_overwrite(tmp_path):
    out = tmp_path / "logs"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    result = run_cli(
        "simulate", "--n-users", "50", "--n-items", "10", "--rounds", "10", "--out", str(out)
    )
    assert result.returncode == 2 and "not empty" in result.stderr
    assert (out / "keep.txt").read_text() == "precious"
    again = run_cli(
        "simulate", "--n-users", "50", "--n-items", "10", "--rounds", "10", "--out", str(out),
        "--overwrite",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert not (out / "keep.txt").exists() and read_logs(out).n_rows == 10


def test_graph_command_prints_mermaid_and_json():
    mermaid = run_cli("graph", "--preset", "hidden_confounding", "--n-users", "20")
    assert mermaid.returncode == 0 and "user_latent --> exposure" in mermaid.stdout
    as_json = run_cli("graph", "--preset", "confounded", "--n-users", "20", "--json")
    edges = json.loads(as_json.stdout)["edges"]
    assert ["popularity", "relevance"] in edges and ["user_latent", "exposure"] not in edges


def test_simulate_in_shards_on_ray_writes_the_same_log_as_in_process(tmp_path):
    """`--workers 2` (Ray tasks on a local Ray) and `--workers 0` give the same files."""
    common = ("simulate", "--preset", "confounded", "--n-users", "200", "--n-items", "30",
              "--rounds", "5000", "--chunk-rounds", "2000", "--seed", "3")  # fmt: skip
    local = run_cli(*common, "--out", str(tmp_path / "local"), "--workers", "0")
    ray_run = run_cli(*common, "--out", str(tmp_path / "ray"), "--workers", "2")
    assert local.returncode == 0 and ray_run.returncode == 0, ray_run.stderr[-3000:]
    assert "shards" in local.stdout and "3 (in this process)" in local.stdout
    assert "3 (Ray tasks on 1 node)" in ray_run.stdout
    files = sorted(path.name for path in (tmp_path / "local" / "logs").iterdir())
    assert files == ["part-00000-00000.parquet", "part-00001-00000.parquet",
                     "part-00002-00000.parquet"]  # fmt: skip
    for name in files:
        assert (tmp_path / "local" / "logs" / name).read_bytes() == (
            tmp_path / "ray" / "logs" / name
        ).read_bytes()
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary["run"]["executor"] == "ray" and len(summary["run"]["nodes"]) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [(("--rounds", "100", "--workers", "-1"), "workers must be an integer >= 0"),
     (("--rounds", "100", "--chunk-rounds", "0"), "chunk_rounds must be an integer >= 1"),
     (("--sessions", "5", "--workers", "2"), "--workers: session logs")],
)  # fmt: skip
def test_bad_sharding_options_are_refused_naming_them(tmp_path, args, message):
    result = run_cli("simulate", "--preset", "confounded", "--n-users", "50", "--n-items", "10",
                     *args, "--out", str(tmp_path / "out"))  # fmt: skip
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "out").exists()
