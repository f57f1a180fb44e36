"""HTTP latency and throughput of ``/recommend`` against a no-op Serve deployment, same machine.

Usage::

    python benchmarks/serve.py
    python benchmarks/serve.py --requests 1000 --concurrency 32

A local Ray with Serve on 127.0.0.1 runs four applications: a no-op deployment (returns a
constant; same ``max_ongoing_requests`` and ``max_queued_requests`` as the application), and the
causalrec application with ``@serve.batch`` on (``max_batch_size`` 32) and off
(``max_batch_size`` 1), and with ``scoring: replicas`` (a recommender deployment behind the
ingress: one hop more), each serving a naive MF trained on a 2,000-user x 300-item simulated
log.
Reported: p50/p99 latency at concurrency 1 (no-op vs ``/recommend``, and their ratio; target <=
1.2x), and throughput with p50/p99 at ``--concurrency`` for the no-op and for ``/recommend`` with
batching on vs off (target: ``/recommend`` >= 70% of the no-op's requests/s).

At concurrency 1 the four paths are called in turn, request by request (no-op, ``/healthz``,
``/recommend``, ``/recommend`` with scoring replicas), so drift in the machine's background
load hits all of them alike.
Without an experiment the ingress scores itself (no deployment hop): ``/healthz`` scores the
canary user on the ingress, ``/recommend`` scores and draws the slates. A last application
serves a naive MF over 1,000 items, called with deterministic top-k and with softmax
exploration at the same ``--k``: for k >= 3 the softmax propensities of positions 3..k are
Rao–Blackwellised estimates of the shown items only (not 20,000 sampled slates x 1,000 items
per user).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from ray import serve

from causalrec.methods import make_recommender
from causalrec.platform.runtime import free_port, init_ray
from causalrec.serve.app import build_app
from causalrec.serve.config import ServeAppArgs
from causalrec.simulators import ConfoundedRecSimulator, generate_logs, load_simulator_config


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class NoOp:
    """The baseline: Serve's HTTP path with no work behind it."""

    async def __call__(self, request) -> dict:
        await request.body()
        return {"ok": True}


def _latencies(url: str, bodies: list[dict], concurrency: int) -> tuple[np.ndarray, float]:
    """Per-request latency (s) and wall time of posting ``bodies`` with ``concurrency`` clients."""
    clients = [httpx.Client(timeout=60) for _ in range(concurrency)]

    def worker(index: int) -> list[float]:
        client, times = clients[index], []
        for body in bodies[index::concurrency]:
            start = time.perf_counter()
            answer = client.post(url, json=body)
            times.append(time.perf_counter() - start)
            if answer.status_code != 200:
                raise RuntimeError(f"{url}: HTTP {answer.status_code}: {answer.text[:200]}")
        return times

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        times = [t for part in pool.map(worker, range(concurrency)) for t in part]
    wall = time.perf_counter() - start
    for client in clients:
        client.close()
    return np.asarray(times), wall


