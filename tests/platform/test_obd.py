import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest

from causalrec.platform import storage
from causalrec.platform.errors import LogFormatError, OutputExistsError, UnknownNameError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.obd import load_obd_sample, read_obd, write_obd

FIXTURE_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "obd_raw"
SHARED_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "obd"
needs_shared = pytest.mark.skipif(not SHARED_DIR.is_dir(), reason="../shared/data/obd not present")


class RawOBD(NamedTuple):
    """A raw OBD directory and facts about it, counted with plain pandas from its CSV files."""

    path: Path
    rows: int  # rows of each policy's all.csv
    clicks: dict[str, int]
    n_categorical: int  # one-hot width: distinct user_feature_0..3 values in both logs


# The fixture's facts are in tests/fixtures/obd_raw/README.md; the shared sample's in its README.
FIXTURE = RawOBD(FIXTURE_DIR, 120, {"random": 38, "bts": 42}, 3 + 4 + 8 + 6)
SHARED = RawOBD(SHARED_DIR, 10_000, {"random": 38, "bts": 42}, 3 + 5 + 9 + 9)


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(FIXTURE, id="fixture"),
        pytest.param(SHARED, id="shared", marks=needs_shared),
    ],
)
def raw(request):
    """The shipped raw fixture always; the shared 10,000-row sample too when present."""
    return request.param


ARRAYS = LoggedFeedback.ROW_FIELDS


def assert_same_log(actual, expected):
    for name in ARRAYS:
        a, e = getattr(actual, name), getattr(expected, name)
        assert a.dtype == e.dtype, name
        np.testing.assert_array_equal(a, e, err_msg=name)
    np.testing.assert_array_equal(actual.item_table, expected.item_table)
    assert actual.user_table is None and expected.user_table is None
    assert (actual.n_items, actual.slate_size) == (expected.n_items, expected.slate_size)
    assert actual.metadata == expected.metadata


@pytest.fixture(scope="module")
def csv(raw):
    return {
        policy: pd.read_csv(raw.path / policy / "all" / "all.csv", index_col=0)
        for policy in ("random", "bts")
    }


@pytest.fixture(scope="module")
def converted(raw):
    return {policy: read_obd(raw.path, policy=policy) for policy in ("random", "bts")}


@pytest.mark.parametrize("policy", ["random", "bts"])
def test_rows_clicks_positions_and_pscore_match_the_csv(raw, csv, converted, policy):
    frame = csv[policy].sort_values("timestamp", kind="stable")
    log = converted[policy]
    assert log.n_rows == log.n_rounds == len(frame) == raw.rows
    assert int(log.click.sum()) == frame["click"].sum() == raw.clicks[policy]
    assert log.click.mean() == pytest.approx(frame["click"].mean())
    np.testing.assert_array_equal(log.position, frame["position"].to_numpy() - 1)
    assert set(np.unique(log.position)) == {0, 1, 2}
    np.testing.assert_array_equal(log.item_id, frame["item_id"].to_numpy())
    np.testing.assert_array_equal(log.pscore, frame["propensity_score"].to_numpy())
    assert np.isnan(log.pscore_prefix).all() and np.isnan(log.expected_reward).all()
    assert (log.policy == policy).all()
    assert (log.n_items, log.slate_size) == (80, 3)
    assert log.metadata["license"] == "CC BY 4.0" and log.metadata["campaign"] == "all"


def test_random_log_has_uniform_item_position_propensities(converted):
    np.testing.assert_allclose(converted["random"].pscore, 1 / 80)
    assert converted["bts"].pscore.min() < 1e-4 < 0.9 < converted["bts"].pscore.max()


