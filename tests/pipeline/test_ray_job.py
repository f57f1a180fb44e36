"""The pipeline as a Ray job on a `ray start --head` cluster (token auth, loopback only).

Exactly what the README documents: start a head on 127.0.0.1 (with LOOPBACK_ENV exported, so
every process of the cluster listens on loopback only), `ray job submit --working-dir .
-- causalrec pipeline --config configs/pipeline/quick.yaml --out DIR` with RAY_AUTH_MODE=token,
wait for SUCCEEDED and the report; then submit again and `ray job stop` it (STOPPED); and the
closed loop (`causalrec loop --serving http`, a small config: its retrained model served by Ray
Serve on the cluster) as a job of the same cluster. The head
runs with `--block` in its own process group, so stopping it never touches the test session's
own Ray cluster (which `ray stop` would).
"""

import re
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ..listeners import exposed, listeners
from ..ray_cluster import client_env, ray_cli, start_head, stop_node

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
QUICK = "configs/pipeline/quick.yaml"


def _status(env, address, job) -> str:
    """The job's status from `ray job list` (one JobDetails record per job)."""
    output = ray_cli(env, "job", "list", "--address", address)
    match = re.search(rf"submission_id='{job}'.*?status=<JobStatus\.(\w+)", output)
    assert match, output
    return match.group(1)


def _wait_for(env, address, job, wanted, timeout_s) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = _status(env, address, job)
        if status in wanted:
            return status
        time.sleep(3)
    raise AssertionError(f"job {job} still {status} after {timeout_s} s")


@pytest.fixture(scope="module")
def cluster():
    env = client_env()
    head, gcs, address = start_head(env, num_cpus=2)
    try:
        yield env, address, head
    finally:
        stop_node(head, gcs)


def _submit(env, address, job, out) -> None:
    ray_cli(env, "job", "submit", "--address", address, "--working-dir", str(REPO),
         "--submission-id", job, "--no-wait", "--",
         "causalrec", "pipeline", "--config", QUICK, "--out", str(out))  # fmt: skip


def test_pipeline_job_succeeds_and_writes_the_report(cluster, tmp_path):
    env, address, head = cluster
    _submit(env, address, "pipeline-e2e", tmp_path / "run")
    _wait_for(env, address, "pipeline-e2e", {"RUNNING", "SUCCEEDED", "FAILED"}, 120)
    found = listeners(head.pid)  # the head, its workers and the job's driver
    assert {"gcs_server", "raylet"} <= {name for name, _, _ in found}, found
    assert exposed(found) == [], exposed(found)
    status = _wait_for(env, address, "pipeline-e2e", {"SUCCEEDED", "FAILED", "STOPPED"}, 900)
    logs = ray_cli(env, "job", "logs", "--address", address, "pipeline-e2e")
    assert status == "SUCCEEDED", logs[-3000:]
    for name in ("report.md", "report.html", "figures/ab_lift.png", "abtest/result.json"):
        assert (tmp_path / "run" / name).is_file(), name
    report = (tmp_path / "run" / "report.md").read_text()
    assert "A/B test: online vs. offline" in report and "http mode" in report
    assert "[6/6] report done" in logs


def test_the_closed_loop_runs_as_a_job(cluster, tmp_path):
    env, address, _ = cluster
    config = tmp_path / "loop.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "seeds": [0],
                "generations": 1,
                "world": {"preset": "feedback_loop",
                          "overrides": {"n_users": 150, "n_items": 40, "session_length": 3}},
                "arms": [{"name": "naive", "method": "naive", "params": {"epochs": 1}},
                         {"name": "logger", "policy": "logging"}],
                "truth_replicas": 2,
            }
        )
    )  # fmt: skip
    ray_cli(env, "job", "submit", "--address", address, "--working-dir", str(REPO),
            "--submission-id", "loop-e2e", "--no-wait", "--",
            "causalrec", "loop", "--config", str(config), "--out", str(tmp_path / "run"),
            "--serving", "http")  # fmt: skip
    status = _wait_for(env, address, "loop-e2e", {"SUCCEEDED", "FAILED", "STOPPED"}, 600)
    logs = ray_cli(env, "job", "logs", "--address", address, "loop-e2e")
    assert status == "SUCCEEDED", logs[-3000:]
    assert "[loop] generation 1/1" in logs and "report:" in logs
    results = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert sorted(results.arm.unique()) == ["logger", "naive"] and results.generation.max() == 1
    # The retrained model of generation 1 was served by Ray Serve on the cluster, over HTTP.
    served = results.set_index(["arm", "generation"])
    assert served.loc[("naive", 1), "served_via"] == "http"
    assert served.loc[("naive", 1), "served_rows"] == served.loc[("naive", 1), "impressions"]
    assert (tmp_path / "run" / "report.html").is_file()


def test_a_stopped_job_reaches_stopped(cluster, tmp_path):
    env, address, _ = cluster
    _submit(env, address, "pipeline-stop", tmp_path / "run")
    _wait_for(env, address, "pipeline-stop", {"RUNNING"}, 120)
    ray_cli(env, "job", "stop", "--address", address, "pipeline-stop")
    assert _wait_for(env, address, "pipeline-stop", {"STOPPED", "FAILED", "SUCCEEDED"}, 120) == (
        "STOPPED"
    )
