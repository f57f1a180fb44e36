"""Two Ray nodes on one machine, on loopback only: jobs run on both at once.

The cluster of this module is the multi-node run of CI: a head and a second node of 1 CPU each,
token authentication on, each in its own process group and stopped by it. A working-dir job
runs tasks on both; the pipeline, submitted as a Ray job, runs its simulation shards and its
Tune trials on both, and records each one's node id (``pipeline.json``, ``results.parquet``).

Two `ray start` nodes on one machine used to share one session folder, so their runtime-env
agents unpacked a job's working_dir into the same directory, and Ray 2.60's working-dir plugin
deletes that directory before it unpacks (``overwrite=True``): the job's first task on the
second node deleted the directory the driver ran in, and the driver's next ``os.getcwd()``
raised FileNotFoundError (reproduced twice; the resubmission succeeded). The README's recipe
gives the second node its own ``--temp-dir``, and ``python -m causalrec.platform.loopback_node``
starts it on 127.0.0.1 (``ray start --address`` refuses to with Ray's loopback setting on).
"""

import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ..listeners import exposed, listeners
from ..ray_cluster import client_env, ray_cli, start_head, stop_node

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

#: The job: waits for both nodes (at most 60 s), runs tasks spread over them, then reads its
#: working directory (what failed) and a file in it.
JOB = textwrap.dedent(
    """
    import os, time
    import ray

    ray.init()
    deadline = time.monotonic() + 60
    while sum(node["Alive"] for node in ray.nodes()) < 2 and time.monotonic() < deadline:
        time.sleep(1)

    @ray.remote(num_cpus=1, scheduling_strategy="SPREAD")
    def node_of(_):
        time.sleep(0.5)
        return ray.get_runtime_context().get_node_id()

    nodes = set(ray.get([node_of.remote(i) for i in range(6)]))
    print("nodes:", len(nodes), "cwd:", os.getcwd(), "marker:", open("marker.txt").read())
    """
)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """A head and a second node, 1 CPU each, on loopback, token auth on, each in its own group.

    Yields (client env, job server address, head process, second node process, its temp dir,
    its log file). Both are stopped by their process-group ids.
    """
    env = client_env()
    # Its own temp dir, short: Ray's socket paths under it must fit AF_UNIX's 107 bytes.
    node_temp = Path(tempfile.mkdtemp(prefix="ray-node2-"))
    node_log_path = tmp_path_factory.mktemp("node2") / "node2.log"
    head, gcs, address = start_head(env, num_cpus=1)
    node_log = node_log_path.open("w")
    try:
        node = subprocess.Popen(
            [sys.executable, "-m", "causalrec.platform.loopback_node",
             "--address", f"127.0.0.1:{gcs}", "--num-cpus", "1",
             "--temp-dir", str(node_temp), "--block"],
            env=env, stdout=node_log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            yield env, address, head, node, node_temp, node_log_path
        finally:
            stop_node(node)
    finally:
        node_log.close()
        stop_node(head, gcs)
        shutil.rmtree(node_temp, ignore_errors=True)


def test_a_working_dir_job_over_two_loopback_nodes_succeeds_at_its_first_submission(
    two_nodes, tmp_path
):
    env, address, head, node, node_temp, node_log = two_nodes
    working_dir = tmp_path / "job"
    working_dir.mkdir()
    (working_dir / "job.py").write_text(JOB)
    (working_dir / "marker.txt").write_text("unpacked")
    output = ray_cli(
        env, "job", "submit", "--address", address, "--working-dir", str(working_dir),
        "--", "python", "job.py", timeout=240,
    )  # fmt: skip
    second = node_log.read_text()[-3000:]
    assert "nodes: 2 " in output and "marker: unpacked" in output, (output[-3000:], second)
    assert "succeeded" in output, output[-3000:]
    assert any(node_temp.glob("session_*/runtime_resources"))  # the node's own folder
    found = listeners(head.pid) + listeners(node.pid)
    assert {name for name, _, _ in found} >= {"gcs_server", "raylet"}, found
    assert exposed(found) == [], exposed(found)


def _small_quick_pipeline(path: Path) -> Path:
    """The quick pipeline, smaller: 4 + 1 simulation shards, 4 trials, a short A/B test."""
    config = yaml.safe_load((REPO / "configs" / "pipeline" / "quick.yaml").read_text())
    config["simulate"].update(rounds=20_000, uniform_rounds=4_000, chunk_rounds=5_000)
    config["tuning"]["search"].update(num_samples=4, time_budget_s=300)
    config["tuning"]["methods"] = {
        name: config["tuning"]["methods"][name] for name in ("naive", "gboost")
    }
    config["tuning"]["methods"]["naive"]["epochs"] = {"int": [1, 2]}
    config["tuning"]["methods"]["gboost"]["max_iter"] = {"int": [20, 40]}
    config["abtest"].update(users=2_000)
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_pipeline_job_runs_its_shards_and_trials_on_both_nodes(two_nodes, tmp_path):
    """The pipeline as a Ray job: simulation shards and Tune trials land on both nodes.

    Fails if the shards ran in the driver's process (``node_ids`` would be null), if they or
    the trials were packed onto one node, or if the node ids were not recorded.
    """
    env, address, _, _, _, _ = two_nodes
    config = _small_quick_pipeline(tmp_path / "pipeline.yaml")
    out = tmp_path / "run"
    output = ray_cli(
        env, "job", "submit", "--address", address, "--working-dir", str(REPO),
        "--", "causalrec", "pipeline", "--config", str(config), "--out", str(out),
        timeout=900,
    )  # fmt: skip
    assert "succeeded" in output, output[-3000:]
    nodes = {node["NodeID"] for node in _alive_nodes(env, address)}
    assert len(nodes) == 2, nodes
    record = json.loads((out / "pipeline.json").read_text())
    stages = {stage["name"]: stage for stage in record["stages"]}
    assert all(stage["status"] == "done" for stage in stages.values()), stages
    shards = stages["simulate"]["node_ids"]
    assert len(shards) == 4 + 1 and set(shards) == nodes, shards  # logs, then the uniform slice
    summary = json.loads((out / "logs" / "summary.json").read_text())["run"]
    assert summary["executor"] == "ray" and set(summary["nodes"]) == nodes
    trials = pd.read_parquet(out / "tune" / "results.parquet")
    assert len(trials) == 4 and set(trials.node_id) == nodes, trials[["trial_id", "node_id"]]
    assert stages["tune"]["node_ids"] == list(trials.node_id)


def _alive_nodes(env, address) -> list[dict]:
    """The cluster's live nodes, from a driver that joins it."""
    script = (
        "import json, ray; ray.init(); "
        "print(json.dumps([n for n in ray.nodes() if n['Alive']], default=str))"
    )
    output = ray_cli(
        env, "job", "submit", "--address", address, "--", "python", "-c", script, timeout=240
    )
    line = next(line for line in output.splitlines() if line.startswith("[{"))
    return json.loads(line)


def test_a_loopback_node_refuses_another_node_ip():
    from causalrec.platform.loopback_node import main

    assert main(["--address", "127.0.0.1:1", "--node-ip-address", "192.0.2.7"]) == 2
