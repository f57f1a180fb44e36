"""Several feedback sinks writing disjoint sub-directories of one feedback directory.

Unit-level with :class:`FeedbackLog` (no Ray), the ingress's routing with fake handles, and one
Serve-level test: ``feedback_replicas: 2`` through the application, over HTTP.
"""

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from types import SimpleNamespace

import numpy as np
import pytest

from causalrec.platform.errors import ConfigError
from causalrec.platform.storage import log_files, log_input_files, read_log_column, read_logs
from causalrec.serve.app import CausalRecIngress
from causalrec.serve.config import ServeAppArgs
from causalrec.serve.feedback import (
    ROUND_ID_STRIDE,
    FeedbackLog,
    replica_directory,
    sink_replica,
)
from causalrec.serve.schemas import FeedbackRequest

N_ITEMS = 10


def served(user: int, k: int) -> dict:
    """One user's served slate of ``k`` items (a request's user identifies it in the log)."""
    items = (np.arange(k) + user) % N_ITEMS
    return {
        "users": [user],
        "items": items.reshape(1, k),
        "propensities": np.full((1, k), 0.5),
        "prefix": np.full((1, k), 0.25),
        "policy": "served:softmax",
    }


def clicks_of(user: int, k: int) -> list[list[int]]:
    return [[(user + position) % 2 for position in range(k)]]


def fed_rows(users, k: int) -> set[tuple[int, int, int, int]]:
    """(user, item, position, click) of every impression fed for ``users``."""
    return {
        (user, int(item), position, clicks_of(user, k)[0][position])
        for user in users
        for position, item in enumerate(served(user, k)["items"][0])
    }


def logged_rows(logs) -> set[tuple[int, int, int, int]]:
    rows = zip(logs.user_id, logs.item_id, logs.position, logs.click, strict=True)
    return {tuple(int(value) for value in row) for row in rows}


def sinks(feedback_dir, n: int, **options) -> list[FeedbackLog]:
    return [
        FeedbackLog(replica_directory(feedback_dir, i, n), n_items=N_ITEMS, replica=i, **options)
        for i in range(n)
    ]


def test_replicas_write_disjoint_directories_that_read_logs_merges_once(tmp_path):
    """Interleaved requests routed by id to two sinks, one restarted midway (its journal
    replayed): the parent reads every row once, replica by replica, rounds unique."""
    feedback_dir, k = tmp_path / "fb", 3
    logs_of = sinks(feedback_dir, 2, flush_rows=7)
    users = list(range(60))
    where = {}
    for user in users:
        request_id = f"req-{user}"
        replica = where[user] = sink_replica(request_id, 2)
        logs_of[replica].record(request_id, served(user, k))
        if user == 30:  # a kill: sink 1's buffered rows and pending request live in its journal
            logs_of[1].close()
            logs_of[1] = FeedbackLog(
                replica_directory(feedback_dir, 1, 2), n_items=N_ITEMS, replica=1, flush_rows=7
            )
        logs_of[replica].add_feedback(request_id, clicks_of(user, k))
    for sink in logs_of:
        sink.flush()
    assert set(where.values()) == {0, 1}

    for i in range(2):
        directory = feedback_dir / f"replica-{i:02d}"
        assert sorted(path.name for path in directory.iterdir()) == ["journal", "logs"]
        assert len(list((directory / "logs").glob("part-seg-*.parquet"))) >= 2
        own = read_logs(directory)
        assert logged_rows(own) == fed_rows([u for u in users if where[u] == i], k)
        assert own.metadata["feedback_replica"] == i
    assert not (feedback_dir / "logs").exists()  # no top-level log with several sinks

    files = log_files(feedback_dir)
    expected = [
        *sorted((feedback_dir / "replica-00" / "logs").glob("part-*.parquet")),
        *sorted((feedback_dir / "replica-01" / "logs").glob("part-*.parquet")),
    ]
    assert files == expected  # replica order, then part order
    assert log_input_files(feedback_dir) == expected

    logs = read_logs(feedback_dir)
    assert logs.n_rows == len(users) * k
    assert logged_rows(logs) == fed_rows(users, k)  # every row, exactly once (no duplicate)
    assert len({tuple(row) for row in zip(logs.user_id, logs.position, strict=True)}) == (
        logs.n_rows
    )
    # One round per request, unique across replicas, each in its replica's range.
    rounds = {int(r): set(logs.user_id[logs.round_id == r].tolist()) for r in logs.round_id}
    assert len(rounds) == len(users) and all(len(u) == 1 for u in rounds.values())
    for round_id, (user,) in rounds.items():
        assert round_id // ROUND_ID_STRIDE == where[user] + 1
    assert np.all(np.diff(logs.round_id) >= 0)  # replica 0's rounds first, each sink in order
    np.testing.assert_array_equal(read_log_column(feedback_dir, "round_id"), logs.round_id)


