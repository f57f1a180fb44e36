"""Log schema version 2 (sessions): reading version 1, migrating it, and refusing broken files."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow.parquet as pq
import pytest

from causalrec.platform import schema, storage
from causalrec.platform.errors import DataError, LogFormatError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.simulators import ConfoundedRecSimulator, SimulatorConfig, generate_logs


@pytest.fixture(scope="module")
def slate_log() -> LoggedFeedback:
    simulator = ConfoundedRecSimulator(SimulatorConfig(n_users=80, n_items=30, slate_size=3))
    return generate_logs(simulator, n_rounds=400, seed=2)


def _write_version_1(log: LoggedFeedback, directory, rows_per_file: int | None = None):
    """Files as causalrec wrote them before version 2 (the version-1 columns only)."""
    v1 = schema.log_schema(log.user_features.shape[1], log.metadata, version=1)
    assert v1.metadata[schema.SCHEMA_VERSION_KEY] == b"1"
    directory.mkdir(parents=True)
    table = storage.feedback_to_table(log, v1)
    rows_per_file = rows_per_file or table.num_rows
    for index, start in enumerate(range(0, table.num_rows, rows_per_file)):
        pq.write_table(table.slice(start, rows_per_file), directory / f"part-{index:05d}.parquet")


def _slate_probability_by_loop(log: LoggedFeedback) -> np.ndarray:
    last = {}
    for round_id, position, prefix in zip(
        log.round_id, log.position, log.pscore_prefix, strict=True
    ):
        if position >= last.get(round_id, (-1, 0.0))[0]:
            last[round_id] = (position, prefix)
    return np.array([last[r][1] for r in log.round_id])


def test_version_1_is_read_as_one_step_sessions(slate_log, tmp_path):
    # A round split across two files still gets its whole slate's probability.
    _write_version_1(slate_log, tmp_path / "v1", rows_per_file=301)
    old = storage.read_logs(tmp_path / "v1")
    for name in ("round_id", "user_id", "position", "item_id", "click", "pscore", "pscore_prefix"):
        np.testing.assert_array_equal(getattr(old, name), getattr(slate_log, name))
    np.testing.assert_array_equal(old.session_id, old.round_id)
    np.testing.assert_array_equal(old.timestamp, old.round_id)
    assert (old.step == 0).all()
    np.testing.assert_array_equal(old.step_pscore, _slate_probability_by_loop(slate_log))


def test_migrating_version_1_to_version_2_keeps_every_row(slate_log, tmp_path):
    _write_version_1(slate_log, tmp_path / "v1")
    old = storage.read_logs(tmp_path / "v1")
    with storage.LogWriter(tmp_path / "v2", n_user_features=12, metadata=old.metadata) as writer:
        writer.write(old)
    new = storage.read_logs(tmp_path / "v2")
    file_schema = pq.read_schema(storage.log_files(tmp_path / "v2")[0])
    assert int(file_schema.metadata[schema.SCHEMA_VERSION_KEY]) == 2
    for name in LoggedFeedback.ROW_FIELDS:
        np.testing.assert_array_equal(getattr(new, name), getattr(old, name), err_msg=name)
    assert new.fingerprint() == old.fingerprint() == slate_log.fingerprint()


def test_a_directory_mixing_versions_is_merged(slate_log, tmp_path):
    first, second = (
        slate_log.select(slate_log.round_id < 200),
        slate_log.select(slate_log.round_id >= 200),
    )
    second = dataclasses.replace(second, step=np.ones(second.n_rows, dtype=np.int64))
    _write_version_1(first, tmp_path / "mixed")
    with storage.LogWriter(
        tmp_path / "new", n_user_features=12, metadata=slate_log.metadata
    ) as writer:
        writer.write(second)
    (tmp_path / "new" / "part-00000.parquet").rename(tmp_path / "mixed" / "part-00001.parquet")
    merged = storage.read_logs(tmp_path / "mixed")
    assert merged.n_rows == slate_log.n_rows
    np.testing.assert_array_equal(
        merged.step, np.r_[np.zeros(first.n_rows), np.ones(second.n_rows)]
    )
    np.testing.assert_array_equal(merged.step_pscore, _slate_probability_by_loop(slate_log))


@pytest.mark.parametrize("dropped", ["session_id", "timestamp", "step_pscore"])
def test_a_file_claiming_version_2_without_its_columns_is_refused(slate_log, tmp_path, dropped):
    table = storage.feedback_to_table(slate_log, schema.log_schema(12, {}))
    path = tmp_path / "part-00000.parquet"
    pq.write_table(table.drop_columns([dropped]), path)
    with pytest.raises(LogFormatError, match=rf"part-00000\.parquet.*version 2.*'{dropped}'"):
        storage.read_logs(path)


def test_session_fields_are_validated(slate_log):
    columns = {name: getattr(slate_log, name) for name in LoggedFeedback.ROW_FIELDS}
    step = np.zeros(slate_log.n_rows, dtype=np.int64)
    step[5] = -1
    with pytest.raises(DataError, match="step must be >= 0; got -1 at row 5"):
        LoggedFeedback(**{**columns, "step": step}, n_items=30, slate_size=3)
    with pytest.raises(DataError, match="timestamp must be integer"):
        LoggedFeedback(
            **{**columns, "timestamp": columns["timestamp"].astype(float)}, n_items=30, slate_size=3
        )
    with pytest.raises(DataError, match="session_id must have"):
        LoggedFeedback(
            **{**columns, "session_id": columns["session_id"][:3]}, n_items=30, slate_size=3
        )
