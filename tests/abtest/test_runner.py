"""In-process A/B tests on a small simulated world."""

import json

import numpy as np
import pandas as pd
import pytest

from causalrec.abtest import resolve_arm, run_abtest
from causalrec.abtest.formatting import format_result
from causalrec.methods import make_recommender
from causalrec.platform.cli import main
from causalrec.platform.errors import ConfigError, OutputExistsError
from causalrec.platform.storage import read_logs
from causalrec.serve.routing import ExperimentSplit
from causalrec.simulators import generate_logs, write_logs


@pytest.fixture(scope="module")
def world(small_simulator, tmp_path_factory):
    root = tmp_path_factory.mktemp("abtest")
    write_logs(small_simulator, root / "logs", 20_000, seed=0)
    logs = read_logs(root / "logs")
    make_recommender("naive", epochs=2, seed=0, device="cpu").fit(logs).save(root / "naive")
    return root, logs


def _arms(logs, simulator, a, b):
    return {"a": resolve_arm("a", a, logs, simulator), "b": resolve_arm("b", b, logs, simulator)}


def test_oracle_beats_uniform_online_exactly_and_offline(world, small_simulator, tmp_path):
    _, logs = world
    arms = _arms(logs, small_simulator, "uniform", "oracle")
    result = run_abtest(arms, small_simulator, 6_000, tmp_path / "out", logs=logs, seed=0)
    exact = small_simulator.policy_value(
        small_simulator.oracle_policy()
    ) - small_simulator.policy_value(small_simulator.uniform_policy())
    assert result.exact_lift == pytest.approx(exact)
    assert result.online["low"] <= exact <= result.online["high"]
    assert result.online["p_value"] < 1e-6 and result.online["low"] > 0
    assert result.offline["low"] < result.offline["lift"] < result.offline["high"]
    assert result.agreement["same_sign"]
    visits = result.arms["a"]["visits"] + result.arms["b"]["visits"]
    assert visits == 6_000


def test_outputs_assignment_and_arm_logs(world, small_simulator, tmp_path):
    root, logs = world
    split = ExperimentSplit("outputs", 0.3)
    arms = _arms(logs, small_simulator, str(root / "naive"), "oracle")
    result = run_abtest(arms, small_simulator, 3_000, tmp_path / "out", split=split, seed=1)
    assignment = pd.read_parquet(tmp_path / "out" / "assignment.parquet")
    np.testing.assert_array_equal(assignment["arm"], split.arms(assignment["user_id"].to_numpy()))
    for label in ("a", "b"):
        arm_logs = read_logs(tmp_path / "out" / label)
        assert set(arm_logs.user_id) <= set(assignment["user_id"][assignment["arm"] == label])
        assert arm_logs.n_rows == result.arms[label]["impressions"]
        assert int(arm_logs.click.sum()) == result.arms[label]["clicks"]
        assert (arm_logs.pscore == 1.0).all()  # deterministic top-k arms
    assert abs(result.arms["b"]["visits"] / 3_000 - 0.3) < 0.05
    assert result.offline is None and result.agreement is None
    saved = json.loads((tmp_path / "out" / "result.json").read_text())
    assert saved == json.loads(json.dumps(result.to_dict()))
    assert "online lift" in format_result(saved)


def test_same_seed_same_result(world, small_simulator, tmp_path):
    root, logs = world
    arms = _arms(logs, small_simulator, str(root / "naive"), "softmax:0.5")
    first = run_abtest(arms, small_simulator, 2_000, tmp_path / "one", seed=7)
    second = run_abtest(arms, small_simulator, 2_000, tmp_path / "two", seed=7)
    other = run_abtest(arms, small_simulator, 2_000, tmp_path / "three", seed=8)
    assert first.to_dict() == second.to_dict()
    assert first.online != other.online


def test_a_previous_run_is_kept_without_overwrite(world, small_simulator, tmp_path):
    _, logs = world
    arms = _arms(logs, small_simulator, "uniform", "oracle")
    run_abtest(arms, small_simulator, 500, tmp_path / "out", seed=0)
    before = (tmp_path / "out" / "result.json").read_text()
    with pytest.raises(OutputExistsError):
        run_abtest(arms, small_simulator, 500, tmp_path / "out", seed=1)
    assert (tmp_path / "out" / "result.json").read_text() == before


def test_bad_arms_are_named(world, small_simulator, tmp_path):
    _, logs = world
    with pytest.raises(ConfigError, match="--b: 'nonsense'"):
        resolve_arm("b", "nonsense", logs, small_simulator)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"--a: .* holds no saved model"):
        resolve_arm("a", str(tmp_path / "empty"), logs, small_simulator)
    other = generate_logs(
        type(small_simulator)(small_simulator.config.model_copy(update={"n_items": 30})),
        n_rounds=2_000,
        seed=0,
    )
    make_recommender("naive", epochs=1, device="cpu").fit(other).save(tmp_path / "other")
    with pytest.raises(ConfigError, match=r"--a: model .* n_items=30"):
        resolve_arm("a", str(tmp_path / "other"), logs, small_simulator)


def test_cli_runs_and_refuses_bad_users_before_writing(world, tmp_path, capsys):
    root, _ = world
    common = ["abtest", "--a", "uniform", "--b", "oracle", "--logs", str(root / "logs")]
    assert main([*common, "--users", "2", "--out", str(tmp_path / "bad")]) == 2
    assert "--users must be >= 4" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert main([*common, "--users", "800", "--out", str(tmp_path / "ok"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["arms"]["b"]["spec"] == "oracle" and printed["offline"]["estimator"] == "dr"


def test_an_a_a_test_is_flagged(world, small_simulator, tmp_path):
    root, logs = world
    arms = _arms(logs, small_simulator, str(root / "naive"), str(root / "naive"))
    result = run_abtest(arms, small_simulator, 1_000, tmp_path / "out", logs=logs, seed=0)
    assert result.identical_arms and result.exact_lift == 0.0
    assert result.offline["lift"] == 0.0
    assert "A/A test" in format_result(result.to_dict())
    different = _arms(logs, small_simulator, str(root / "naive"), "oracle")
    assert not run_abtest(different, small_simulator, 500, tmp_path / "two", seed=0).identical_arms
