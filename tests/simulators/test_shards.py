"""Sharded simulation: the same log, byte for byte, whatever runs the shards.

Shard ``j`` is chunk ``j`` of the seeding scheme (its own ``SeedSequence`` child), written as its
own Parquet parts by one task. These tests would fail if a shard's draws depended on which
process or in what order it ran (a shared generator), if the driver merged the summary's sums in
completion order, or if a worker count leaked into the files.
"""

import hashlib
import json

import numpy as np
import pytest

from causalrec.platform import storage
from causalrec.platform.errors import ConfigError
from causalrec.simulators.logs import generate_logs, write_logs

from ..policies import FailsOnSecondShard

ROUNDS, CHUNK = 5_000, 1_200  # five shards, the last one short


def _digests(out) -> dict[str, str]:
    """Every file of the log directory (parts and feature tables) by its SHA-256."""
    files = storage.log_input_files(out)
    return {file.name: hashlib.sha256(file.read_bytes()).hexdigest() for file in files}


def _summary(out) -> dict:
    return json.loads((out / storage.SUMMARY_FILE).read_text())


@pytest.fixture(scope="module")
def runs(slate_simulator, ray_session, tmp_path_factory):
    """The same log in this process, and as Ray tasks with 1 and 2 workers."""
    root = tmp_path_factory.mktemp("shards")
    for workers in (0, 1, 2):
        write_logs(
            slate_simulator, root / f"w{workers}", ROUNDS, seed=7, chunk_rounds=CHUNK,
            workers=workers, rows_per_file=2_000,
        )  # fmt: skip
    return root


def test_the_log_is_bit_identical_with_0_1_and_2_workers(runs):
    digests = {workers: _digests(runs / f"w{workers}") for workers in (0, 1, 2)}
    # 4 shards of 3,600 rows (1,200 rounds of slates of 3) in 2 parts of <= 2,000 rows, then
    # one of 600 rows in 1.
    assert len([name for name in digests[0] if name.startswith("part-")]) == 9
    assert digests[0] == digests[1] == digests[2]


def test_the_summary_is_the_same_and_records_each_shards_node(runs, ray_session):
    summaries = {workers: _summary(runs / f"w{workers}") for workers in (0, 1, 2)}
    measured = [
        {key: value for key, value in summaries[workers]["summary"].items() if key != "nodes"}
        for workers in (0, 1, 2)
    ]
    assert measured[0] == measured[1] == measured[2]
    assert [summaries[workers]["summary"]["nodes"] for workers in (0, 1, 2)] == [0, 1, 1]
    assert summaries[0]["metadata"] == summaries[2]["metadata"]
    local, ray_run = summaries[0]["run"], summaries[2]["run"]
    assert local["executor"] == "in-process" and local["nodes"] == []
    assert ray_run["executor"] == "ray" and ray_run["workers"] == 2
    node = ray_session.get_runtime_context().get_node_id()
    assert ray_run["nodes"] == [node]
    shards = ray_run["shards"]
    assert [shard["index"] for shard in shards] == [0, 1, 2, 3, 4]
    assert [shard["rounds"] for shard in shards] == [1_200] * 4 + [200]
    assert [shard["first_round"] for shard in shards] == [0, 1_200, 2_400, 3_600, 4_800]
    assert all(shard["node_id"] == node for shard in shards)
    assert summaries[2]["summary"]["shards"] == 5 and summaries[2]["summary"]["nodes"] == 1


def test_the_sharded_log_equals_the_in_memory_log(slate_simulator, runs):
    log = storage.read_logs(runs / "w2")
    memory = generate_logs(slate_simulator, n_rounds=ROUNDS, seed=7, chunk_rounds=CHUNK)
    for name in ("round_id", "user_id", "position", "item_id", "click", "pscore",
                 "pscore_prefix", "expected_reward", "user_features", "policy"):  # fmt: skip
        np.testing.assert_array_equal(getattr(log, name), getattr(memory, name), err_msg=name)
    assert log.metadata["chunk_rounds"] == CHUNK


def test_shards_draw_from_their_own_seeds(slate_simulator):
    """Another chunk size is another seeding scheme: different draws, same world."""
    one = generate_logs(slate_simulator, n_rounds=2_000, seed=7, chunk_rounds=1_000)
    other = generate_logs(slate_simulator, n_rounds=2_000, seed=7, chunk_rounds=2_000)
    assert not np.array_equal(one.user_id, other.user_id)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"workers": -1}, "workers"),
        ({"chunk_rounds": 0}, "chunk_rounds"),
        ({"rows_per_file": 0}, "rows_per_file"),
    ],
)
def test_bad_options_are_refused_before_anything_is_written(small_simulator, tmp_path, options,
                                                            field):  # fmt: skip
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=field):
        write_logs(small_simulator, out, 1_000, seed=1, **options)
    assert not out.exists()


@pytest.mark.parametrize("workers", [0, 2])
def test_a_failed_shard_leaves_the_previous_output_as_it_was(small_simulator, ray_session,
                                                             tmp_path, workers):  # fmt: skip
    out = tmp_path / "run"
    write_logs(small_simulator, out, 500, seed=1)
    before = _digests(out)
    policy = FailsOnSecondShard(small_simulator.logging_policy())
    with pytest.raises(RuntimeError, match="shard 1 failed"):
        write_logs(small_simulator, out, 800, seed=2, policy=policy, chunk_rounds=500,
                   workers=workers, overwrite=True)  # fmt: skip
    assert _digests(out) == before
    assert not list(tmp_path.glob(".run.staging-*"))