def _interleaved(base: str, calls: dict[str, tuple[str, dict | None]], n: int) -> dict:
    """p50/p99 (ms) of each named ``(path, body)`` call, calling them in turn ``n`` times."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    with httpx.Client(timeout=60) as client:
        for _ in range(n):
            for name, (path, body) in calls.items():
                start = time.perf_counter()
                answer = client.request("GET" if body is None else "POST", base + path, json=body)
                times[name].append(time.perf_counter() - start)
                if answer.status_code != 200:
                    raise RuntimeError(f"{path}: HTTP {answer.status_code}: {answer.text[:200]}")
    return {name: _percentiles(t) for name, t in times.items()}


def _percentiles(times) -> dict:
    """p50 and p99 (ms) of latencies in seconds."""
    return {
        "p50_ms": round(float(np.percentile(times, 50)) * 1e3, 2),
        "p99_ms": round(float(np.percentile(times, 99)) * 1e3, 2),
    }


def _summary(times: np.ndarray, wall: float) -> dict:
    return {**_percentiles(times), "requests_per_s": round(len(times) / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    simulator = ConfoundedRecSimulator(
        load_simulator_config(preset="confounded", n_users=2000, n_items=300)
    )
    logs = generate_logs(simulator, n_rounds=100_000, seed=0)
    rng = np.random.default_rng(0)
    bodies = [{"user_id": int(u), "k": args.k} for u in rng.integers(2000, size=args.requests)]
    large = ConfoundedRecSimulator(
        load_simulator_config(preset="confounded", n_users=2000, n_items=1000)
    )
    with tempfile.TemporaryDirectory() as root:
        model_dir, large_dir = Path(root) / "model", Path(root) / "large"
        make_recommender("naive", epochs=2, device="cpu").fit(logs).save(model_dir)
        large_logs = generate_logs(large, n_rounds=100_000, seed=0)
        make_recommender("naive", epochs=2, device="cpu").fit(large_logs).save(large_dir)
        init_ray()
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        base = f"http://127.0.0.1:{port}"
        # The no-op runs under the application's limits: Serve's default max_ongoing_requests
        # (5) would cap its throughput at concurrency 32, and the ratio would mean nothing.
        noop = NoOp.options(max_ongoing_requests=64, max_queued_requests=512)
        serve.run(noop.bind(), name="noop", route_prefix="/noop")
        for name, batch, scoring in (
            ("batched", 32, "ingress"),
            ("unbatched", 1, "ingress"),
            ("replicas", 32, "replicas"),
        ):
            app_args = ServeAppArgs(
                model_dir=str(model_dir), max_batch_size=batch, max_ongoing_requests=64,
                max_queued_requests=512, recommender_cpus=0.4, evaluator_cpus=0.1,
                ingress_cpus=0.1, scoring=scoring,
            )  # fmt: skip
            serve.run(build_app(app_args), name=name, route_prefix=f"/{name}")
        warmup = bodies[:50]
        for path in ("/noop", "/batched/recommend", "/unbatched/recommend", "/replicas/recommend"):
            _latencies(base + path, warmup, 4)
        report = {}
        calls = {
            "noop": ("/noop", bodies[0]),
            "healthz": ("/batched/healthz", None),
            "recommend": ("/batched/recommend", bodies[0]),
            "recommend_scoring_replicas": ("/replicas/recommend", bodies[0]),
        }
        single = _interleaved(base, calls, args.requests)
        single["p50_ratio"] = round(single["recommend"]["p50_ms"] / single["noop"]["p50_ms"], 2)
        report["concurrency_1"] = single
        loaded = {"noop": _summary(*_latencies(f"{base}/noop", bodies, args.concurrency))}
        for name in ("batched", "unbatched", "replicas"):
            url = f"{base}/{name}/recommend"
            loaded[name] = _summary(*_latencies(url, bodies, args.concurrency))
        loaded["throughput_ratio"] = round(
            loaded["batched"]["requests_per_s"] / loaded["noop"]["requests_per_s"], 2
        )
        report[f"concurrency_{args.concurrency}"] = loaded
        # Two CPUs hold two applications' replicas: swap the 300-item ones for the 1,000-item one.
        for name in ("batched", "unbatched", "replicas"):
            serve.delete(name)
        large_args = ServeAppArgs(
            model_dir=str(large_dir), max_batch_size=32, max_ongoing_requests=64,
            max_queued_requests=512, recommender_cpus=0.5, evaluator_cpus=0.1,
        )  # fmt: skip
        serve.run(build_app(large_args), name="large", route_prefix="/large")
        softmax = {**bodies[0], "exploration": "softmax", "temperature": 1.0}
        large_calls = {
            "noop": ("/noop", bodies[0]),
            "top_k_1000_items": ("/large/recommend", bodies[0]),
            "softmax_1000_items": ("/large/recommend", softmax),
        }
        _latencies(base + "/large/recommend", [softmax] * 20, 1)
        report["concurrency_1_over_1000_items"] = _interleaved(
            base, large_calls, max(50, args.requests // 3)
        )
        serve.shutdown()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