@pytest.mark.parametrize("policy", ["random", "bts"])
def test_user_features_encode_the_csv_row(raw, csv, converted, policy):
    frame = csv[policy].sort_values("timestamp", kind="stable").reset_index(drop=True)
    log = converted[policy]
    names = log.metadata["feature_names"]
    width = raw.n_categorical + 80
    assert log.user_features.dtype == np.float32 and log.user_features.shape == (raw.rows, width)
    assert len(names) == width
    assert names[raw.n_categorical :] == [f"user-item_affinity_{k}" for k in range(80)]
    np.testing.assert_array_equal(
        log.user_features[:, raw.n_categorical :],
        frame[[f"user-item_affinity_{k}" for k in range(80)]].to_numpy(np.float32),
    )
    one_hot = log.user_features[:, : raw.n_categorical]
    assert set(np.unique(one_hot)) == {0.0, 1.0}
    np.testing.assert_array_equal(one_hot.sum(axis=1), 4)
    for row in (0, raw.rows // 2, raw.rows - 1):
        hot = [names[j] for j in np.flatnonzero(one_hot[row])]
        assert hot == [f"user_feature_{k}={frame.at[row, f'user_feature_{k}']}" for k in range(4)]


def test_random_and_bts_feature_columns_align(csv, converted):
    random, bts = converted["random"], converted["bts"]
    assert random.user_features.shape[1] == bts.user_features.shape[1]
    assert random.metadata["feature_names"] == bts.metadata["feature_names"]
    np.testing.assert_array_equal(random.item_table, bts.item_table)
    # Vocabulary = sorted union of both logs: bts has user_feature_2 values random lacks.
    union = sorted(set(csv["random"]["user_feature_2"]) | set(csv["bts"]["user_feature_2"]))
    block = [n for n in random.metadata["feature_names"] if n.startswith("user_feature_2=")]
    assert block == [f"user_feature_2={value}" for value in union]
    assert len(set(csv["random"]["user_feature_2"])) < len(union)
    assert random.metadata["n_contexts"] == bts.metadata["n_contexts"]


def test_user_id_is_the_context_of_the_categorical_features(csv, converted):
    columns = [f"user_feature_{k}" for k in range(4)]
    combos = sorted(
        set(map(tuple, csv["random"][columns].to_numpy().tolist()))
        | set(map(tuple, csv["bts"][columns].to_numpy().tolist()))
    )
    for policy in ("random", "bts"):
        frame = csv[policy].sort_values("timestamp", kind="stable")
        expected = [combos.index(tuple(row)) for row in frame[columns].to_numpy().tolist()]
        np.testing.assert_array_equal(converted[policy].user_id, expected)
    assert converted["random"].metadata["n_contexts"] == len(combos)


def test_item_table_encodes_item_context(raw, converted):
    items = pd.read_csv(raw.path / "bts" / "all" / "item_context.csv", index_col=0)
    log = converted["bts"]
    assert log.item_table.shape == (80, 1 + 12 + 21 + 7)
    np.testing.assert_array_equal(log.item_table[:, 0], items["item_feature_0"].astype(np.float32))
    np.testing.assert_array_equal(log.item_table[:, 1:].sum(axis=1), 3)
    names = log.metadata["item_feature_names"]
    for j in np.flatnonzero(log.item_table[5, 1:]):
        column, value = names[j + 1].split("=")
        assert items.at[5, column] == value


def test_write_read_round_trip(raw, converted, tmp_path):
    log = converted["bts"]
    summary = write_obd(log, tmp_path / "bts")
    assert_same_log(storage.read_logs(tmp_path / "bts"), log)
    assert not (tmp_path / "bts" / storage.USERS_FILE).exists()
    written = json.loads((tmp_path / "bts" / storage.SUMMARY_FILE).read_text())
    assert written["summary"] == summary and summary["clicks"] == raw.clicks["bts"]
    assert summary["max_inverse_pscore"] == pytest.approx(1 / log.pscore.min())


@needs_shared
@pytest.mark.parametrize("policy", ["random", "bts"])
def test_shipped_sample_equals_a_fresh_conversion(policy):
    assert_same_log(load_obd_sample(policy), read_obd(SHARED_DIR, policy=policy))


@pytest.mark.parametrize("policy", ["random", "bts"])
def test_shipped_sample_holds_the_fixture_rows(policy):
    # The fixture's rows are verbatim rows of the shared sample, whose CSV is in timestamp order:
    # the first column (the row number there) is the round of the shipped sample.
    frame = pd.read_csv(FIXTURE_DIR / policy / "all" / "all.csv", index_col=0)
    rounds = frame.sort_values("timestamp", kind="stable").index.to_numpy()
    fixture, shipped = read_obd(FIXTURE_DIR, policy=policy), load_obd_sample(policy)
    assert len(rounds) == FIXTURE.rows and not frame.index.is_monotonic_increasing  # shuffled
    for name in ("position", "item_id", "click", "pscore"):
        np.testing.assert_array_equal(
            getattr(fixture, name), getattr(shipped, name)[rounds], err_msg=name
        )
    shipped_column = {name: j for j, name in enumerate(shipped.metadata["feature_names"])}
    columns = [shipped_column[name] for name in fixture.metadata["feature_names"]]
    np.testing.assert_array_equal(fixture.user_features, shipped.user_features[rounds][:, columns])
    np.testing.assert_array_equal(fixture.item_table, shipped.item_table)
    assert fixture.metadata["item_feature_names"] == shipped.metadata["item_feature_names"]


@pytest.mark.parametrize(("policy", "clicks"), [("random", 38), ("bts", 42)])
def test_shipped_sample_loads_without_shared(policy, clicks):
    log = load_obd_sample(policy)
    assert (log.n_rows, int(log.click.sum())) == (10_000, clicks)
    assert (log.n_items, log.slate_size) == (80, 3)
    assert log.user_features.shape == (10_000, 106) and log.item_table.shape == (80, 41)
    assert log.metadata["source"] == "open_bandit_dataset" and (log.policy == policy).all()
    assert np.isnan(log.pscore_prefix).all() and (log.pscore > 0).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"policy": "btss"}, "unknown OBD policy 'btss'; did you mean 'bts'"),
        ({"policy": "randm"}, "did you mean 'random'"),
        ({"policy": "bts", "campaign": "woman"}, "unknown OBD campaign 'woman'; did you mean"),
    ],
)
def test_unknown_names_suggest_the_closest(tmp_path, kwargs, match):
    with pytest.raises(UnknownNameError, match=match):
        read_obd(tmp_path, **kwargs)


