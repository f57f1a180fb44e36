"""The pipeline as a Ray job on a `ray start --head` cluster (token auth, loopback only).

Exactly what the README documents: start a head on 127.0.0.1 (with LOOPBACK_ENV exported, so
every process of the cluster listens on loopback only), `ray job submit --working-dir .
-- causalrec pipeline --config configs/pipeline/quick.yaml --out DIR` with RAY_AUTH_MODE=token,
wait for SUCCEEDED and the report; then submit again and `ray job stop` it (STOPPED). The head
runs with `--block` in its own process group, so stopping it never touches the test session's
own Ray cluster (which `ray stop` would).
"""

import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from causalrec.platform.runtime import LOOPBACK_ENV, free_port

from ..listeners import exposed, listeners

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
QUICK = "configs/pipeline/quick.yaml"


def _ray(env, *args, check=True) -> str:
    done = subprocess.run(
        ["ray", *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"ray {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr


def _status(env, address, job) -> str:
    """The job's status from `ray job list` (one JobDetails record per job)."""
    output = _ray(env, "job", "list", "--address", address)
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
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "token"
    dashboard, gcs = free_port(), free_port()
    head_env = {**env, **LOOPBACK_ENV}
    head = subprocess.Popen(
        ["ray", "start", "--head", "--node-ip-address", "127.0.0.1",
         "--port", str(gcs), "--dashboard-port", str(dashboard),
         "--ray-client-server-port", str(free_port()),
         "--dashboard-agent-listen-port", str(free_port()), "--num-cpus", "2", "--block"],
        env=head_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while "Job submission server address" not in _ray(
            env, "job", "list", "--address", address, check=False
        ):
            assert head.poll() is None, "ray start --head exited"
            assert time.monotonic() < deadline, "the head's job server did not come up"
            time.sleep(2)
        yield env, address, head
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        # `ray start` recorded this head as the machine's current cluster; `ray stop` would
        # forget it, killing the process does not, and a later `ray.init()` or `serve run`
        # without an address would try to join the dead head.
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if current.is_file() and current.read_text().strip().endswith(f":{gcs}"):
            current.unlink()


def _submit(env, address, job, out) -> None:
    _ray(env, "job", "submit", "--address", address, "--working-dir", str(REPO),
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
    logs = _ray(env, "job", "logs", "--address", address, "pipeline-e2e")
    assert status == "SUCCEEDED", logs[-3000:]
    for name in ("report.md", "report.html", "figures/ab_lift.png", "abtest/result.json"):
        assert (tmp_path / "run" / name).is_file(), name
    report = (tmp_path / "run" / "report.md").read_text()
    assert "A/B test: online vs. offline" in report and "http mode" in report
    assert "[6/6] report done" in logs


def test_a_stopped_job_reaches_stopped(cluster, tmp_path):
    env, address, _ = cluster
    _submit(env, address, "pipeline-stop", tmp_path / "run")
    _wait_for(env, address, "pipeline-stop", {"RUNNING"}, 120)
    _ray(env, "job", "stop", "--address", address, "pipeline-stop")
    assert _wait_for(env, address, "pipeline-stop", {"STOPPED", "FAILED", "SUCCEEDED"}, 120) == (
        "STOPPED"
    )
