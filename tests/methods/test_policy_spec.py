"""One resolver from a saved model directory or a policy spec to a policy."""

import json

import numpy as np
import pytest

from causalrec.methods import make_recommender
from causalrec.methods.policy_spec import resolve_policy
from causalrec.platform.errors import ConfigError, ForbiddenPathError, UnknownNameError
from causalrec.platform.policy import Exploration
from causalrec.platform.storage import read_logs
from causalrec.simulators import ConfoundedRecSimulator, load_simulator_config, write_logs


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("resolve")
    simulator = ConfoundedRecSimulator(
        load_simulator_config(preset="confounded", n_users=100, n_items=25, latent_dim=4)
    )
    write_logs(simulator, root / "logs", 3_000, seed=0)
    logs = read_logs(root / "logs")
    model = make_recommender("naive", epochs=1, dim=4, device="cpu").fit(logs)
    model.save(root / "model")
    return root, simulator, logs, model


def test_a_model_directory_resolves_to_the_models_policy(world):
    root, simulator, logs, model = world
    resolved = resolve_policy(str(root / "model"), logs=logs)
    users = np.arange(20)
    np.testing.assert_array_equal(
        resolved.policy.action_distribution(users), model.policy(1).action_distribution(users)
    )
    assert resolved.model is not None and resolved.version == resolved.model.version
    explored = resolve_policy(
        str(root / "model"), world=simulator, exploration=Exploration("epsilon", epsilon=0.5)
    ).policy
    np.testing.assert_allclose(
        explored.action_distribution(users),
        model.policy(1, "epsilon", epsilon=0.5).action_distribution(users),
    )


def test_named_specs_reuse_the_world_they_are_given(world):
    _, simulator, logs, _ = world
    assert resolve_policy("logging", logs=logs, world=simulator).version == "logging"
    oracle = resolve_policy("oracle", world=simulator).policy
    assert oracle.name == "oracle" and oracle.scorer is simulator.relevance_scorer
    with pytest.raises(UnknownNameError, match="did you mean 'oracle'"):
        resolve_policy("oracel", logs=logs)


def test_bad_paths_and_catalogues_are_named(world, tmp_path):
    root, simulator, logs, _ = world
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"--a: .* is a path but holds no saved model"):
        resolve_policy(str(tmp_path / "empty"), logs=logs, field="--a")
    bigger = ConfoundedRecSimulator(simulator.config.model_copy(update={"n_items": 30}))
    with pytest.raises(ConfigError, match=r"policy: model .* n_items=25; the simulator has"):
        resolve_policy(str(root / "model"), world=bigger)


def test_a_server_refuses_specs_that_read_files(world):
    root, _, logs, _ = world
    for spec in (str(root / "model"), f"empirical:{root / 'logs'}"):
        with pytest.raises(ForbiddenPathError, match="reads files"):
            resolve_policy(spec, logs=logs, allow_files=False)
    assert resolve_policy("uniform", logs=logs, allow_files=False).policy.name == "uniform"


def test_evaluate_and_simulate_accept_a_model_directory(world, tmp_path, capsys):
    from causalrec.platform.cli import main

    root, _, _, _ = world
    logs, model = str(root / "logs"), str(root / "model")
    args = ["--estimators", "ips", "--reward-model", "none", "--json"]
    assert main(["evaluate", "--logs", logs, "--policy", model, *args]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["policy"] == model
    (row,) = payload["results"]
    assert row["estimator"].startswith("IPS") and 0 <= row["estimate"] <= 1
    out = tmp_path / "sim"
    argv = ["simulate", "--preset", "confounded", "--n-users", "100", "--n-items", "25"]
    argv += ["--latent-dim", "4", "--rounds", "50", "--out", str(out), "--policy", model, "--json"]
    assert main(argv) == 0
    assert set(read_logs(out).policy) <= {"naive:none", "uniform"}


def test_a_saved_model_rolls_out_in_a_dynamic_world(world):
    # The model directory resolves to a plain policy, which a dynamic world rolls out (it sees
    # the user, not the history): the same model earns less per session when users tire.
    root, simulator, _, model = world
    tiring = ConfoundedRecSimulator(simulator.config.replace(satiation=2.0))
    policy = resolve_policy(str(root / "model"), world=tiring).policy
    static = simulator.long_term_value(policy, horizon=5, n_sessions=20_000, seed=1)
    tired = tiring.long_term_value(policy, horizon=5, n_sessions=20_000, seed=1)
    assert 0 < tired < static - 4 * np.hypot(tired.standard_error, static.standard_error)
    one_step = simulator.policy_value(model.policy(1))
    assert abs(static - 5 * one_step) < 4 * static.standard_error