def test_unknown_sample_policy_suggests_the_closest():
    with pytest.raises(UnknownNameError, match="did you mean 'random'"):
        load_obd_sample("Random")


def test_missing_data_dir_names_the_path(tmp_path):
    with pytest.raises(LogFormatError, match="nowhere"):
        read_obd(tmp_path / "nowhere", policy="random")


def test_missing_file_and_column_name_the_file(raw, tmp_path):
    data = tmp_path / "obd"
    shutil.copytree(raw.path, data, copy_function=shutil.copyfile)  # writable copies
    (data / "bts" / "all" / "all.csv").unlink()
    with pytest.raises(LogFormatError, match=r"bts/all/all\.csv' does not exist"):
        read_obd(data, policy="random")
    frame = pd.read_csv(raw.path / "random" / "all" / "item_context.csv", index_col=0)
    frame.drop(columns="item_feature_2").to_csv(data / "random" / "all" / "item_context.csv")
    shutil.copyfile(raw.path / "bts" / "all" / "all.csv", data / "bts" / "all" / "all.csv")
    with pytest.raises(LogFormatError, match=r"item_context\.csv' lacks the columns \['item_fe"):
        read_obd(data, policy="random")


def test_non_empty_out_is_refused_and_left_alone(raw, converted, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous run")
    with pytest.raises(OutputExistsError, match="not empty"):
        write_obd(converted["random"], out)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (out / "keep.txt").read_text() == "previous run"
    write_obd(converted["random"], out, overwrite=True)
    assert not (out / "keep.txt").exists() and storage.read_logs(out).n_rows == raw.rows


def test_cli_import_obd_smoke(raw, tmp_path):
    out = tmp_path / "obd_random"
    command = [sys.executable, "-m", "causalrec.platform.cli", "import-obd"]
    args = ["--data", str(raw.path), "--policy", "random", "--out", str(out), "--json"]
    result = subprocess.run(command + args, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["rows"], summary["clicks"]) == (raw.rows, raw.clicks["random"])
    assert (summary["items"], summary["positions"]) == (80, 3)
    assert summary["ctr"] == pytest.approx(raw.clicks["random"] / raw.rows)
    assert summary["mean_inverse_pscore"] == pytest.approx(80.0)
    assert storage.read_logs(out).n_rows == raw.rows
    again = subprocess.run(command + args, capture_output=True, text=True, check=False)
    assert again.returncode == 2 and "not empty" in again.stderr


def test_cli_import_obd_rejects_unknown_policy(tmp_path):
    command = [sys.executable, "-m", "causalrec.platform.cli", "import-obd", "--data"]
    args = [str(tmp_path), "--policy", "bst", "--out", str(tmp_path / "out")]
    result = subprocess.run(command + args, capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "did you mean 'bts'" in result.stderr
    assert not (tmp_path / "out").exists()
