"""The live application under faults: SIGKILL of an ingress replica or of the feedback sink.

The module deploys the application (two ingress replicas and a feedback sink) on the session's
Ray; each test runs a client over real HTTP on 127.0.0.1, kills one replica process (found by
its title, ``ray::ServeReplica:<app>:<deployment>``, among this process's descendants: Ray's
workers are children of its raylet, a child of the driver) and checks what the client saw and
what was logged. Serve's controller notices a dead replica at its next health check and starts
a new one; the applications run with ``health_check_period_s=1`` to keep that short (the
default is 10 s). How many requests fail and for how long is measured by
``benchmarks/serve_faults.py``; the tests assert statuses and counts.
"""

import asyncio
import itertools
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import SimpleNamespace

import httpx
import numpy as np
import psutil
import pytest

from causalrec.methods import make_recommender
from causalrec.platform.runtime import free_port
from causalrec.platform.storage import read_logs, write_feature_tables
from causalrec.serve.app import build_app
from causalrec.serve.config import ServeAppArgs
from causalrec.simulators import write_logs

pytestmark = [pytest.mark.ray, pytest.mark.slow]

#: The module's application (at ``/``) and the applications of single tests.
APP, ONE_REPLICA_APP, SCORING_REPLICAS_APP = "faults", "faults-one", "faults-scoring"
#: Slow requests in flight at a kill, and their users (softmax k = K over 40 items: about 10-30
#: ms per user here, so a second or two of scoring each).
SLOW_REQUESTS, SLOW_USERS = 4, 48
#: Items per slate: a feedback's clicks spell ``attempt // n_users`` in binary, so a logged
#: round's (user, clicks) names the attempt that sent it.
K = 8
#: Requests per second of the open-loop client; at most this many requests in all.
RATE, MAX_REQUESTS = 20, 1200
#: Seconds of traffic before the kill, and after the killed replica's successor runs.
BEFORE_KILL_S, AFTER_RESTART_S = 3.0, 3.0
#: Longest wait for Serve to run the killed replica's successor (s).
RESTART_TIMEOUT_S = 90.0
#: Longest wait for one answer (s): a request may wait for the successor; longer is a hang.
CLIENT_TIMEOUT_S = RESTART_TIMEOUT_S + 30.0


@dataclass(frozen=True)
class Call:
    """One HTTP request: send and answer times (s, monotonic clock), status or exception name."""

    sent_s: float
    done_s: float
    status: int | str


def _args(faults, **overrides) -> ServeAppArgs:
    return ServeAppArgs(
        model_dir=str(faults.root / "model"), recommender_cpus=0.2, evaluator_cpus=0.1,
        ingress_cpus=0.1, health_check_period_s=1.0, **overrides,
    )  # fmt: skip


def _warm_up(url: str) -> None:
    with httpx.Client(timeout=CLIENT_TIMEOUT_S) as client:
        for user in range(10):
            client.post(f"{url}/recommend", json={"user_id": user, "k": K}).raise_for_status()


@pytest.fixture(scope="module")
def faults(ray_session, small_simulator, tmp_path_factory):
    """The application with two ingress replicas and a feedback sink, at ``/`` on 127.0.0.1."""
    from ray import serve

    root = tmp_path_factory.mktemp("faults")
    write_logs(small_simulator, root / "logs", 2_000, seed=0)
    logs = read_logs(root / "logs")
    make_recommender("naive", epochs=1, seed=0, device="cpu").fit(logs).save(root / "model")
    write_feature_tables(root / "model", logs.user_table, logs.item_table)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    faults = SimpleNamespace(
        root=root, base=f"http://127.0.0.1:{port}", n_users=small_simulator.config.n_users
    )
    try:
        args = _args(
            faults, num_replicas=2, feedback_dir=str(root / "feedback"),
            feedback_flush_rows=10_000,
        )  # fmt: skip
        serve.run(build_app(args), name=APP, route_prefix="/")
        _warm_up(faults.base)
        yield faults
    finally:
        serve.shutdown()


