"""What clients see when a Serve replica is killed: failed requests, time until 200s resume.

Usage::

    python benchmarks/serve_faults.py
    python benchmarks/serve_faults.py --rate 40 --health-check-period-s 1

A local Ray with Serve on 127.0.0.1 serves the causalrec application (a naive MF over a
300-user x 40-item simulated log) and five scenarios run once each:

* ``ingress scoring, 2 replicas``: an open-loop client posts ``/recommend`` at ``--rate``
  requests/s (each request is sent on time, however long the earlier ones wait);
  ``--before-kill-s`` later ``--slow`` slow requests (``--slow-users`` users each, softmax
  exploration: about a second of scoring) are sent together, and half a second after them one
  of the two ``CausalRecIngress`` replica processes gets SIGKILL, so requests are surely in
  flight on it; the client stops ``--after-restart-s`` after Serve runs two replicas again.
* ``ingress scoring, 1 replica``: the same with the only ingress replica.
* ``replica scoring, 2 replicas`` and ``1 replica``: the same with ``scoring: replicas``; the
  killed process is a ``RecommenderDeployment`` replica, and the ingress retries a request
  whose replica died (``scoring_retries``).
* ``feedback sink``: a client thread loops on ``/recommend`` (one user) then ``/feedback``;
  after ``--acked-before-kill`` acknowledged feedbacks, ``--held`` more requests are served
  without feedback and the ``FeedbackSinkDeployment`` process gets SIGKILL, the loop running.
  Half the held requests get their feedback at once (while the sink is down), half after its
  restart; one whose feedback got no 200 is sent again after the restart. The loop goes on to
  ``--sink-attempts`` attempts (at most ``--after-kill-s``). Then the sink flushes and the log is
  read back: a round's (user, clicks) names the attempt that sent it.

Times are seconds from the kill (monotonic clock). "Successor runs" is when Serve counts the
replicas RUNNING again; Serve's controller notices a dead replica at its next health check
(``--health-check-period-s``; the application's default is 10 s) and then starts a worker
process, so this is about that period plus a cold start. "First 200" is the first answer 200 to
a request sent after the kill; "last failure" the send time of the last failed request.

The Ray processes are not pinned to one core (``_harness`` is not imported): a recovery
spreads over the raylet, the controller, the proxy and the new replica.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil
from ray import serve

from causalrec.methods import make_recommender
from causalrec.platform.runtime import free_port, init_ray
from causalrec.platform.storage import read_logs, write_feature_tables
from causalrec.serve.app import build_app
from causalrec.serve.config import ServeAppArgs
from causalrec.simulators import ConfoundedRecSimulator, SimulatorConfig, write_logs

APP = "faults"
N_USERS = 300
#: Items per slate; attempt ``a``'s feedback clicks spell ``a // N_USERS`` in binary.
K = 8
#: Longest wait for the successor of a killed replica, and for one answer (s).
RESTART_TIMEOUT_S, CLIENT_TIMEOUT_S = 180.0, 240.0


@dataclass(frozen=True)
class Call:
    """One HTTP request: send and answer times (s, monotonic clock), status or exception name."""

    sent_s: float
    done_s: float
    status: int | str


def replica_pids(deployment: str) -> list[int]:
    """Pids of ``deployment``'s replica processes (``ray::ServeReplica:<app>:<deployment>``)."""
    title = f"ServeReplica:{APP}:{deployment}"
    pids = []
    for process in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if title in " ".join(process.cmdline()):
                pids.append(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return sorted(pids)


def replaced(deployment: str, n: int, killed_pid: int) -> float | None:
    """When Serve ran ``n`` replicas of ``deployment`` again, none of them ``killed_pid``."""
    deadline = time.monotonic() + RESTART_TIMEOUT_S
    while time.monotonic() < deadline:
        pids = replica_pids(deployment)
        if len(pids) == n and killed_pid not in pids:
            states = serve.status().applications[APP].deployments[deployment].replica_states
            if dict(states) == {"RUNNING": n}:
                return time.monotonic()
        time.sleep(0.1)
    return None


async def open_loop(url: str, rate: float, stop: threading.Event) -> list[Call]:
    """``/recommend`` at ``rate`` per second until ``stop``, each on time; calls in send order."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S, limits=limits) as client:

        async def call(body: dict) -> Call:
            sent = time.monotonic()
            try:
                answer = await client.post(f"{url}/recommend", json=body)
            except httpx.HTTPError as exc:
                return Call(sent, time.monotonic(), type(exc).__name__)
            return Call(sent, time.monotonic(), answer.status_code)

        start, tasks = time.monotonic(), []
        for i in itertools.count():
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            if stop.is_set() or time.monotonic() - start > RESTART_TIMEOUT_S + 60:
                break
            tasks.append(asyncio.create_task(call({"user_id": i % N_USERS, "k": K})))
        return list(await asyncio.gather(*tasks))


def outage(calls: list[Call], killed: float, back: float | None) -> dict:
    """Failed requests by status and the recovery times of ``calls`` around a kill."""
    failed = [c for c in calls if c.status != 200]
    after = [c for c in calls if c.sent_s >= killed]
    ok_after = [c.done_s for c in after if c.status == 200]
    return {
        "sent": len(calls),
        "failed": dict(Counter(str(c.status) for c in failed)),
        "in_flight_at_kill": sum(1 for c in calls if c.sent_s < killed < c.done_s),
        "first_failure_s": failed[0].sent_s - killed if failed else None,
        "last_failure_s": failed[-1].sent_s - killed if failed else None,
        "first_200_s": min(ok_after) - killed if ok_after else None,
        "successor_runs_s": back - killed if back is not None else None,
        "max_latency_after_kill_s": max((c.done_s - c.sent_s for c in after), default=None),
    }


def slow_calls(base: str, options) -> list[Call]:
    """``options.slow`` slow ``/recommend`` requests sent at once (softmax over many users)."""
    body = {"user_id": list(range(options.slow_users)), "k": K, "exploration": "softmax"}

    def call(_) -> Call:
        sent = time.monotonic()
        try:
            answer = httpx.post(f"{base}/recommend", json=body, timeout=CLIENT_TIMEOUT_S)
        except httpx.HTTPError as exc:
            return Call(sent, time.monotonic(), type(exc).__name__)
        return Call(sent, time.monotonic(), answer.status_code)

    with ThreadPoolExecutor(max_workers=options.slow) as pool:
        return list(pool.map(call, range(options.slow)))


def replica_scenario(base: str, model_dir: Path, scoring: str, replicas: int, options) -> dict:
    """SIGKILL of one scoring replica under an open-loop ``/recommend`` client."""
    args = ServeAppArgs(
        model_dir=str(model_dir), scoring=scoring, num_replicas=replicas, recommender_cpus=0.2,
        evaluator_cpus=0.1, health_check_period_s=options.health_check_period_s,
        request_timeout_s=60.0,
    )  # fmt: skip
    deployment = "CausalRecIngress" if scoring == "ingress" else "RecommenderDeployment"
    serve.run(build_app(args), name=APP, route_prefix="/")
    try:
        with httpx.Client(base_url=base, timeout=CLIENT_TIMEOUT_S) as client:
            for user in range(20):  # every replica's model and batch path warm
                client.post("/recommend", json={"user_id": user, "k": K}).raise_for_status()
        pid, stop = replica_pids(deployment)[0], threading.Event()
        with ThreadPoolExecutor(max_workers=2) as pool:
            client = pool.submit(asyncio.run, open_loop(base, options.rate, stop))
            try:
                time.sleep(options.before_kill_s)
                slow = pool.submit(slow_calls, base, options)
                time.sleep(0.5)  # the slow requests are being scored
                os.kill(pid, signal.SIGKILL)
                killed = time.monotonic()
                back = replaced(deployment, replicas, pid)
                time.sleep(options.after_restart_s)
            finally:
                stop.set()
            calls = sorted(client.result() + slow.result(), key=lambda call: call.sent_s)
    finally:
        serve.delete(APP)
    return outage(calls, killed, back)


class FeedbackClient:
    """Numbered attempts of ``/recommend`` (one user) then ``/feedback``; thread-safe."""

    def __init__(self, base: str):
        self.client = httpx.Client(base_url=base, timeout=CLIENT_TIMEOUT_S)
        self._numbers = itertools.count()
        self.served: dict[int, dict] = {}  # attempt: its /feedback body
        self.answers: dict[int, list[int | str]] = {}  # attempt: its /feedback statuses
        self.calls: list[tuple[str, Call]] = []
        self.unlogged = 0  # slates served with feedback_logged: false

    def _post(self, path: str, body: dict) -> tuple[int | str, httpx.Response | None]:
        sent = time.monotonic()
        try:
            answer = self.client.post(path, json=body)
        except httpx.HTTPError as exc:
            self.calls.append((path, Call(sent, time.monotonic(), type(exc).__name__)))
            return type(exc).__name__, None
        self.calls.append((path, Call(sent, time.monotonic(), answer.status_code)))
        return answer.status_code, answer

    def recommend(self) -> int | None:
        attempt = next(self._numbers)
        status, answer = self._post("/recommend", {"user_id": attempt % N_USERS, "k": K})
        if status != 200:
            return None
        if not answer.json()["feedback_logged"]:  # the sink did not take the slates in time
            self.unlogged += 1
            return None
        clicks = [[(attempt // N_USERS >> bit) & 1 for bit in range(K)]]
        self.served[attempt] = {"request_id": answer.json()["request_id"], "clicks": clicks}
        return attempt

    def feed(self, attempt: int) -> int | str:
        status, _ = self._post("/feedback", self.served[attempt])
        self.answers.setdefault(attempt, []).append(status)
        return status

    def acked(self) -> set[int]:
        return {a for a, statuses in list(self.answers.items()) if 200 in statuses}

    def loop(self, stop: threading.Event, max_attempts: int) -> None:
        for _ in range(max_attempts):
            if stop.is_set():
                return
            attempt = self.recommend()
            if attempt is not None:
                self.feed(attempt)


def sink_scenario(base: str, model_dir: Path, root: Path, options) -> dict:
    """SIGKILL of ``FeedbackSinkDeployment`` while a client loops on recommend + feedback."""
    feedback_dir = root / "feedback"
    args = ServeAppArgs(
        model_dir=str(model_dir), feedback_dir=str(feedback_dir), feedback_flush_rows=10_000,
        recommender_cpus=0.2, evaluator_cpus=0.1,
        health_check_period_s=options.health_check_period_s,
    )  # fmt: skip
    serve.run(build_app(args), name=APP, route_prefix="/")
    client, stop = FeedbackClient(base), threading.Event()
    try:
        with client.client, ThreadPoolExecutor(max_workers=1 + options.held) as pool:
            loop = pool.submit(client.loop, stop, 2 * options.sink_attempts)
            while len(client.acked()) < options.acked_before_kill and not loop.done():
                time.sleep(0.05)
            held = [a for a in (client.recommend() for _ in range(options.held)) if a is not None]
            pid = replica_pids("FeedbackSinkDeployment")[0]
            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            early = held[: options.held // 2]
            during = {a: pool.submit(client.feed, a) for a in early}
            back = replaced("FeedbackSinkDeployment", 1, pid)
            while (
                len(client.served) < options.sink_attempts
                and time.monotonic() - killed < options.after_kill_s
                and not loop.done()
            ):
                time.sleep(0.05)
            stop.set()
            loop.result()
            held_late = Counter(str(client.feed(a)) for a in held[len(early) :])
            held_during = Counter(str(future.result()) for future in during.values())
            retries = Counter(
                str(client.feed(a)) for a, future in during.items() if future.result() != 200
            )
        serve.get_deployment_handle("FeedbackSinkDeployment", APP).flush.remote().result()
    finally:
        serve.delete(APP)
    logged = read_logs(feedback_dir)  # raises on an unreadable part file
    order = np.lexsort((logged.position, logged.round_id))
    users, clicks = logged.user_id[order][::K], logged.click[order].reshape(-1, K)
    rounds = logged.round_id[order].reshape(-1, K)[:, 0]
    found = Counter((users + N_USERS * (clicks.astype(np.int64) @ (1 << np.arange(K)))).tolist())
    acked = client.acked()
    by_path = {
        path: outage([c for p, c in client.calls if p == path], killed, back)
        for path in ("/recommend", "/feedback")
    }
    return {
        "recommend": by_path["/recommend"],
        "feedback": by_path["/feedback"],
        "unlogged": client.unlogged,
        "acked": len(acked),
        "acked_rows_found": sum(K for a in acked if found[a] >= 1),
        "acked_missing": sum(1 for a in acked if found[a] == 0),
        "duplicates": sum(n - 1 for n in found.values()) + len(rounds) - len(set(rounds)),
        "unacked_found": sum(1 for a in found if a not in acked),
        "never_sent_found": sum(1 for a in found if a not in client.served),
        "held_during_outage": dict(held_during),
        "held_retried": dict(retries),
        "held_after_restart": dict(held_late),
    }


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _row(name: str, result: dict) -> str:
    failed = ", ".join(f"{n} x {s}" for s, n in sorted(result["failed"].items())) or "none"
    return (
        f"| {name} | {result['sent']} | {failed} | {result['in_flight_at_kill']} "
        f"| {_s(result['first_failure_s'])} .. {_s(result['last_failure_s'])} "
        f"| {_s(result['first_200_s'])} | {_s(result['successor_runs_s'])} "
        f"| {_s(result['max_latency_after_kill_s'])} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="requests/s of the client")
    parser.add_argument("--before-kill-s", type=float, default=5.0)
    parser.add_argument("--after-restart-s", type=float, default=10.0)
    parser.add_argument("--after-kill-s", type=float, default=120.0, help="sink scenario")
    parser.add_argument("--health-check-period-s", type=float, default=10.0)
    parser.add_argument("--acked-before-kill", type=int, default=300)
    parser.add_argument("--sink-attempts", type=int, default=900)
    parser.add_argument("--held", type=int, default=20, help="served before the sink's kill")
    parser.add_argument("--slow", type=int, default=4, help="slow requests in flight at a kill")
    parser.add_argument("--slow-users", type=int, default=32, help="users per slow request")
    options = parser.parse_args()

    simulator = ConfoundedRecSimulator(
        SimulatorConfig(n_users=N_USERS, n_items=40, latent_dim=8, confounding=0.9, seed=3)
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_logs(simulator, root / "logs", 5_000, seed=0)
        logs = read_logs(root / "logs")
        model_dir = root / "model"
        make_recommender("naive", epochs=1, seed=0, device="cpu").fit(logs).save(model_dir)
        write_feature_tables(model_dir, logs.user_table, logs.item_table)
        init_ray()
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        base = f"http://127.0.0.1:{port}"
        load = os.getloadavg()[0]
        results = {
            f"{scoring} scoring, {n} replica{'s' * (n > 1)}: /recommend": replica_scenario(
                base, model_dir, scoring, n, options
            )
            for scoring in ("ingress", "replicas")
            for n in (2, 1)
        }
        sink = sink_scenario(base, model_dir, root, options)
        serve.shutdown()
    print(
        f"rate {options.rate:g} requests/s, health_check_period_s "
        f"{options.health_check_period_s:g}, kill {options.before_kill_s + 0.5:g} s after the "
        f"client starts, {options.slow} requests of {options.slow_users} users (softmax) in "
        f"flight; 1-min load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the "
        f"end ({os.cpu_count()} CPUs)\n"
    )
    print(
        "| scenario | requests sent | failed requests by status | in flight at kill "
        "| failures sent (s after kill) | first 200 after kill (s) | successor runs (s) "
        "| longest latency after kill (s) |\n|---|---|---|---|---|---|---|---|"
    )
    for name, result in results.items():
        print(_row(name, result))
    print(_row("sink killed: /recommend", sink["recommend"]))
    print(_row("sink killed: /feedback", sink["feedback"]))
    print(
        "\n| scenario | served with feedback_logged: false | acknowledged feedbacks "
        "| acknowledged rows found after restart "
        "| acknowledged missing | duplicates | unacknowledged found | never sent found "
        "| held: answered during outage | held: retried after restart "
        "| held: answered after restart |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
        f"| feedback sink | {sink['unlogged']} | {sink['acked']} | {sink['acked_rows_found']} "
        f"| {sink['acked_missing']} | {sink['duplicates']} | {sink['unacked_found']} "
        f"| {sink['never_sent_found']} | {sink['held_during_outage']} "
        f"| {sink['held_retried']} | {sink['held_after_restart']} |"
    )


if __name__ == "__main__":
    main()
