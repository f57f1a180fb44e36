"""LogDataset: a log's part files and a range of rounds, read a file or a column at a time."""

from __future__ import annotations

import numpy as np
import pytest

from causalrec.platform.errors import ConfigError, DataError, LogFormatError
from causalrec.platform.log_dataset import LogDataset, write_split
from causalrec.platform.storage import read_logs
from causalrec.simulators import write_logs


@pytest.fixture(scope="module")
def log_dir(slate_simulator, tmp_path_factory):
    """400 rounds of slates of 3 (1,200 rows) in five part files."""
    out = tmp_path_factory.mktemp("log-dataset") / "log"
    write_logs(slate_simulator, out, 400, seed=1, workers=0, rows_per_file=250)
    return out


def test_ranges_match_the_log_in_memory(log_dir):
    logs = read_logs(log_dir)
    dataset = LogDataset.open(log_dir)
    assert len(dataset.files) == 5
    assert (dataset.n_items, dataset.slate_size) == (logs.n_items, logs.slate_size)
    assert dataset.fingerprint() == logs.fingerprint()
    train, held_out = logs.split_by_round(0.25)
    cut = dataset.round_cut(0.25)
    assert train.round_id.max() < cut == held_out.round_id.min()
    for part, expected in (
        (dataset.rounds(stop=cut), train),
        (dataset.rounds(start=cut), held_out),
    ):
        assert part.count_rows() == expected.n_rows
        assert part.fingerprint() == expected.fingerprint()
        read = part.read()
        assert read.fingerprint() == expected.fingerprint()
        for name in ("policy", "pscore_prefix", "session_id", "step_pscore"):
            np.testing.assert_array_equal(getattr(read, name), getattr(expected, name))
        np.testing.assert_array_equal(read.user_features, expected.user_features)
        np.testing.assert_array_equal(read.user_table, logs.user_table)
        np.testing.assert_array_equal(read.item_table, logs.item_table)
        assert read.metadata == logs.metadata
    # Ranges intersect; a range with no round is an error, not an empty log.
    middle = dataset.rounds(start=100).rounds(stop=200).rounds(start=50, stop=150)
    assert (middle.round_start, middle.round_stop) == (100, 150)
    np.testing.assert_array_equal(middle.round_ids(), np.arange(100, 150))
    with pytest.raises(DataError, match=r"no log rows in rounds \[5000, None\)"):
        dataset.rounds(start=5000).read()


def test_files_outside_a_range_are_not_opened(log_dir):
    dataset = LogDataset.open(log_dir)
    # The Parquet statistics of round_id tell which files hold rounds of a range: the first file
    # holds rounds 0-83 (1,200 rows in files of 250, 3 per round), the last rounds 333-399.
    early, late = dataset.rounds(stop=50), dataset.rounds(start=300)
    assert [early._may_hold_range(file) for file in dataset.files] == [True] + [False] * 4
    assert [late._may_hold_range(file) for file in dataset.files] == [False] * 3 + [True] * 2
    assert dataset._may_hold_range(dataset.files[-1])


def test_write_split_round_trips(log_dir, tmp_path):
    logs = read_logs(log_dir)
    train, _ = logs.split_by_round(0.5)
    written = write_split(train, tmp_path / "split")
    assert written.root == str(tmp_path / "split")
    assert written.fingerprint() == train.fingerprint()
    assert read_logs(tmp_path / "split").fingerprint() == train.fingerprint()


def test_what_is_not_a_log_is_refused(tmp_path):
    with pytest.raises(LogFormatError, match="does not exist"):
        LogDataset.open(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="needs a local log directory, not a storage URI"):
        LogDataset.open(f"file://{tmp_path}")
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "logs").mkdir()
    pq.write_table(pa.table({"round_id": [0, 1]}), tmp_path / "logs" / "part-00000.parquet")
    with pytest.raises(LogFormatError, match="is not a causalrec log"):
        LogDataset.open(tmp_path)