def replica_pids(app: str, deployment: str) -> list[int]:
    """Pids of ``deployment``'s replica processes under this (the Ray driver's) process."""
    title = f"ServeReplica:{app}:{deployment}"
    pids = []
    for process in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if title in " ".join(process.cmdline()):
                pids.append(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return sorted(pids)


def replaced(app: str, deployment: str, n: int, killed_pid: int) -> float | None:
    """When ``n`` replicas of ``deployment``, none of them ``killed_pid``, ran (``None``: not
    within ``RESTART_TIMEOUT_S``).

    Ran: a process each, and Serve counts ``n`` replicas RUNNING (none starting or stopping).
    """
    from ray import serve

    deadline = time.monotonic() + RESTART_TIMEOUT_S
    while time.monotonic() < deadline:
        pids = replica_pids(app, deployment)
        if len(pids) == n and killed_pid not in pids:
            states = serve.status().applications[app].deployments[deployment].replica_states
            if dict(states) == {"RUNNING": n}:
                return time.monotonic()
        time.sleep(0.25)
    return None


async def _open_loop(url: str, n_users: int, stop: threading.Event) -> list[Call]:
    """``/recommend`` at ``RATE`` per second until ``stop``, each on time however long the
    earlier ones wait; the calls in send order."""
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
        for i in range(MAX_REQUESTS):
            await asyncio.sleep(max(0.0, start + i / RATE - time.monotonic()))
            if stop.is_set():
                break
            tasks.append(asyncio.create_task(call({"user_id": i % n_users, "k": K})))
        return list(await asyncio.gather(*tasks))


def _slow_calls(url: str) -> list[Call]:
    """``SLOW_REQUESTS`` requests of ``SLOW_USERS`` users under softmax, sent together."""
    body = {"user_id": list(range(SLOW_USERS)), "k": K, "exploration": "softmax"}

    def call(_) -> Call:
        sent = time.monotonic()
        try:
            answer = httpx.post(f"{url}/recommend", json=body, timeout=CLIENT_TIMEOUT_S)
        except httpx.HTTPError as exc:
            return Call(sent, time.monotonic(), type(exc).__name__)
        return Call(sent, time.monotonic(), answer.status_code)

    with ThreadPoolExecutor(max_workers=SLOW_REQUESTS) as pool:
        return list(pool.map(call, range(SLOW_REQUESTS)))


def kill_under_load(
    url: str,
    n_users: int,
    app: str,
    n_replicas: int,
    deployment: str = "CausalRecIngress",
    *,
    slow: bool = False,
):
    """SIGKILL of one replica of ``app``'s ``deployment`` while ``/recommend`` runs at ``RATE``.

    The client starts ``BEFORE_KILL_S`` before the kill and stops ``AFTER_RESTART_S`` after
    Serve runs ``n_replicas`` again (or after ``MAX_REQUESTS``). With ``slow``, the kill comes
    0.5 s after :func:`_slow_calls` starts, so requests are surely in flight on every replica.
    Returns the client's calls (with ``slow``, and the slow calls), the time just after the
    kill and the time the killed replica's successor ran (``None``: never).
    """
    pids = replica_pids(app, deployment)
    assert len(pids) == n_replicas, pids
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=2) as pool:
        client = pool.submit(asyncio.run, _open_loop(url, n_users, stop))
        try:
            time.sleep(BEFORE_KILL_S)
            slow_calls = pool.submit(_slow_calls, url) if slow else None
            if slow:
                time.sleep(0.5)
            os.kill(pids[0], signal.SIGKILL)
            killed = time.monotonic()
            back = replaced(app, deployment, n_replicas, pids[0])
            time.sleep(AFTER_RESTART_S)
        finally:
            stop.set()
        if slow_calls is None:
            return client.result(), killed, back
        return (client.result(), slow_calls.result()), killed, back


def _one_by_one(url: str, n: int = 10) -> list[int]:
    """Statuses of ``n`` requests sent one after the other (never more than one waiting)."""
    with httpx.Client(timeout=CLIENT_TIMEOUT_S) as client:
        return [
            client.post(f"{url}/recommend", json={"user_id": user, "k": K}).status_code
            for user in range(n)
        ]


