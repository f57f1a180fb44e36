"""Searches whose trials read their training split from the log's files (data.stream_above_rows)."""

from __future__ import annotations

import json

import pytest

from causalrec.platform.errors import ConfigError
from causalrec.platform.storage import read_logs
from causalrec.simulators import write_logs
from causalrec.tuning import TuningConfig, tune_recommenders
from causalrec.tuning.runner import TRAIN_SPLIT_DIR, _open_log, _spill

METHODS = {
    "naive": {"epochs": 2, "batch_size": 256, "lr": 0.02, "dim": 8},
    "gboost": {"max_iter": 10},
}


@pytest.fixture(scope="module")
def log_dir(small_simulator, tmp_path_factory):
    """3,000 rounds (one row each) in three part files."""
    out = tmp_path_factory.mktemp("tune-stream") / "log"
    write_logs(small_simulator, out, 3000, seed=0, workers=0, rows_per_file=1000)
    return out


def _config(**data) -> TuningConfig:
    return TuningConfig.from_dict(
        {
            "methods": METHODS,
            "search": {"num_samples": 2, "algorithm": "random", "seed": 0},  # gboost, naive
            "scheduler": {"kind": "fifo"},
            "data": data,
        }
    )


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"stream_above_rows": -1}, "data.stream_above_rows=-1"),
        ({"stream_above_rows": "many"}, "data.stream_above_rows='many'"),
        ({"stream_above_rows": 2.5}, "data.stream_above_rows=2.5"),
        ({"stream_above_rows": True}, "data.stream_above_rows=True"),
        ({"reserved_cpus": 0}, "data.reserved_cpus=0"),
        ({"stream_above": 10}, "data.stream_above=10"),
    ],
)
def test_bad_data_values_are_refused_naming_the_field(data, field):
    with pytest.raises(ConfigError, match=f"invalid config: {field}:"):
        _config(**data)


def test_the_threshold_decides_where_the_split_lives(log_dir, tmp_path):
    logs = read_logs(log_dir)
    train, validation = logs.split_by_round(0.2)
    # No threshold, or one the split does not exceed: the path is read into memory.
    for config in (_config(), _config(stream_above_rows=train.n_rows)):
        split = _open_log(log_dir, config)
        assert split.train_source is None
        assert split.train.fingerprint() == train.fingerprint()
    # Over it: only the validation rounds are in memory; the training rounds are described.
    split = _open_log(log_dir, _config(stream_above_rows=train.n_rows - 1))
    assert split.logs is None and split.train is None
    assert split.train_source.count_rows() == train.n_rows
    assert split.validation.fingerprint() == validation.fingerprint()
    assert split.data.logs_fingerprint == logs.fingerprint()
    assert split.data.train_fingerprint == train.fingerprint()
    assert split.data.train_rows == train.n_rows
    # A log passed in memory over the threshold is written out for the trials to read.
    in_memory = _open_log(logs, _config(stream_above_rows=100))
    assert in_memory.train_source is None  # nothing written before the output dir is ready
    spilled = _spill(in_memory, _config(stream_above_rows=100), tmp_path)
    assert spilled.train is None
    assert spilled.train_source.root == str(tmp_path / TRAIN_SPLIT_DIR)
    assert spilled.train_source.fingerprint() == train.fingerprint()
    assert spilled.data.train_fingerprint == train.fingerprint()


@pytest.mark.ray
def test_trials_read_their_split_from_the_files(ray_session, log_dir, tmp_path, capsys):
    logs = read_logs(log_dir)
    train, validation = logs.split_by_round(0.2)
    result = tune_recommenders(log_dir, _config(stream_above_rows=100), tmp_path / "run", verbose=0)
    results = result.results
    assert set(results.method) == set(METHODS), results.method  # both paths below are taken
    assert (results.status == "completed").all(), results.error.tolist()
    # The proof that trials did not get the split through the object store: each one says
    # where it read it from — a Ray Data stream (naive), or the training rounds materialised
    # from the files (gboost) — and the driver kept no training split.
    for row in results.itertuples():
        assert row.train_source == {"naive": "stream", "gboost": "dataset"}[row.method]
        assert row.ground_truth > 0 and row.epochs == row.planned_epochs
    assert result.train is None
    assert result.validation.fingerprint() == validation.fingerprint()
    # The records are those of the same rows in memory.
    assert result.summary["logs_fingerprint"] == logs.fingerprint()
    manifest = json.loads((tmp_path / "run" / "best" / "model.json").read_text())
    assert manifest["train_fingerprint"] == train.fingerprint()
    assert manifest["train_rows"] == train.n_rows
    # On 2 CPUs one trial runs at a time, leaving a CPU to Ray Data's reads.
    assert "1 trial(s) at once" in capsys.readouterr().err


@pytest.mark.ray
def test_no_cpu_left_for_the_reads_is_refused(ray_session, log_dir, tmp_path):
    config = _config(stream_above_rows=100).replace(resources={"cpus_per_trial": 2})
    with pytest.raises(
        ConfigError, match=r"^data\.reserved_cpus=1: .* resources\.cpus_per_trial=2, .* 2 CPUs"
    ):
        tune_recommenders(log_dir, config, tmp_path / "run", verbose=0)
