"""Logs on storage URIs: every reader and writer goes through ``pyarrow.fs``.

``file://`` URIs resolve to pyarrow's ``LocalFileSystem`` and take the same code path as
``s3://`` or ``gs://`` (listing with ``FileSelector``, opening through the file system, uploading
each finished file, deleting a failed run's objects); a ``PyFileSystem`` over fsspec's in-memory
file system is a genuinely non-local one. Each test would fail if a URI were read or written as
an OS path (``Path("file:///x")`` is the relative ``file:/x``), if the part files written
through a file system differed from the local ones, if the feature tables or ``summary.json``
were not found at a URI, if an overwrite kept old objects, if a failed run left objects behind,
or if an error stopped naming the URI.
"""

import dataclasses
import json
import re
import subprocess
import sys
import uuid

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pytest

from causalrec.ope.sharded import evaluate_dataset
from causalrec.platform import storage
from causalrec.platform.errors import ConfigError, LogFormatError, OutputExistsError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.policy import SoftmaxPolicy
from causalrec.simulators.logs import write_logs

from ..policies import FailsOnSecondShard

#: 1,500 rounds of slates of 3 in shards of 700 rounds and parts of 1,000 rows (parts end in the
#: middle of a slate; the last shard is short).
ROUNDS, CHUNK, ROWS_PER_FILE = 1_500, 700, 1_000
OPTIONS = {"seed": 4, "chunk_rounds": CHUNK, "rows_per_file": ROWS_PER_FILE}


def _uri(path) -> str:
    return path.absolute().as_uri()  # file:///...


def _bytes(file) -> bytes:
    if isinstance(file, storage.Location):
        with file.filesystem.open_input_stream(file.path) as stream:
            return stream.read()
    return file.read_bytes()


def _files(path) -> dict[str, bytes]:
    """Every input file of a log (parts, then feature tables) by name, with its bytes."""
    return {file.name: _bytes(file) for file in storage.log_input_files(path)}


def _assert_same_log(one: LoggedFeedback, other: LoggedFeedback) -> None:
    for field in dataclasses.fields(LoggedFeedback):
        mine, theirs = getattr(one, field.name), getattr(other, field.name)
        if isinstance(mine, np.ndarray) or isinstance(theirs, np.ndarray):
            np.testing.assert_array_equal(mine, theirs, err_msg=field.name)
        else:
            assert mine == theirs, field.name


@pytest.fixture(scope="module")
def local_log(slate_simulator, tmp_path_factory):
    """The log written to a plain path, in this process."""
    out = tmp_path_factory.mktemp("uri") / "local"
    write_logs(slate_simulator, out, ROUNDS, workers=0, **OPTIONS)
    return out


def test_a_file_uri_log_equals_the_local_log_byte_for_byte(slate_simulator, local_log, tmp_path):
    out = tmp_path / "run"
    summary = write_logs(slate_simulator, _uri(out), ROUNDS, workers=0, **OPTIONS)
    parts = storage.log_files(_uri(out))
    assert all(isinstance(part, storage.Location) for part in parts)  # read through pyarrow.fs
    assert parts[0].uri == f"{_uri(out)}/logs/{parts[0].name}"
    assert summary.files == len(parts) == len(storage.log_files(local_log)) == 7
    assert _files(_uri(out)) == _files(local_log)  # parts, users.parquet and items.parquet
    log = storage.read_logs(_uri(out))
    _assert_same_log(log, storage.read_logs(local_log))
    assert log.user_table is not None and log.item_table is not None
    np.testing.assert_array_equal(
        storage.read_log_column(_uri(out), "round_id"), storage.read_logs(local_log).round_id
    )
    written = json.loads((out / storage.SUMMARY_FILE).read_text())
    assert written["summary"] == summary.to_dict()
    assert not list(tmp_path.glob(".run*"))  # no staging directory beside OUT: written in place


def test_shards_on_ray_write_the_same_log_to_a_uri(slate_simulator, local_log, ray_session,
                                                   tmp_path):  # fmt: skip
    out = tmp_path / "run"
    write_logs(slate_simulator, _uri(out), ROUNDS, workers=2, **OPTIONS)
    assert _files(_uri(out)) == _files(local_log)
    _assert_same_log(storage.read_logs(_uri(out)), storage.read_logs(local_log))
    run = json.loads((out / storage.SUMMARY_FILE).read_text())["run"]
    assert run["executor"] == "ray" and [shard["index"] for shard in run["shards"]] == [0, 1, 2]
    assert not list(out.rglob(".*"))  # no temporary file left in the log