def test_round_ids_continue_in_the_replica_range_after_a_restart(tmp_path):
    feedback_dir = tmp_path / "fb"
    first = FeedbackLog(replica_directory(feedback_dir, 2, 3), n_items=N_ITEMS, replica=2)
    assert first.next_round == 3 * ROUND_ID_STRIDE
    first.record("a", served(1, 2))
    first.add_feedback("a", clicks_of(1, 2))
    first.flush()
    first.record("b", served(2, 2))
    first.add_feedback("b", clicks_of(2, 2))  # journaled only: the replay writes it
    first.close()
    again = FeedbackLog(replica_directory(feedback_dir, 2, 3), n_items=N_ITEMS, replica=2)
    assert again.next_round == 3 * ROUND_ID_STRIDE + 2
    again.record("c", served(3, 2))
    again.add_feedback("c", clicks_of(3, 2))
    again.flush()
    rounds = read_logs(feedback_dir).round_id
    assert sorted(set(rounds.tolist())) == [3 * ROUND_ID_STRIDE + i for i in range(3)]


def test_one_sink_keeps_the_plain_layout_and_a_later_split_adds_no_duplicate_round(tmp_path):
    """N = 1 writes ``feedback_dir/logs`` from round 0 (no replica metadata); replicas added
    later number their rounds elsewhere, and ``read_logs`` reads the old parts first."""
    feedback_dir = tmp_path / "fb"
    assert replica_directory(feedback_dir, 0, 1) == feedback_dir
    plain = FeedbackLog(feedback_dir, n_items=N_ITEMS)
    assert plain.next_round == 0
    for user in range(3):
        plain.record(f"r{user}", served(user, 2))
        plain.add_feedback(f"r{user}", clicks_of(user, 2))
    part = plain.flush()
    assert part.parent == feedback_dir / "logs"
    assert sorted(path.name for path in feedback_dir.iterdir()) == ["journal", "logs"]
    assert "feedback_replica" not in read_logs(part).metadata
    assert read_logs(feedback_dir).round_id.tolist() == [0, 0, 1, 1, 2, 2]
    plain.close()

    split = sinks(feedback_dir, 2)
    for user in range(3, 9):
        request_id = f"r{user}"
        sink = split[sink_replica(request_id, 2)]
        sink.record(request_id, served(user, 2))
        sink.add_feedback(request_id, clicks_of(user, 2))
    for sink in split:
        sink.flush()
    logs = read_logs(feedback_dir)
    assert logged_rows(logs) == fed_rows(range(9), 2)
    assert logs.round_id[:6].tolist() == [0, 0, 1, 1, 2, 2]  # the top-level parts come first
    assert len(np.unique(logs.round_id)) == 9


