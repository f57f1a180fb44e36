"""The evaluator reads only files under its data root, however they are linked (no Ray)."""

import os

import pytest

from causalrec.methods import make_recommender
from causalrec.platform.errors import ForbiddenPathError
from causalrec.platform.storage import log_files, read_logs
from causalrec.serve.evaluator import EvaluatorCore
from causalrec.simulators import write_logs

REQUEST = {
    "policy": "uniform",
    "estimators": ["ips"],
    "reward_model": None,
    "alpha": 0.05,
    "exploration": "none",
    "epsilon": 0.1,
    "temperature": 1.0,
}


@pytest.fixture(scope="module")
def roots(small_simulator, tmp_path_factory):
    base = tmp_path_factory.mktemp("evaluator")
    write_logs(small_simulator, base / "root" / "run", 1_500, seed=0)
    write_logs(small_simulator, base / "outside" / "run", 1_500, seed=1)
    logs = read_logs(base / "root" / "run")
    make_recommender("naive", epochs=1, device="cpu").fit(logs).save(base / "model")
    core = EvaluatorCore(str(base / "model"), str(base / "root"), max_rows=100_000)
    return base, core


def _evaluate(core, path, **changes):
    return core.evaluate({**REQUEST, "path": path, **changes})


def test_a_log_under_the_root_is_evaluated(roots):
    _, core = roots
    answer = _evaluate(core, "run")
    assert answer["n_rows"] > 0 and answer["estimates"][0]["estimator"].startswith("IPS")


def test_a_file_symlink_to_outside_the_root_is_refused(roots):
    base, core = roots
    linked = base / "root" / "linked" / "logs"
    linked.mkdir(parents=True)
    outside = log_files(base / "outside" / "run")[0]
    os.symlink(outside, linked / outside.name)
    with pytest.raises(ForbiddenPathError, match="links outside the server's data root"):
        _evaluate(core, "linked")


def test_a_feature_table_linked_outside_the_root_is_refused(roots):
    base, core = roots
    run = base / "root" / "tables"
    inside = base / "root" / "run"
    (run / "logs").mkdir(parents=True)
    for part in log_files(inside):
        os.link(part, run / "logs" / part.name)  # hard links stay inside the root
    os.symlink(base / "outside" / "run" / "users.parquet", run / "users.parquet")
    with pytest.raises(ForbiddenPathError, match=r"users\.parquet, which links outside"):
        _evaluate(core, "tables")


@pytest.mark.parametrize("path", ["../outside/run", "dirlink", "/etc"])
def test_parent_paths_directory_symlinks_and_absolute_paths_are_refused(roots, path):
    base, core = roots
    if not (base / "root" / "dirlink").exists():
        os.symlink(base / "outside" / "run", base / "root" / "dirlink")
    with pytest.raises(ForbiddenPathError, match="outside the server's data root"):
        _evaluate(core, path)


def test_policy_specs_that_read_files_are_refused(roots):
    base, core = roots
    for spec in (str(base / "model"), f"empirical:{base / 'root' / 'run'}"):
        with pytest.raises(ForbiddenPathError, match="reads files"):
            _evaluate(core, "run", policy=spec)


def test_files_that_are_not_logs_and_unopenable_names_are_data_errors(roots):
    from causalrec.platform.errors import DataError

    base, core = roots
    (base / "root" / "summary.json").write_text("{}")
    with pytest.raises(DataError, match=r"path: 'summary\.json' is not a causalrec Parquet log"):
        _evaluate(core, "summary.json")
    with pytest.raises(DataError, match="cannot be opened"):
        _evaluate(core, "a" * 300)  # one name longer than the file system allows
