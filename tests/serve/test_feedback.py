import os
import queue
import runpy
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from causalrec.platform.errors import DataError, LogFormatError
from causalrec.platform.storage import read_logs
from causalrec.serve.feedback import FeedbackConflictError, FeedbackLog, UnknownRequestError


def served(users, k, n_items=10):
    n = len(users)
    items = np.arange(n * k).reshape(n, k) % n_items
    return {
        "users": users,
        "items": items,
        "propensities": np.full((n, k), 0.5),
        "prefix": np.full((n, k), 0.25),
        "policy": "served:softmax",
    }


def test_feedback_is_buffered_then_written_and_round_ids_continue(tmp_path):
    features = np.arange(20, dtype=np.float32).reshape(10, 2)
    sink = FeedbackLog(tmp_path / "fb", n_items=10, flush_rows=5, user_features=features)
    sink.record("a", served([1, 2], 2))
    assert sink.add_feedback("a", [[1, 0], [0, 0]]).rows == 4
    assert sink.written_files == 0 and sink.buffered_rows == 4  # below flush_rows
    sink.record("b", served([3], 3))
    sink.add_feedback("b", [[0, 0, 1]])
    assert sink.written_files == 1 and sink.buffered_rows == 0
    logs = read_logs(tmp_path / "fb")
    assert logs.n_rows == 7 and logs.slate_size == 3
    assert logs.round_id.tolist() == [0, 0, 1, 1, 2, 2, 2]
    assert logs.click.tolist() == [1, 0, 0, 0, 0, 0, 1]
    np.testing.assert_array_equal(logs.user_features, features[[1, 1, 2, 2, 3, 3, 3]])
    # A restarted sink continues the round ids of what is on disk.
    again = FeedbackLog(tmp_path / "fb", n_items=10, flush_rows=1, user_features=features)
    again.record("c", served([4], 1))
    again.add_feedback("c", [[1]])
    assert read_logs(tmp_path / "fb").round_id.max() == 3


def test_feedback_errors_name_the_field_and_keep_the_request(tmp_path):
    sink = FeedbackLog(tmp_path / "fb", n_items=10, capacity=2)
    with pytest.raises(UnknownRequestError, match="request_id: 'x' is not pending"):
        sink.add_feedback("x", [[1]])
    sink.record("a", served([1], 2))
    with pytest.raises(DataError, match=r"clicks: expected 1 list\(s\) of 2 clicks"):
        sink.add_feedback("a", [[1]])
    assert sink.add_feedback("a", [[1, 0]]).rows == 2  # still pending after the bad call
    for name in "bcd":
        sink.record(name, served([1], 1))
    assert list(sink.pending) == ["c", "d"]  # the oldest is dropped at capacity


def test_a_retried_feedback_is_answered_again_and_logged_once(tmp_path):
    sink = FeedbackLog(tmp_path / "fb", n_items=10, capacity=2, flush_rows=100)
    sink.record("a", served([1, 2], 2))
    first = sink.add_feedback("a", [[1, 0], [0, 1]])
    assert (first.rows, first.repeated) == (4, False)
    again = sink.add_feedback("a", [[1, 0], [0, 1]])
    assert (again.rows, again.repeated) == (4, True)
    assert sink.buffered_rows == 4  # nothing added
    for other in ([[0, 0], [0, 1]], [[1, 0]], [[1, 0], [0]]):  # other clicks, shape, ragged
        with pytest.raises(FeedbackConflictError, match="'a' was answered already, with other"):
            sink.add_feedback("a", other)
    sink.flush()
    assert read_logs(tmp_path / "fb").click.tolist() == [1, 0, 0, 1]
    for name in "bc":  # the answers remembered are bounded by capacity: "a" is forgotten
        sink.record(name, served([3], 1))
        sink.add_feedback(name, [[1]])
    assert list(sink.answered) == ["b", "c"]
    with pytest.raises(UnknownRequestError, match="'a' is not pending"):
        sink.add_feedback("a", [[1, 0], [0, 1]])


