import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from causalrec.platform import schema, storage
from causalrec.platform.errors import DataError, LogFormatError, OutputExistsError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.simulators.logs import generate_logs, write_logs


@pytest.fixture(scope="module")
def written(small_simulator, tmp_path_factory):
    out = tmp_path_factory.mktemp("logs") / "run"
    summary = write_logs(small_simulator, out, 3_000, seed=11, rows_per_file=1_000)
    return out, summary


def test_round_trip_equals_in_memory_log(small_simulator, written):
    out, summary = written
    log = storage.read_logs(out)
    memory = generate_logs(small_simulator, n_rounds=3_000, seed=11)
    assert summary.files == 3 and len(storage.log_files(out)) == 3
    for name in ("round_id", "user_id", "position", "item_id", "click", "pscore", "pscore_prefix"):
        np.testing.assert_array_equal(getattr(log, name), getattr(memory, name))
    np.testing.assert_array_equal(log.user_features, memory.user_features)
    np.testing.assert_array_equal(log.policy, memory.policy)
    np.testing.assert_allclose(log.user_table, small_simulator.user_features.astype(np.float32))
    assert log.item_table.shape == small_simulator.item_features.shape
    assert log.n_items == small_simulator.n_items


def test_metadata_makes_the_log_self_describing(small_simulator, written):
    out, _ = written
    metadata = storage.read_logs(out).metadata
    assert metadata["simulator"] == small_simulator.config.model_dump()
    assert metadata["seed"] == 11 and metadata["policy"] == "logging"
    file_metadata = pq.read_schema(storage.log_files(out)[0]).metadata
    assert int(file_metadata[schema.SCHEMA_VERSION_KEY]) == schema.LOG_SCHEMA_VERSION
    assert json.loads((out / "summary.json").read_text())["summary"]["rows"] == 3_000


def test_pandas_reads_the_same_log(written):
    out, _ = written
    frame = pd.read_parquet(out / "logs")
    log = storage.read_logs(out)
    assert len(frame) == log.n_rows
    np.testing.assert_array_equal(frame["item_id"].to_numpy(), log.item_id)
    np.testing.assert_array_equal(frame["pscore"].to_numpy(), log.pscore)
    np.testing.assert_array_equal(np.stack(frame["user_features"].to_numpy()), log.user_features)


@pytest.mark.ray
def test_ray_data_reads_the_same_log(written, ray_session):
    import ray.data

    out, _ = written
    log = storage.read_logs(out)
    dataset = ray.data.read_parquet(str(out / "logs"))
    assert dataset.count() == log.n_rows
    frame = dataset.to_pandas().sort_values("round_id")
    np.testing.assert_array_equal(frame["item_id"].to_numpy(), log.item_id)
    assert frame["click"].sum() == log.click.sum()


def test_non_empty_output_is_refused_and_kept(small_simulator, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match=r"not empty.*--overwrite"):
        write_logs(small_simulator, out, 100, seed=0)
    assert (out / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging left behind


def test_overwrite_replaces_atomically(small_simulator, tmp_path):
    out = tmp_path / "run"
    write_logs(small_simulator, out, 100, seed=0)
    write_logs(small_simulator, out, 200, seed=1, overwrite=True)
    assert storage.read_logs(out).n_rows == 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_crash_midway_leaves_previous_run_intact(small_simulator, tmp_path, monkeypatch):
    out = tmp_path / "run"
    write_logs(small_simulator, out, 100, seed=0)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))

    def explode(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(storage, "write_feature_tables", explode)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_logs(small_simulator, out, 300, seed=1, overwrite=True)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert storage.read_logs(out).n_rows == 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_truncated_file_is_reported_by_name(written, tmp_path):
    out, _ = written
    broken = tmp_path / "part-00000.parquet"
    data = storage.log_files(out)[0].read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(LogFormatError, match=r"part-00000\.parquet"):
        storage.read_logs(broken)


def test_corrupt_file_is_reported_by_name(tmp_path):
    logs = tmp_path / "run" / "logs"
    logs.mkdir(parents=True)
    (logs / "part-00000.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    with pytest.raises(LogFormatError, match=r"part-00000\.parquet"):
        storage.read_logs(tmp_path / "run")


def test_foreign_parquet_and_wrong_version_are_refused(tmp_path, written):
    foreign = tmp_path / "foreign.parquet"
    pd.DataFrame({"a": [1, 2]}).to_parquet(foreign)
    with pytest.raises(LogFormatError, match=r"foreign\.parquet.*not a causalrec log"):
        storage.read_logs(foreign)
    out, _ = written
    table = pq.read_table(storage.log_files(out)[0])
    metadata = dict(table.schema.metadata)
    metadata[schema.SCHEMA_VERSION_KEY] = b"999"
    future = tmp_path / "future.parquet"
    pq.write_table(table.replace_schema_metadata(metadata), future)
    with pytest.raises(LogFormatError, match=r"future\.parquet.*version 999"):
        storage.read_logs(future)


def test_missing_paths(tmp_path):
    with pytest.raises(LogFormatError, match="does not exist"):
        storage.read_logs(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LogFormatError, match="no log files"):
        storage.read_logs(tmp_path / "empty")


def test_feedback_container_validates(small_simulator):
    log = generate_logs(small_simulator, n_rounds=50, seed=0)
    columns = {name: getattr(log, name) for name in LoggedFeedback.ROW_FIELDS}
    bad_pscore = log.pscore.copy()
    bad_pscore[7] = 0.0
    with pytest.raises(DataError, match=r"pscore must be in \(0, 1\]; got 0.0 at row 7"):
        LoggedFeedback(**{**columns, "pscore": bad_pscore}, n_items=log.n_items)
    with pytest.raises(DataError, match="item_id must be in"):
        LoggedFeedback(**columns, n_items=2)
    with pytest.raises(DataError, match="click must have 50 rows"):
        LoggedFeedback(**{**columns, "click": log.click[:10]}, n_items=log.n_items)
    subset = log.select(log.click == 1)
    assert subset.n_rows == int(log.click.sum())


_WRITER = """
import sys, time
from causalrec.platform import storage
with storage.atomic_output_dir(sys.argv[1], overwrite=True) as staging:
    (staging / "part.txt").write_text("half")
    print(staging, flush=True)
    time.sleep(60)
"""


def _start_writer(out):
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(out)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    staging = process.stdout.readline().strip()
    assert staging, "the writer did not start"
    return process, staging


def test_staging_left_by_a_killed_writer_is_removed_at_the_next_write(tmp_path):
    import os
    import signal
    from pathlib import Path

    out = tmp_path / "run"
    killed, stale = _start_writer(out)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(timeout=30)
    killed.stdout.close()
    assert Path(stale).is_dir()
    live, running = _start_writer(out)  # the next write cleans what the killed one left
    try:
        assert not Path(stale).exists() and Path(running).is_dir()
        (tmp_path / ".run.staging-legacy").mkdir()  # no lock: an older writer's, left alone
        with storage.atomic_output_dir(out, overwrite=True) as staging:
            (staging / "done.txt").write_text("ok")
        assert Path(running).is_dir()  # a live writer's staging is kept
        assert (tmp_path / ".run.staging-legacy").is_dir()
        assert sorted(p.name for p in out.iterdir()) == ["done.txt"]  # no lock file lands
    finally:
        os.killpg(live.pid, signal.SIGKILL)
        live.wait(timeout=30)
        live.stdout.close()
