"""Two Ray nodes on one machine, on loopback only: a working-dir job runs on both at once.

Two `ray start` nodes on one machine used to share one session folder, so their runtime-env
agents unpacked a job's working_dir into the same directory, and Ray 2.60's working-dir plugin
deletes that directory before it unpacks (``overwrite=True``): the job's first task on the
second node deleted the directory the driver ran in, and the driver's next ``os.getcwd()``
raised FileNotFoundError (reproduced twice; the resubmission succeeded). The README's recipe
gives the second node its own ``--temp-dir``, and ``python -m causalrec.platform.loopback_node``
starts it on 127.0.0.1 (``ray start --address`` refuses to with Ray's loopback setting on).
"""

import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from ..listeners import exposed, listeners
from ..ray_cluster import client_env, ray_cli, start_head, stop_node

pytestmark = pytest.mark.slow

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


def test_a_working_dir_job_over_two_loopback_nodes_succeeds_at_its_first_submission(tmp_path):
    env = client_env()
    working_dir = tmp_path / "job"
    working_dir.mkdir()
    (working_dir / "job.py").write_text(JOB)
    (working_dir / "marker.txt").write_text("unpacked")
    # Its own temp dir, short: Ray's socket paths under it must fit AF_UNIX's 107 bytes.
    node_temp = Path(tempfile.mkdtemp(prefix="ray-node2-"))
    head, gcs, address = start_head(env, num_cpus=1)
    node_log = (tmp_path / "node2.log").open("w")
    try:
        node = subprocess.Popen(
            [sys.executable, "-m", "causalrec.platform.loopback_node",
             "--address", f"127.0.0.1:{gcs}", "--num-cpus", "1",
             "--temp-dir", str(node_temp), "--block"],
            env=env, stdout=node_log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            output = ray_cli(
                env, "job", "submit", "--address", address, "--working-dir", str(working_dir),
                "--", "python", "job.py", timeout=240,
            )  # fmt: skip
            second = (tmp_path / "node2.log").read_text()[-3000:]
            assert "nodes: 2 " in output and "marker: unpacked" in output, (output[-3000:], second)
            assert "succeeded" in output, output[-3000:]
            assert any(node_temp.glob("session_*/runtime_resources"))  # the node's own folder
            found = listeners(head.pid) + listeners(node.pid)
            assert {name for name, _, _ in found} >= {"gcs_server", "raylet"}, found
            assert exposed(found) == [], exposed(found)
        finally:
            stop_node(node)
    finally:
        node_log.close()
        stop_node(head, gcs)
        shutil.rmtree(node_temp, ignore_errors=True)


def test_a_loopback_node_refuses_another_node_ip():
    from causalrec.platform.loopback_node import main

    assert main(["--address", "127.0.0.1:1", "--node-ip-address", "192.0.2.7"]) == 2
