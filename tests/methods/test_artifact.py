"""The saved-model artifact: one layout, safe loading, and today's (version 1) directories."""

import json
import pickle

import numpy as np
import pytest
import torch

from causalrec.methods import SavedModel, is_saved_model, load_recommender, make_recommender
from causalrec.methods.artifact import MODEL_SCHEMA_VERSION, STATE_FILE
from causalrec.platform.errors import LogFormatError, OutputExistsError, UnsafeModelError
from causalrec.simulators import ConfoundedRecSimulator, generate_logs, load_simulator_config


@pytest.fixture(scope="module")
def world():
    simulator = ConfoundedRecSimulator(
        load_simulator_config(preset="confounded", n_users=120, n_items=30, latent_dim=4)
    )
    return simulator, generate_logs(simulator, n_rounds=4_000, seed=0)


@pytest.fixture(scope="module")
def naive(world):
    return make_recommender("naive", epochs=1, dim=4, device="cpu").fit(world[1])


@pytest.fixture(scope="module")
def gboost(world):
    return make_recommender("gboost", max_iter=10).fit(world[1])


USERS = np.arange(12)


class _Payload:
    """Unpickling this runs code: it writes ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"__import__('pathlib').Path({self.marker!r}).write_text('pwned')",))


def _rewrite_manifest(directory, **changes):
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("name", ["naive", "gboost"])
def test_round_trip_writes_only_safe_formats(name, request, tmp_path):
    model = request.getfixturevalue(name)
    saved = SavedModel.write(tmp_path / name, model, metrics={"auc": 0.7})
    files = {path.name for path in saved.path.iterdir()}
    assert not any(f.endswith((".pkl", ".pt")) for f in files)
    assert STATE_FILE in files
    assert ("model.skops" in files) == (name == "gboost")
    assert saved.schema_version == MODEL_SCHEMA_VERSION == 2
    assert saved.method == model.name and saved.metrics == {"auc": 0.7}
    assert (saved.n_users, saved.n_items) == (model.n_users_, model.n_items_)
    loaded = saved.load()
    assert type(loaded) is type(model) and loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.score(USERS), model.score(USERS))
    assert is_saved_model(saved.path) and not is_saved_model(tmp_path)


def test_write_refuses_a_non_empty_directory_and_keeps_it(naive, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError):
        SavedModel.write(tmp_path / "model", naive)
    assert (tmp_path / "model" / "notes.txt").read_text() == "keep me"


def test_version_hashes_the_model_not_its_descriptions(world, naive, tmp_path):
    saved = SavedModel.write(tmp_path / "a", naive)
    copy = saved.copy_to(
        tmp_path / "b",
        training={"trial_id": "t1"},
        feature_tables=(world[0].user_features, world[0].item_features),
    )
    assert copy.version == saved.version
    assert copy.training_record == {"trial_id": "t1"} and saved.training_record is None
    assert copy.user_features.shape == world[0].user_features.shape
    other = make_recommender("naive", epochs=1, dim=4, seed=1, device="cpu").fit(world[1])
    assert SavedModel.write(tmp_path / "c", other).version != saved.version
    described = copy.describe()
    assert described["model_version"] == copy.version and described["tuning"]["trial_id"] == "t1"


def test_an_altered_state_file_is_refused(naive, tmp_path):
    saved = SavedModel.write(tmp_path / "m", naive)
    state = saved.path / STATE_FILE
    state.write_bytes(state.read_bytes()[:-8])
    with pytest.raises(LogFormatError, match="SHA-256"):
        SavedModel.open(saved.path).load()


def test_missing_directory_names_the_path(tmp_path):
    with pytest.raises(LogFormatError, match="holds no saved model"):
        SavedModel.open(tmp_path / "nothing")


# -- version 1 directories (written by causalrec 0.1 before the artifact) ----------------------
def _v1_manifest(model):
    return {
        "method": model.name,
        "params": model.get_params(),
        "schema_version": 1,
        "n_users": model.n_users_,
        "n_items": model.n_items_,
        "causalrec_version": "0.1.0",
    }


def _write_v1(directory, model):
    """A directory exactly as the version-1 ``save`` wrote it."""
    directory.mkdir()
    if model.name == "gboost":
        state = {"model": model.model_, "users": model.user_table_, "items": model.item_table_}
        (directory / "model.pkl").write_bytes(pickle.dumps(state))
    else:
        torch.save(model.network_.state_dict(), directory / "weights.pt")
    (directory / "manifest.json").write_text(json.dumps(_v1_manifest(model)))
    return directory


@pytest.mark.parametrize("name", ["naive", "gboost"])
def test_version_1_directories_still_load_and_migrate(name, request, tmp_path):
    model = request.getfixturevalue(name)
    old = SavedModel.open(_write_v1(tmp_path / "v1", model))
    assert old.schema_version == 1
    np.testing.assert_array_equal(old.load().score(USERS), model.score(USERS))
    migrated = SavedModel.write(tmp_path / "v2", old.load())
    assert migrated.schema_version == 2
    np.testing.assert_array_equal(migrated.load().score(USERS), model.score(USERS))


def test_a_malicious_model_pickle_is_refused_and_never_runs(gboost, tmp_path):
    directory = _write_v1(tmp_path / "v1", gboost)
    marker = tmp_path / "pwned"
    (directory / "model.pkl").write_bytes(pickle.dumps({"model": _Payload(marker)}))
    with pytest.raises(UnsafeModelError, match=r"builtins\.exec"):
        load_recommender(directory)
    assert not marker.exists()
    # The payload is live: plain pickle would have run it.
    pickle.loads((directory / "model.pkl").read_bytes())
    assert marker.exists()


def test_malicious_torch_weights_are_refused_and_never_run(naive, tmp_path):
    directory = _write_v1(tmp_path / "v1", naive)
    marker = tmp_path / "pwned"
    torch.save({"user": _Payload(marker)}, directory / "weights.pt")
    with pytest.raises(UnsafeModelError, match="more than tensors"):
        load_recommender(directory)
    assert not marker.exists()


def test_a_skops_file_with_untrusted_types_is_refused(gboost, tmp_path):
    import hashlib
    import os

    import skops.io
    from sklearn.preprocessing import FunctionTransformer

    saved = SavedModel.write(tmp_path / "g", gboost)
    planted = saved.path / "model.skops"
    skops.io.dump(FunctionTransformer(func=os.system), planted)
    digest = hashlib.sha256(planted.read_bytes()).hexdigest()
    files = dict(saved.manifest["state_files"], **{"model.skops": digest})
    _rewrite_manifest(saved.path, state_files=files)
    with pytest.raises(UnsafeModelError, match="does not trust"):
        SavedModel.open(saved.path).load()
