"""Nothing listens beyond loopback: the local Ray, Serve's replicas and ``causalrec serve``.

``causalrec serve`` runs in a process of its own (its own local Ray, in its own process group);
every socket its process tree listens on must be bound to loopback. ``--host 0.0.0.0`` is the
one way out, and it moves the HTTP proxy alone.
"""

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from causalrec.methods import make_recommender
from causalrec.platform.runtime import free_port, is_loopback
from causalrec.platform.storage import read_logs, write_feature_tables
from causalrec.serve import _loopback
from causalrec.simulators import write_logs

from ..listeners import exposed, listeners
from ..ray_cluster import stop_process_group


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("::ffff:192.0.2.2", False),
        ("192.0.2.2", False),
        ("10.0.0.1", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


class _FakeReplicaModule:
    def __init__(self):
        self.calls = []

    def add_port_to_grpc_server(self, server, address):
        self.calls.append(address)
        return 1234


@pytest.mark.parametrize(
    ("node_ip", "asked", "bound"),
    [
        ("127.0.0.1", "[::]:0", "127.0.0.1:0"),
        ("127.0.0.1", "[::]:9000", "127.0.0.1:9000"),
        (None, "[::]:0", "[::]:0"),  # a node reachable from elsewhere: unchanged
        ("127.0.0.1", "10.1.2.3:0", "10.1.2.3:0"),  # an explicit address: unchanged
    ],
)
def test_replica_grpc_binds_loopback_only_on_a_loopback_node(monkeypatch, node_ip, asked, bound):
    import ray.serve._private.replica as replica

    fake = _FakeReplicaModule()
    monkeypatch.setattr(replica, "add_port_to_grpc_server", fake.add_port_to_grpc_server)
    monkeypatch.setattr(_loopback, "_node_ip", lambda: node_ip)
    assert _loopback.bind_replica_grpc_to_loopback_node()
    assert _loopback.bind_replica_grpc_to_loopback_node()  # once: not wrapped twice
    assert replica.add_port_to_grpc_server(object(), asked) == 1234
    assert fake.calls == [bound]


@pytest.fixture(scope="module")
def saved_model(small_simulator, tmp_path_factory):
    root = tmp_path_factory.mktemp("loopback")
    write_logs(small_simulator, root / "logs", 2_000, seed=0)
    logs = read_logs(root / "logs")
    model = make_recommender("naive", epochs=1, seed=0, device="cpu").fit(logs)
    model.save(root / "model")
    write_feature_tables(root / "model", logs.user_table, logs.item_table)
    return root


def _start_serve(root, port, *extra):
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    return subprocess.Popen(
        [sys.executable, "-m", "causalrec.platform.cli", "serve", "--model", str(root / "model"),
         "--port", str(port), "--feedback-dir", str(root / "feedback"), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip


def _wait_healthy(process, url, timeout_s=180.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise AssertionError(f"causalrec serve did not answer /healthz within {timeout_s} s")


def _stop(process):
    """SIGINT (Ctrl-C) the server's process group; SIGKILL it if it does not end in time."""
    stop_process_group(process, signal.SIGINT)
    with process.stdout:
        return process.stdout.read()


@pytest.mark.slow
def test_causalrec_serve_listens_on_loopback_only_and_drains_on_ctrl_c(saved_model):
    """The listeners, then Ctrl-C (SIGINT to the process group, as a terminal sends it).

    A slow request (softmax slates of 20 items for 24 users: seconds of work) is in flight when
    Ctrl-C arrives: it is answered 200, and the server exits 0.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = saved_model / "serve.yaml"  # a deadline long enough for a loaded machine
    config.write_text(f"model_dir: {saved_model / 'model'}\nrequest_timeout_s: 120\n")
    process = _start_serve(saved_model, port, "--config", str(config))
    try:
        _wait_healthy(process, url)
        answer = httpx.post(f"{url}/recommend", json={"user_id": [1, 2], "k": 3}, timeout=30)
        assert answer.status_code == 200
        found = listeners(process.pid)
        names = {name for name, _, _ in found}
        # The check covers Ray's servers and every Serve replica, not a tree that is empty.
        assert {"gcs_server", "raylet"} <= names, found
        replicas = {name for name in names if name.startswith("ray::ServeReplica")}
        assert len(replicas) >= 3, found  # ingress (which scores), evaluator, feedback sink
        assert any(p == port for _, _, p in found), found
        assert exposed(found) == [], exposed(found)
        outcome = {}

        def slow():
            body = {"user_id": list(range(24)), "k": 20, "exploration": "softmax"}
            with httpx.Client(timeout=180) as client:
                outcome["answer"] = client.post(f"{url}/recommend", json=body)

        in_flight = threading.Thread(target=slow)
        in_flight.start()
        time.sleep(1.0)  # the request has reached the replica
        assert in_flight.is_alive(), outcome
        os.killpg(process.pid, signal.SIGINT)
        in_flight.join(timeout=180)
        assert outcome["answer"].status_code == 200, outcome["answer"].text
        assert len(outcome["answer"].json()["recommendations"]) == 24
        process.wait(timeout=180)  # the drain ends by itself: no second Ctrl-C
    finally:
        output = _stop(process)
    assert process.returncode == 0, output
    assert "draining in-flight requests" in output