def test_replica_directories_are_read_in_numeric_order(tmp_path):
    feedback_dir = tmp_path / "fb"
    for i in (100, 99):  # "replica-100" sorts before "replica-99" as text
        sink = FeedbackLog(replica_directory(feedback_dir, i, 101), n_items=N_ITEMS, replica=i)
        sink.record("x", served(i, 1))
        sink.add_feedback("x", clicks_of(i, 1))
        sink.flush()
    (feedback_dir / "replica-notes").mkdir()  # not a replica: ignored
    assert [path.parent.parent.name for path in log_files(feedback_dir)] == [
        "replica-99",
        "replica-100",
    ]
    assert read_logs(feedback_dir).user_id.tolist() == [99, 100]


def test_routing_is_a_stable_hash_that_spreads_over_every_replica(tmp_path):
    ids = [uuid.UUID(int=i).hex for i in range(2_000)]
    for n in (2, 3, 5):
        first = [sink_replica(request_id, n) for request_id in ids]
        assert first == [sink_replica(request_id, n) for request_id in ids]
        expected = [int(hashlib.sha256(r.encode()).hexdigest(), 16) % n for r in ids]
        assert first == expected
        counts = np.bincount(first, minlength=n)
        assert counts.min() > 0.8 * len(ids) / n, counts  # every replica gets its share
    assert {sink_replica(request_id, 1) for request_id in ids} == {0}
    # The same in another process with another string hash salt (Python's hash is not).
    script = (
        "from causalrec.serve.feedback import sink_replica;"
        f"print([sink_replica(r, 5) for r in {ids[:50]!r}])"
    )
    other = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert json.loads(other.stdout) == [sink_replica(r, 5) for r in ids[:50]]
    assert replica_directory(tmp_path, 1, 3) == tmp_path / "replica-01"
    with pytest.raises(ValueError, match="replica"):
        replica_directory(tmp_path, 3, 3)


class FakeSink:
    """A sink handle's ``record``, ``add_feedback`` and ``flush`` (as coroutines)."""

    def __init__(self):
        self.recorded, self.answered, self.flushes = [], [], 0
        self.record = SimpleNamespace(remote=self._record)
        self.add_feedback = SimpleNamespace(remote=self._add_feedback)
        self.flush = SimpleNamespace(remote=self._flush)

    async def _record(self, request_id, served):
        self.recorded.append(request_id)

    async def _add_feedback(self, request_id, clicks):
        if request_id not in self.recorded:
            raise AssertionError(f"{request_id} reached a sink that did not record it")
        self.answered.append(request_id)
        return {"rows": 1, "repeated": False, "buffered_rows": 1, "written_files": 0}

    async def _flush(self):
        self.flushes += 1
        return 2


def test_the_ingress_sends_slates_and_clicks_to_one_sink_and_flushes_all():
    cls = CausalRecIngress.func_or_class
    fakes = [FakeSink() for _ in range(3)]
    ingress = SimpleNamespace(args=ServeAppArgs(model_dir="unused"), sinks=fakes)
    for name in ("_sink_of", "_record", "_within_deadline"):
        method = getattr(cls, name)
        setattr(ingress, name, lambda *call, method=method: method(ingress, *call))
    ids = [f"request-{i}" for i in range(60)]

    async def traffic():
        for request_id in ids:
            assert await ingress._record(request_id, {})
            answer = await cls.feedback(ingress, FeedbackRequest(request_id=request_id, clicks=[]))
            assert answer.rows == 1
        return await cls.flush_feedback(ingress)

    assert asyncio.run(traffic()) == 6  # every sink flushed: 2 files each
    assert [fake.flushes for fake in fakes] == [1, 1, 1]
    for i, fake in enumerate(fakes):
        assert fake.answered == fake.recorded == [r for r in ids if sink_replica(r, 3) == i]
        assert fake.recorded  # every sink got requests