def test_a_restarted_sink_still_answers_retries_of_feedback_in_its_journal(tmp_path):
    sink = FeedbackLog(tmp_path / "fb", n_items=10, flush_rows=2)
    sink.record("a", served([1], 2))
    sink.record("b", served([2], 1))
    sink.add_feedback("a", [[0, 1]])  # flushed: part file 0 (its segment stays: "b" is pending)
    sink.add_feedback("b", [[1]])  # journaled, buffered
    del sink  # killed

    again = FeedbackLog(tmp_path / "fb", n_items=10, flush_rows=2)
    assert again.add_feedback("a", [[0, 1]]).repeated  # its rows were in a part file
    assert again.add_feedback("b", [[1]]).repeated  # its rows were written by the replay
    with pytest.raises(FeedbackConflictError):
        again.add_feedback("b", [[0]])
    again.flush()
    assert read_logs(tmp_path / "fb").user_id.tolist() == [1, 1, 2]


def test_serve_cli_refuses_a_missing_model_before_starting_ray(tmp_path):
    process = subprocess.run(
        [sys.executable, "-m", "causalrec.platform.cli", "serve", "--model", str(tmp_path / "none")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert process.returncode == 2
    assert "model_dir" in process.stderr and "holds no saved model" in process.stderr


def test_feedback_files_say_whether_propensities_were_estimated(tmp_path):
    import pyarrow.parquet as pq

    sink = FeedbackLog(tmp_path / "fb", n_items=10, flush_rows=1)
    sink.record("exact", {**served([1], 3), "propensity_kind": ["exact"] * 3})
    sink.add_feedback("exact", [[0, 1, 0]])
    sink.record("mc", {**served([2], 3), "propensity_kind": ["exact", "exact", "estimated"]})
    sink.add_feedback("mc", [[0, 0, 0]])
    kinds = []
    for path in sorted((tmp_path / "fb" / "logs").glob("*.parquet")):
        metadata = pq.read_schema(path).metadata[b"causalrec.metadata"].decode()
        kinds.append('"pscore": "estimated"' in metadata)
    assert kinds == [False, True]


# A sink in its own process: records requests, answers the first ones, prints each id after
# add_feedback returned (acknowledged), then waits to be killed. ``request(i)`` is the test's too.
SINK_PROCESS = """
import sys
import time
import types
from pathlib import Path

import numpy as np


def request(i):
    users = [2 * i, 2 * i + 1] if i % 3 == 0 else [2 * i]  # every third: two users, two arms
    n = len(users)
    grid = np.arange(n * 3).reshape(n, 3) + i
    propensities = 1.0 / (grid + 2.0)  # floats that must come back bit for bit
    served = {
        "users": users,
        "items": grid % 50,
        "propensities": propensities,
        "prefix": propensities / 3,
        "scores": propensities * 7,
        "policy": [f"arm{u % 2}/served:softmax" for u in users] if n == 2 else "served:softmax",
        "version": "v1",
        "propensity_kind": ["exact"] * 3,
    }
    return served, (grid % 4 == 0).astype(int).tolist()


if __name__ == "__main__":
    import causalrec

    # causalrec.serve's __init__ imports torch: load the sink module alone, to start fast.
    package = types.ModuleType("causalrec.serve")
    package.__path__ = [str(Path(causalrec.__file__).parent / "serve")]
    sys.modules["causalrec.serve"] = package
    from causalrec.serve.feedback import FeedbackLog

    directory, n_requests, n_answered = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sink = FeedbackLog(directory, n_items=50, flush_rows=10_000)
    for i in range(n_requests):
        sink.record(f"r{i}", request(i)[0])
    for i in range(n_answered):
        sink.add_feedback(f"r{i}", request(i)[1])
        print(f"r{i}", flush=True)
    print("done", flush=True)
    time.sleep(120)
"""


def _pump(stream, lines):
    for line in stream:
        lines.put(line.strip())
    lines.put("")  # end of output


def test_a_killed_sink_keeps_every_acknowledged_feedback_once_and_its_pending_requests(tmp_path):
    helper = tmp_path / "sink_process.py"
    helper.write_text(SINK_PROCESS)
    request = runpy.run_path(str(helper))["request"]
    directory, stderr = tmp_path / "fb", tmp_path / "stderr.txt"
    with open(stderr, "w") as errors:
        process = subprocess.Popen(
            [sys.executable, str(helper), str(directory), "300", "280"],
            stdout=subprocess.PIPE, stderr=errors, text=True, start_new_session=True,
        )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True)
    reader.start()
    acknowledged, deadline = [], time.monotonic() + 90
    try:
        while len(acknowledged) < 200:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            assert line, f"the sink process ended early: {stderr.read_text()[-2000:]}"
            acknowledged.append(line)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL
    reader.join(timeout=10)
    process.stdout.close()
    while (line := lines.get(timeout=1)) != "":  # printed before the kill: acknowledged too
        if line != "done":
            acknowledged.append(line)
    assert acknowledged == [f"r{i}" for i in range(len(acknowledged))]

    again = FeedbackLog(directory, n_items=50, flush_rows=10_000)
    answered = 300 - len(again.pending)  # at most one more than printed (killed before print)
    assert len(acknowledged) <= answered <= min(len(acknowledged) + 1, 280)
    assert list(again.pending) == [f"r{i}" for i in range(answered, 300)]
    for i in range(answered, 300):  # served before the kill, answered after the restart
        again.add_feedback(f"r{i}", request(i)[1])
    again.flush()

    logs = read_logs(directory)
    expected = [request(i) for i in range(300)]
    n_users = sum(len(served["users"]) for served, _ in expected)
    np.testing.assert_array_equal(logs.round_id, np.repeat(np.arange(n_users), 3))
    for field, key in [
        ("item_id", "items"),
        ("pscore", "propensities"),
        ("pscore_prefix", "prefix"),
    ]:
        values = np.concatenate([np.ravel(served[key]) for served, _ in expected])
        np.testing.assert_array_equal(getattr(logs, field), values, err_msg=field)
    np.testing.assert_array_equal(logs.click, np.concatenate([np.ravel(c) for _, c in expected]))
    users = np.concatenate([served["users"] for served, _ in expected])
    np.testing.assert_array_equal(logs.user_id, np.repeat(users, 3))
    policies = [np.broadcast_to(served["policy"], len(served["users"])) for served, _ in expected]
    np.testing.assert_array_equal(logs.policy, np.repeat(np.concatenate(policies), 3))


def test_a_crash_after_the_part_file_before_the_segment_is_deleted_writes_no_duplicates(tmp_path):
    sink = FeedbackLog(tmp_path / "fb", n_items=10, flush_rows=100)
    for name, users in [("a", [1, 2]), ("b", [3])]:
        sink.record(name, served(users, 2))
        sink.add_feedback(name, [[1, 0]] * len(users))
    journal = tmp_path / "fb" / "journal"
    before = tmp_path / "journal-before-flush"
    shutil.copytree(journal, before)
    assert [path.name for path in before.iterdir()] == ["segment-000000000000.jsonl"]
    sink.flush()
    assert not (journal / "segment-000000000000.jsonl").exists()  # answered and written: gone
    shutil.copytree(before, journal, dirs_exist_ok=True)  # as if killed before the deletion
    del sink

    again = FeedbackLog(tmp_path / "fb", n_items=10, flush_rows=1)
    assert again.written_files == 0 and not again.pending
    assert sorted(path.name for path in journal.iterdir()) == ["segment-000000000002.jsonl"]
    again.record("c", served([4], 2))
    again.add_feedback("c", [[0, 1]])
    logs = read_logs(tmp_path / "fb")
    assert logs.user_id.tolist() == [1, 1, 2, 2, 3, 3, 4, 4]
    assert logs.round_id.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_a_torn_last_journal_line_is_ignored_and_the_lines_before_it_kept(tmp_path):
    sink = FeedbackLog(tmp_path / "fb", n_items=10, flush_rows=100)
    for name in "abc":
        sink.record(name, served([ord(name) - ord("a")], 2))
    sink.add_feedback("a", [[0, 1]])
    sink.record("d", served([3], 2))
    del sink  # the process is gone
    (segment,) = (tmp_path / "fb" / "journal").glob("segment-*.jsonl")
    text = segment.read_bytes()
    segment.write_bytes(text[: len(text) - 40])  # killed in the middle of writing "d"

    again = FeedbackLog(tmp_path / "fb", n_items=10, flush_rows=100)
    assert list(again.pending) == ["b", "c"]
    np.testing.assert_array_equal(again.pending["b"]["propensities"], np.full((1, 2), 0.5))
    assert again.written_files == 1 and read_logs(tmp_path / "fb").click.tolist() == [0, 1]
    with pytest.raises(UnknownRequestError, match="request_id: 'd' is not pending"):
        again.add_feedback("d", [[0, 0]])
    assert again.add_feedback("c", [[1, 1]]).rows == 2


def test_an_unreadable_journal_line_before_the_last_is_refused(tmp_path):
    sink = FeedbackLog(tmp_path / "fb", n_items=10)
    sink.record("a", served([1], 2))
    sink.record("b", served([2], 2))
    del sink
    (segment,) = (tmp_path / "fb" / "journal").glob("segment-*.jsonl")
    header, first, second, end = segment.read_bytes().split(b"\n")
    segment.write_bytes(b"\n".join([header, first[:-5], second, end]))
    with pytest.raises(LogFormatError, match=r"segment-000000000000\.jsonl' line 2: not a journal"):
        FeedbackLog(tmp_path / "fb", n_items=10)


def test_the_journal_keeps_only_segments_of_pending_requests(tmp_path):
    sink = FeedbackLog(tmp_path / "fb", n_items=10, capacity=3, flush_rows=100, sync=False)
    for i in range(20):  # no feedback: a segment is retired every `capacity` requests
        sink.record(f"r{i}", served([i % 10], 1))
    journal = sorted(path.name for path in (tmp_path / "fb" / "journal").iterdir())
    assert len(journal) <= 3  # not 20 requests' worth: expired requests' segments are deleted
    sink.close()
    again = FeedbackLog(tmp_path / "fb", n_items=10, capacity=3, sync=False)
    assert list(again.pending) == ["r17", "r18", "r19"]


def test_requests_served_before_a_flush_still_join_after_a_restart(tmp_path):
    sink = FeedbackLog(tmp_path / "fb", n_items=10, flush_rows=2)
    sink.record("a", served([1], 1))
    sink.record("b", served([2], 2))
    sink.add_feedback("b", [[1, 1]])  # flushed: part file 0, a new segment
    sink.record("c", served([3], 1))
    sink.add_feedback("a", [[1]])  # buffered; "a" was served in the flushed segment
    del sink  # killed

    again = FeedbackLog(tmp_path / "fb", n_items=10, flush_rows=2)
    assert list(again.pending) == ["c"] and again.written_files == 1
    again.add_feedback("c", [[0]])
    again.flush()
    logs = read_logs(tmp_path / "fb")
    assert logs.user_id.tolist() == [2, 2, 1, 3] and logs.click.tolist() == [1, 1, 1, 0]
    assert logs.round_id.tolist() == [0, 0, 1, 2]
    assert [path.name for path in (tmp_path / "fb" / "journal").iterdir()] == [
        "segment-000000000003.jsonl"  # every answered request's segment is gone
    ]