def test_sharded_evaluation_of_a_uri_equals_that_of_the_local_path(slate_simulator, local_log,
                                                                   ray_session, tmp_path):  # fmt: skip
    out = tmp_path / "run"
    write_logs(slate_simulator, _uri(out), ROUNDS, workers=0, **OPTIONS)
    policy = SoftmaxPolicy(slate_simulator.relevance_scorer, temperature=2.0, slate_size=3)
    # DR's reward model scores items by the log's items.parquet: read from the URI too.
    estimators = ["ips", "snips", "dr", "sips"]
    results = [
        evaluate_dataset(path, policy, estimators, workers=1, n_bootstrap=20)
        for path in (_uri(out), local_log)
    ]
    # Equal up to the order in which Ray Data hands over the batches (two runs on the local
    # path differ in the last bit too): the same rows, the same feature tables, the same model.
    uri, local = results
    exact = ["estimator", "unit", "max_weight", "reward_model", "reward_sample_rounds", "n_rows",
             "n_rounds", "n_parts", "nodes"]  # fmt: skip
    pd.testing.assert_frame_equal(uri[exact], local[exact], check_exact=True)
    pd.testing.assert_frame_equal(uri, local, check_exact=False, rtol=1e-12, atol=1e-12)
    assert (uri.n_rounds == ROUNDS).all() and (uri.reward_sample_rounds == ROUNDS).all()


def test_a_non_empty_uri_is_refused_and_overwrite_replaces_it(small_simulator, tmp_path):
    out = tmp_path / "run"
    write_logs(small_simulator, _uri(out), 900, seed=1, rows_per_file=300, workers=0)
    (out / "notes.txt").write_text("not part of the run")
    before = _files(_uri(out))
    with pytest.raises(OutputExistsError, match=re.escape(f"'{_uri(out)}' is not empty")):
        write_logs(small_simulator, _uri(out), 200, seed=2, workers=0)
    assert _files(_uri(out)) == before
    write_logs(small_simulator, _uri(out), 200, seed=2, workers=0, overwrite=True)
    # The old objects were deleted first: none of the first run's 3 parts nor notes.txt stays.
    assert sorted(path.name for path in out.rglob("*")) == [
        "items.parquet", "logs", "part-00000-00000.parquet", "summary.json", "users.parquet",
    ]  # fmt: skip
    assert storage.read_logs(_uri(out)).n_rows == 200
    (tmp_path / "file").write_text("a file")
    with pytest.raises(OutputExistsError, match="is not a directory"):
        write_logs(small_simulator, _uri(tmp_path / "file"), 200, seed=2, workers=0)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_failed_run_leaves_no_objects_behind(small_simulator, ray_session, tmp_path, workers,
                                               monkeypatch):  # fmt: skip
    spool = tmp_path / "spool"  # where this process stages files before uploading them
    spool.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(spool))
    out = tmp_path / "run"
    policy = FailsOnSecondShard(small_simulator.logging_policy())
    with pytest.raises(RuntimeError, match="shard 1 failed"):
        # Shard 0 (500 rounds) writes its part before shard 1 fails (in this process).
        write_logs(small_simulator, _uri(out), 800, seed=2, policy=policy, chunk_rounds=500,
                   workers=workers)  # fmt: skip
    assert not out.exists()
    assert not list(spool.iterdir())
    # Over an existing run: its objects are deleted before writing (an object-store overwrite
    # is not atomic), and the failed run's are deleted too.
    write_logs(small_simulator, _uri(out), 500, seed=1, workers=0)
    with pytest.raises(RuntimeError, match="shard 1 failed"):
        write_logs(small_simulator, _uri(out), 800, seed=2, policy=policy, chunk_rounds=500,
                   workers=workers, overwrite=True)  # fmt: skip
    assert out.is_dir() and not list(out.iterdir())


