import subprocess
import sys

import numpy as np
import pytest

from causalrec.platform.errors import DataError
from causalrec.platform.storage import read_logs
from causalrec.serve.feedback import FeedbackLog, UnknownRequestError


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
    assert sink.add_feedback("a", [[1, 0], [0, 0]]) == 4
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
    assert sink.add_feedback("a", [[1, 0]]) == 2  # still pending after the bad call
    for name in "bcd":
        sink.record(name, served([1], 1))
    assert list(sink.pending) == ["c", "d"]  # the oldest is dropped at capacity


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
