"""Serve's health check is a real probe: a replica whose model scores NaN is replaced.

The model of the running ingress replica is poisoned in place (its weights set to NaN through
Ray's ``__ray_call__``, as a corrupted model in memory would be); ``/healthz`` then answers 503
naming the canary, Serve's periodic health check fails the same way, and Serve replaces the
replica with a new process that loads the model again and answers 200.
"""

import time

import httpx
import pytest

from causalrec.methods import make_recommender
from causalrec.platform.runtime import free_port
from causalrec.platform.storage import read_logs
from causalrec.serve.app import build_app
from causalrec.serve.config import ServeAppArgs
from causalrec.simulators import write_logs

pytestmark = [pytest.mark.ray, pytest.mark.slow]

APP = "health"


def _poison(replica_actor) -> int:
    """Set the model weights of the replica's ingress to NaN; returns the replica's pid."""
    import os

    import torch

    ingress = replica_actor._replica_impl._user_callable_wrapper._callable
    with torch.no_grad():
        for parameter in ingress.scorer.core.model.network_.parameters():
            parameter.fill_(float("nan"))
    return os.getpid()


def _ingress_actor(ray):
    names = ray.util.list_named_actors(all_namespaces=True)
    (name,) = [
        actor["name"]
        for actor in names
        if actor["name"].startswith(f"SERVE_REPLICA::{APP}#CausalRecIngress")
    ]
    return ray.get_actor(name, namespace="serve"), name


def test_a_replica_whose_model_scores_nan_is_replaced(ray_session, small_simulator, tmp_path):
    from ray import serve

    write_logs(small_simulator, tmp_path / "logs", 1_000, seed=0)
    model = make_recommender("naive", epochs=1, seed=0, device="cpu").fit(
        read_logs(tmp_path / "logs")
    )
    model.save(tmp_path / "model")
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = ServeAppArgs(
        model_dir=str(tmp_path / "model"), health_check_period_s=1.0, health_check_timeout_s=5.0,
        recommender_cpus=0.2, evaluator_cpus=0.1,
    )  # fmt: skip
    serve.run(build_app(args), name=APP, route_prefix=f"/{APP}")
    url = f"http://127.0.0.1:{port}/{APP}"
    try:
        assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200
        actor, name = _ingress_actor(ray_session)
        poisoned_pid = ray_session.get(actor.__ray_call__.remote(_poison))
        sick = httpx.get(f"{url}/healthz", timeout=30)
        assert sick.status_code == 503 and "canary" in sick.json()["detail"], sick.text
        deadline, replaced = time.monotonic() + 120, None
        while time.monotonic() < deadline:  # bounded: Serve checks every second
            try:
                actor, new_name = _ingress_actor(ray_session)
            except ValueError:  # between the old replica's death and the new one's start
                time.sleep(1)
                continue
            if new_name != name:
                health = httpx.get(f"{url}/healthz", timeout=30)
                if health.status_code == 200:
                    replaced = ray_session.get(
                        actor.__ray_call__.remote(lambda _: __import__("os").getpid())
                    )
                    break
            time.sleep(1)
        assert replaced is not None and replaced != poisoned_pid, "the replica was not replaced"
        answer = httpx.post(f"{url}/recommend", json={"user_id": 3, "k": 2}, timeout=30)
        assert answer.status_code == 200
    finally:
        serve.delete(APP)