def test_a_missing_or_corrupt_uri_is_named(small_simulator, tmp_path):
    missing = _uri(tmp_path / "missing")
    with pytest.raises(LogFormatError, match=re.escape(f"'{missing}' does not exist")):
        storage.read_logs(missing)
    with pytest.raises(LogFormatError, match=f"no log files .* under {re.escape(repr(missing))}"):
        storage.log_files(missing)
    out = tmp_path / "run"
    write_logs(small_simulator, _uri(out), 300, seed=1, rows_per_file=100, workers=0)
    (out / "logs" / "part-00000-00001.parquet").write_bytes(b"not parquet")
    corrupt = f"{_uri(out)}/logs/part-00000-00001.parquet"
    with pytest.raises(LogFormatError, match=re.escape(f"'{corrupt}'")):
        storage.read_logs(_uri(out))
    with pytest.raises(LogFormatError, match=re.escape(f"'{corrupt}'")):
        evaluate_dataset(_uri(out), small_simulator.logging_policy(), ["ips"], workers=1)
    with pytest.raises(ConfigError, match="'nosuch://bucket/run'"):
        storage.read_logs("nosuch://bucket/run")


def test_the_cli_simulates_to_a_uri_and_refuses_it_when_not_empty(tmp_path, capsys):
    from causalrec.platform.cli import main

    out = _uri(tmp_path / "run")
    options = ["simulate", "--preset", "confounded", "--n-users", "100", "--n-items", "20",
               "--rounds", "300", "--seed", "3", "--workers", "0", "--json", "--out", out]  # fmt: skip
    assert main(options) == 0
    assert json.loads(capsys.readouterr().out)["out"] == out
    log = storage.read_logs(out)
    assert log.n_rows == 300 and log.metadata["seed"] == 3
    assert (tmp_path / "run" / "summary.json").is_file()  # not ./file:/... (an OS path)
    assert main(options) == 2
    assert f"'{out}' is not empty" in capsys.readouterr().err


def test_a_uri_keeps_its_query_below_it():
    """``s3://bucket/run?region=...``: the options stay on every URI below (handed to tasks)."""
    location = storage.Location.from_uri("s3://bucket/run/?region=eu-west-1")
    assert isinstance(location.filesystem, pafs.S3FileSystem)
    assert location.filesystem.region == "eu-west-1"
    logs = location / "logs"
    assert (logs.path, logs.uri) == ("bucket/run/logs", "s3://bucket/run/logs?region=eu-west-1")
    assert storage.portable(logs) == logs.uri


def test_a_non_local_file_system_holds_the_same_log(small_simulator, tmp_path, monkeypatch):
    """fsspec's in-memory file system, through pyarrow: an object store without a network."""
    fsspec = pytest.importorskip("fsspec")
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(spool))
    memory = fsspec.filesystem("memory")
    filesystem = pafs.PyFileSystem(pafs.FSSpecHandler(memory))
    root = f"/causalrec-test-{uuid.uuid4().hex}"
    location = storage.Location(filesystem, f"{root}/run")
    try:
        write_logs(small_simulator, tmp_path / "local", 900, seed=3, rows_per_file=400, workers=0)
        summary = write_logs(small_simulator, location, 900, seed=3, rows_per_file=400, workers=0)
        assert summary.files == 3
        # Uploaded whole under the final names: no temporary object, nothing left in the spool.
        assert sorted(name[len(root) + 1 :] for name in memory.find(root)) == [
            "run/items.parquet", "run/logs/part-00000-00000.parquet",
            "run/logs/part-00000-00001.parquet", "run/logs/part-00000-00002.parquet",
            "run/summary.json", "run/users.parquet",
        ]  # fmt: skip
        assert not list(spool.iterdir())
        assert _files(location) == _files(tmp_path / "local")
        _assert_same_log(storage.read_logs(location), storage.read_logs(tmp_path / "local"))
        with pytest.raises(OutputExistsError, match=re.escape(f"'{location}'")):
            write_logs(small_simulator, location, 900, seed=3, workers=0)
        policy = FailsOnSecondShard(small_simulator.logging_policy())
        with pytest.raises(RuntimeError, match="shard 1 failed"):
            write_logs(small_simulator, location, 800, seed=2, policy=policy, chunk_rounds=500,
                       workers=0, overwrite=True)  # fmt: skip
        assert memory.find(root) == []
    finally:
        if memory.exists(root):
            memory.rm(root, recursive=True)


def test_writers_of_local_directories_refuse_a_uri_before_any_work(tmp_path):
    """Only write_logs writes to storage URIs; the other commands say so before they start."""
    uri = (tmp_path / "out").as_uri()
    with pytest.raises(ConfigError, match="local directories only"):
        storage.check_output_dir(uri, overwrite=False)
    assert storage.check_output_dir(uri, overwrite=False, uri=True) is not None
    done = subprocess.run(
        [sys.executable, "-m", "causalrec.platform.cli", "pipeline", "--out", uri],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode != 0 and "local directories only" in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "out").exists()
