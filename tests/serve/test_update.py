"""Zero-downtime model updates: ``causalrec serve update`` under a steady client.

``causalrec serve`` runs in a process of its own (its own local Ray, in its own process group);
``causalrec serve update`` joins that Ray from another process (through the record the server
keeps) and redeploys the application with a new model, three times, while a client sends
``/recommend`` at a steady rate. Every request must get a 200 whose slates all come from one
model, the old or the new one, and the update is in place: no replica process is replaced.
"""

import threading
import time

import httpx
import psutil
import pytest

from causalrec.methods import SavedModel, make_recommender
from causalrec.platform.runtime import free_port
from causalrec.platform.storage import read_logs, write_feature_tables
from causalrec.simulators import write_logs

from .test_loopback import _start_serve, _stop, _wait_healthy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_models(small_simulator, tmp_path_factory):
    root = tmp_path_factory.mktemp("update")
    write_logs(small_simulator, root / "logs", 2_000, seed=0)
    logs = read_logs(root / "logs")
    for name, seed in (("model", 0), ("other", 1)):
        model = make_recommender("naive", epochs=1, seed=seed, device="cpu").fit(logs)
        model.save(root / name)
        write_feature_tables(root / name, logs.user_table, logs.item_table)
    return root


def _client(url, stop, answers, period_s=0.1, max_requests=3_000):
    """POST /recommend every ``period_s`` until ``stop`` (bounded by ``max_requests``)."""
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(max_requests):
            if stop.is_set():
                return
            try:
                response = client.post("/recommend", json={"user_id": [1, 2, 3], "k": 3})
            except httpx.TransportError as exc:
                answers.append((type(exc).__name__, None))
            else:
                ok = response.status_code == 200
                answers.append((response.status_code, response.json() if ok else response.text))
            time.sleep(period_s)


def _replica_pids(server_pid):
    """Process ids of the Serve replicas under the server's process tree."""
    tree = psutil.Process(server_pid).children(recursive=True)
    return {p.pid for p in tree if p.name().startswith("ray::ServeReplica")}


def _settled_replica_pids(server_pid, minimum=3, timeout_s=60.0):
    """The replica ids once at least ``minimum`` exist and two reads 1 s apart agree.

    ``/healthz`` answers as soon as the scoring replica is up; a worker process takes the
    ``ray::ServeReplica`` title only when its replica starts, so the first read can miss one.
    """
    deadline = time.monotonic() + timeout_s
    previous = _replica_pids(server_pid)
    while time.monotonic() < deadline:
        time.sleep(1)
        current = _replica_pids(server_pid)
        if current == previous and len(current) >= minimum:
            return current
        previous = current
    raise AssertionError(f"replicas did not settle within {timeout_s} s: last read {previous}")


def test_three_updates_under_load_answer_every_request_from_one_model(two_models):
    import subprocess
    import sys

    versions = {
        SavedModel.open(two_models / "model").version: "model",
        SavedModel.open(two_models / "other").version: "other",
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    name = f"update-{port}"
    server = _start_serve(two_models, port, "--name", name)
    stop, answers = threading.Event(), []
    client = threading.Thread(target=_client, args=(url, stop, answers))
    try:
        _wait_healthy(server, url)
        replicas = _settled_replica_pids(server.pid)
        client.start()
        served = []
        for model in ("other", "model", "other"):
            time.sleep(2)
            done = subprocess.run(
                [sys.executable, "-m", "causalrec.platform.cli", "serve", "update",
                 "--name", name, "--model", str(two_models / model)],
                capture_output=True, text=True, timeout=300, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            served.append(httpx.get(f"{url}/healthz", timeout=30).json()["model_version"])
        time.sleep(2)
        # In place: the same replica processes serve before and after the updates.
        assert _replica_pids(server.pid) == replicas
    finally:
        stop.set()
        if client.is_alive():
            client.join(timeout=60)
        output = _stop(server)
    assert server.returncode == 0, output
    assert [versions[v] for v in served] == ["other", "model", "other"]
    failed = [answer for answer in answers if answer[0] != 200]
    assert len(answers) >= 50 and not failed, (failed, len(answers))
    seen = []
    for _, body in answers:
        per_user = {row["model_version"] for row in body["recommendations"]}
        assert per_user == {body["model_version"]}, body  # one model per response
        seen.append(versions[body["model_version"]])
    # Every model took traffic, in the order deployed (no response from a replaced model
    # after its successor answered, beyond the overlap of one drain).
    changes = [m for i, m in enumerate(seen) if i == 0 or m != seen[i - 1]]
    assert changes[0] == "model" and changes[-1] == "other" and len(changes) >= 4, changes