def test_zero_feedback_replicas_is_refused_naming_the_field():
    from causalrec.platform.cli import build_parser
    from causalrec.serve.cli import app_args_from_options

    with pytest.raises(ConfigError, match=r"feedback_replicas=0: .*greater than or equal to 1"):
        ServeAppArgs.from_dict({"model_dir": "m", "feedback_replicas": 0}, source="test")
    with pytest.raises(ConfigError, match=r"feedback_replicas=0"):
        app_args_from_options(
            build_parser().parse_args(["serve", "--model", "m", "--feedback-replicas", "0"])
        )
    options = ["serve", "--model", "m", "--feedback-replicas", "3"]
    assert app_args_from_options(build_parser().parse_args(options)).feedback_replicas == 3
    assert ServeAppArgs(model_dir="m").feedback_replicas == 1


@pytest.mark.ray
def test_two_feedback_sinks_through_the_application(ray_session, small_simulator, tmp_path):
    """``feedback_replicas: 2`` over HTTP: 50 requests with their feedback, then the app's flush;
    both replica directories hold parts, each the requests whose id hashes to it, and the
    feedback directory reads every row once."""
    import httpx
    from ray import serve

    from causalrec.methods import make_recommender
    from causalrec.platform.runtime import free_port
    from causalrec.platform.storage import write_feature_tables
    from causalrec.serve.app import build_app
    from causalrec.simulators import write_logs

    app, k, n_requests = "causalrec-feedback-replicas", 3, 50
    write_logs(small_simulator, tmp_path / "logs", 500, seed=0)
    logs = read_logs(tmp_path / "logs")
    make_recommender("naive", epochs=1, seed=0, device="cpu").fit(logs).save(tmp_path / "model")
    write_feature_tables(tmp_path / "model", logs.user_table, logs.item_table)
    feedback_dir = tmp_path / "feedback"
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        args = ServeAppArgs(
            model_dir=str(tmp_path / "model"), feedback_dir=str(feedback_dir),
            feedback_replicas=2, feedback_flush_rows=10_000, recommender_cpus=0.2,
            evaluator_cpus=0.1, ingress_cpus=0.1,
        )  # fmt: skip
        serve.run(build_app(args), name=app, route_prefix="/")
        deployments = serve.status().applications[app].deployments
        assert {"FeedbackSinkDeployment-00", "FeedbackSinkDeployment-01"} <= set(deployments)
        assert "FeedbackSinkDeployment" not in deployments
        fed, started = {}, time.monotonic()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for user in range(n_requests):
                assert time.monotonic() - started < 120, f"only {user} requests in 120 s"
                answer = client.post("/recommend", json={"user_id": user, "k": k})
                assert answer.status_code == 200, answer.text
                body = answer.json()
                assert body["feedback_logged"] is True
                items = body["recommendations"][0]["items"]
                clicks = [[(user + p) % 2 for p in range(k)]]
                reply = client.post(
                    "/feedback", json={"request_id": body["request_id"], "clicks": clicks}
                )
                assert reply.status_code == 200, reply.text
                fed[user] = (body["request_id"], items, clicks[0])
        assert not list(feedback_dir.glob("replica-*/logs/part-*"))  # all buffered so far

        async def flush() -> int:
            return await serve.get_app_handle(app).flush_feedback.remote()

        assert asyncio.run(flush()) == 2  # one part per sink
    finally:
        serve.shutdown()

    expected = {
        (user, item, position, click)
        for user, (_, items, clicks) in fed.items()
        for position, (item, click) in enumerate(zip(items, clicks, strict=True))
    }
    logged = read_logs(feedback_dir)
    assert logged.n_rows == n_requests * k and logged_rows(logged) == expected
    assert len(np.unique(logged.round_id)) == n_requests
    for i in range(2):
        directory = feedback_dir / f"replica-{i:02d}"
        assert list((directory / "logs").glob("part-seg-*.parquet"))
        mine = sorted(user for user, (rid, _, _) in fed.items() if sink_replica(rid, 2) == i)
        assert mine and sorted(set(read_logs(directory).user_id.tolist())) == mine