def _statuses(calls: list[Call]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for call in calls:
        counts[str(call.status)] = counts.get(str(call.status), 0) + 1
    return counts


def _in_flight(call: Call, killed: float) -> bool:
    return call.sent_s < killed < call.done_s


def _check_failures(calls: list[Call], killed: float) -> dict[str, int]:
    """Every failure is a 500 in flight at the kill, or a 503 sent after it; the counts."""
    statuses = _statuses(calls)
    for call in calls:
        if call.status == 500:
            assert _in_flight(call, killed), statuses
        elif call.status == 503:
            assert call.sent_s >= killed, statuses
        else:
            assert call.status == 200, statuses
    return statuses


def test_killing_one_of_two_replicas_fails_no_request_it_had_not_accepted(faults):
    """SIGKILL of one of two ingress replicas under 20 requests/s.

    Ray Serve 2.60 cannot promise that no request fails. A request the killed replica had
    accepted (in flight at the kill) is not retried (it may have run): it gets 500 ("actor is
    unavailable"). And until the successor runs (the controller's next health check, then a
    worker process's cold start: seconds, a minute on a loaded machine) the other replica
    carries all the traffic; when it cannot, the proxy answers 503 once
    ``max_queued_requests`` wait. What holds, and is asserted: no request sent after the kill
    gets 500 (the proxy retries on the other replica a request that the dead one had not
    accepted); 500 only for requests in flight at the kill, 503 only after it, no other
    failure and no hang; requests sent after the kill are answered 200 before the successor
    runs (by the other replica); the successor runs and requests sent one by one get 200.
    With no request in flight at the kill and spare capacity, nothing fails
    (``benchmarks/serve_faults.py``).
    """
    calls, killed, back = kill_under_load(faults.base, faults.n_users, APP, 2)
    assert back is not None, "the killed replica was not replaced"
    statuses = _check_failures(calls, killed)
    assert any(c.status == 200 and killed <= c.sent_s and c.done_s < back for c in calls), statuses
    assert _one_by_one(faults.base) == [200] * 10


def test_killing_the_only_replica_answers_503_until_its_successor_serves(faults):
    """SIGKILL of the only ingress replica under 20 requests/s.

    What Ray Serve 2.60 does (durations: ``benchmarks/serve_faults.py``): requests in flight at
    the kill get 500; requests sent after it wait in the proxy until ``max_queued_requests`` of
    them wait, then each new one gets 503 at once, until the controller has noticed the death
    (at its next health check) and the successor has started (a worker process's cold start).
    So the issue's goal of at most one second of 503s is not met: they last about a
    health-check period plus a cold start, less the time the queue takes to fill. Asserted:
    500 only for requests in flight at the kill, 503 only after it, no other failure and no
    hang; requests sent after the kill get 200 (those that waited for the successor), and
    requests sent one by one after it runs get 200.
    """
    from ray import serve

    serve.run(build_app(_args(faults)), name=ONE_REPLICA_APP, route_prefix="/one")
    try:
        url = f"{faults.base}/one"
        _warm_up(url)
        calls, killed, back = kill_under_load(url, faults.n_users, ONE_REPLICA_APP, 1)
        assert back is not None, "the killed replica was not replaced"
        statuses = _check_failures(calls, killed)
        assert any(c.status == 200 for c in calls if c.sent_s >= killed), statuses
        assert _one_by_one(url) == [200] * 10
    finally:
        serve.delete(ONE_REPLICA_APP)


def test_with_scoring_replicas_a_request_whose_replica_dies_is_answered_by_another(faults):
    """``scoring: replicas``, two recommender replicas: SIGKILL of one while requests run on
    both (``SLOW_REQUESTS`` slow ones sent together just before the kill, and the client at
    ``RATE``).

    The ingress sends a request whose replica died to another replica (``scoring_retries``):
    every request gets 200, those in flight at the kill included. Without the retry
    (``scoring_retries=0``) the slow requests on the killed replica fail (measured: 2 of 359
    requests); before it existed they got 500, as a request in flight on a killed *ingress*
    replica still does: nothing in front of the ingress retries.
    """
    from ray import serve

    args = _args(faults, scoring="replicas", num_replicas=2, request_timeout_s=60.0)
    serve.run(build_app(args), name=SCORING_REPLICAS_APP, route_prefix="/scoring")
    try:
        url = f"{faults.base}/scoring"
        _warm_up(url)
        (calls, slow), killed, back = kill_under_load(
            url, faults.n_users, SCORING_REPLICAS_APP, 2, "RecommenderDeployment", slow=True
        )
        assert back is not None, "the killed replica was not replaced"
        assert all(_in_flight(call, killed) for call in slow), slow  # sent before, not done
        statuses = _statuses(calls + slow)
        assert statuses == {"200": len(calls) + len(slow)}, statuses
        assert _one_by_one(url) == [200] * 10
    finally:
        serve.delete(SCORING_REPLICAS_APP)


class FeedbackClient:
    """Numbered attempts: ``/recommend`` for one user, then ``/feedback`` naming the attempt.

    Attempt ``a`` asks for user ``a % n_users`` and clicks the items that spell
    ``a // n_users`` in binary, so a logged round's (user, clicks) names its attempt. Safe to
    use from several threads.
    """

    def __init__(self, base: str, n_users: int):
        self.client = httpx.Client(base_url=base, timeout=CLIENT_TIMEOUT_S)
        self.n_users = n_users
        self._numbers = itertools.count()
        self.served: dict[int, tuple[dict, list, list]] = {}  # feedback body, items, pscore
        self.answers: dict[int, list[tuple[int | str, str]]] = {}  # /feedback status, text
        self.calls: list[tuple[str, Call, str]] = []  # path, call, answer text
        self.unlogged: set[int] = set()  # served with feedback_logged: false

    def _post(self, path: str, body: dict) -> tuple[int | str, httpx.Response | None]:
        """The status (or the exception's name) and the answer of a POST."""
        sent = time.monotonic()
        try:
            answer = self.client.post(path, json=body)
        except httpx.HTTPError as exc:
            self.calls.append((path, Call(sent, time.monotonic(), type(exc).__name__), ""))
            return type(exc).__name__, None
        self.calls.append((path, Call(sent, time.monotonic(), answer.status_code), answer.text))
        return answer.status_code, answer

    def recommend(self) -> int | None:
        """A new attempt's ``/recommend``; its number if answered 200 with the slates logged.

        Slates served with ``feedback_logged: false`` (the sink did not take them in time) get
        no feedback: the attempt is counted in ``unlogged``.
        """
        attempt = next(self._numbers)
        status, answer = self._post("/recommend", {"user_id": attempt % self.n_users, "k": K})
        if status != 200:
            return None
        body = answer.json()
        if not body["feedback_logged"]:
            self.unlogged.add(attempt)
            return None
        clicks = [[(attempt // self.n_users >> bit) & 1 for bit in range(K)]]
        row = body["recommendations"][0]
        self.served[attempt] = (
            {"request_id": body["request_id"], "clicks": clicks},
            row["items"],
            row["propensities"],
        )
        return attempt

    def feed(self, attempt: int) -> int | str:
        """``/feedback`` of a served attempt; its status (or the exception's name)."""
        status, answer = self._post("/feedback", self.served[attempt][0])
        text = "" if answer is None else answer.text
        self.answers.setdefault(attempt, []).append((status, text))
        return status

    def acked(self) -> set[int]:
        """Attempts whose feedback got 200."""
        return {a for a, got in list(self.answers.items()) if any(s == 200 for s, _ in got)}

    def loop(self, stop: threading.Event, max_attempts: int) -> None:
        """Attempts one after the other until ``stop`` or ``max_attempts``."""
        for _ in range(max_attempts):
            if stop.is_set():
                return
            attempt = self.recommend()
            if attempt is not None:
                self.feed(attempt)


async def _flush_sink() -> int:
    """Make the sink write what it buffered (awaited in a loop: with Serve's latency settings
    a handle works only inside one)."""
    from ray import serve

    return await serve.get_deployment_handle("FeedbackSinkDeployment", APP).flush.remote()


def test_acknowledged_feedback_survives_a_sink_kill_exactly_once(faults):
    """SIGKILL of the feedback sink while a client loops on ``/recommend`` + ``/feedback``.

    Once 150 feedbacks are acknowledged, 10 more requests are served without feedback and the
    sink is killed, the loop running (so a call may be in flight). Five of the ten get their
    feedback at once (the sink is down: each waits up to ``request_timeout_s``), five after the
    restart; the loop goes on to 300 served requests (at most 60 s after the kill), sending
    feedback only for slates served with ``feedback_logged: true``. Then the sink flushes and
    the log is read back.

    Asserted: every acknowledged feedback is in the log exactly once, with the items and
    propensities it was served; a feedback that got no 200 is in it at most once; nothing else
    is, and no round twice; every part file reads. A request served before the kill and
    answered after the restart gets 200. The retry of a feedback that got no 200 while the sink
    was down gets 200 (a 504 does not say the feedback was not logged: the ingress stops waiting
    at its deadline, but a request already handed to the new sink still runs; the retry of one
    that was logged is answered ``repeated: true``, and the rows are logged once). No call gets
    404: before idempotent feedback, such a retry did (seen in runs: 504, then 404).
    ``/recommend`` answers 200 throughout (slates the sink could not take are served with
    ``feedback_logged: false``). The only failures: 500 for calls in flight at the kill, 503
    for a ``/feedback`` whose sink died during the call, 504 for a ``/feedback`` that waited out
    its deadline while the sink was down (sent before or after the kill).
    """

    feedback_dir = faults.root / "feedback"
    client, stop = FeedbackClient(faults.base, faults.n_users), threading.Event()
    with client.client, ThreadPoolExecutor(max_workers=6) as pool:
        loop = pool.submit(client.loop, stop, 400)
        while len(client.acked()) < 150 and not loop.done():
            time.sleep(0.05)
        held = []  # served with their slates logged, before the kill, without feedback
        for _ in range(30):
            if (attempt := client.recommend()) is not None:
                held.append(attempt)
            if len(held) == 10:
                break
        assert len(held) == 10, client.calls[-30:]
        (pid,) = replica_pids(APP, "FeedbackSinkDeployment")
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        during = {a: pool.submit(client.feed, a) for a in held[:5]}
        while len(client.served) < 300 and time.monotonic() - killed < 60 and not loop.done():
            time.sleep(0.05)
        stop.set()
        loop.result()
        assert replaced(APP, "FeedbackSinkDeployment", 1, pid) is not None
        after_restart = [client.feed(a) for a in held[5:]]
        retried = {a: client.feed(a) for a, future in during.items() if future.result() != 200}
        asyncio.run(_flush_sink())

    statuses: dict[str, int] = {}
    for path, call, text in client.calls:
        statuses[f"{path} {call.status}"] = statuses.get(f"{path} {call.status}", 0) + 1
        if call.status == 500:
            assert _in_flight(call, killed), (path, text)
        elif call.status == 504:
            assert path == "/feedback" and call.done_s > killed, text
        elif call.status == 503:  # the sink died during the call: "may or may not be logged"
            assert path == "/feedback" and call.done_s > killed, text
            assert "may or may not have been logged: retry" in text, text
        else:
            assert call.status == 200, (path, call.status, text)
    acked = client.acked()
    assert len(acked) >= 150, statuses
    assert after_restart == [200] * 5, statuses
    assert all(status == 200 for status in retried.values()), (statuses, retried)

    files = sorted((feedback_dir / "logs").iterdir())
    assert files and all(f.name.startswith("part-seg-") and f.suffix == ".parquet" for f in files)
    for file in files:
        read_logs(file)  # raises on an unreadable part
    logged = read_logs(feedback_dir)
    order = np.lexsort((logged.position, logged.round_id))
    rounds = logged.round_id[order].reshape(-1, K)
    assert (rounds == rounds[:, :1]).all() and len(np.unique(rounds[:, 0])) == len(rounds)
    assert (logged.position[order].reshape(-1, K) == np.arange(K)).all()
    users, clicks = logged.user_id[order][::K], logged.click[order].reshape(-1, K)
    bits = clicks.astype(np.int64) @ (1 << np.arange(K))
    found = (users + faults.n_users * bits).tolist()
    assert len(found) == len(set(found)), "a feedback is logged twice"
    assert set(found) >= acked, sorted(acked - set(found))
    unanswered = set(client.answers) - acked
    assert set(found) - acked <= unanswered, sorted(set(found) - acked)
    items, pscore = logged.item_id[order].reshape(-1, K), logged.pscore[order].reshape(-1, K)
    for row, attempt in enumerate(found):
        assert items[row].tolist() == client.served[attempt][1]
        np.testing.assert_allclose(pscore[row], client.served[attempt][2])
