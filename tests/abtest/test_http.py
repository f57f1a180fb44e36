"""An A/B test through a live Serve application whose ingress splits users between two models."""

import httpx
import numpy as np
import pytest

from causalrec.abtest import resolve_arm, run_abtest
from causalrec.methods import make_recommender
from causalrec.platform.errors import ConfigError, DataError
from causalrec.platform.runtime import free_port
from causalrec.platform.storage import read_logs, write_feature_tables
from causalrec.serve.app import build_app
from causalrec.serve.config import ServeAppArgs
from causalrec.serve.routing import ExperimentSplit
from causalrec.simulators import generate_logs, write_logs

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def experiment(ray_session, small_simulator, tmp_path_factory):
    from ray import serve

    root = tmp_path_factory.mktemp("experiment")
    write_logs(small_simulator, root / "logs", 8_000, seed=0)
    logs = read_logs(root / "logs")
    for name, epochs in (("control", 1), ("treatment", 4)):
        make_recommender("naive", epochs=epochs, seed=0, device="cpu").fit(logs).save(root / name)
    write_feature_tables(root / "control", logs.user_table, logs.item_table)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = ServeAppArgs(
        model_dir=str(root / "control"), feedback_dir=str(root / "feedback"),
        feedback_flush_rows=1, experiment={"model_dir": str(root / "treatment"), "salt": "t1"},
    )  # fmt: skip
    serve.run(build_app(args), name="experiment", route_prefix="/")
    yield root, logs, f"http://127.0.0.1:{port}"
    serve.shutdown()


def test_ingress_routes_each_user_to_its_arm(experiment):
    _, logs, url = experiment
    described = httpx.get(f"{url}/experiment").json()
    assert described["salt"] == "t1" and described["share_b"] == 0.5
    models = {arm: make_recommender("naive", epochs=e, seed=0, device="cpu").fit(logs)
              for arm, e in (("a", 1), ("b", 4))}  # fmt: skip
    users = list(range(40))
    answer = httpx.post(f"{url}/recommend", json={"user_id": users, "k": 3}).json()
    expected_arms = ExperimentSplit("t1").arms(np.array(users))
    for user, arm, row in zip(users, expected_arms, answer["recommendations"], strict=True):
        assert row["user_id"] == user and row["arm"] == arm
        top = np.argsort(-models[arm].score(np.array([user]))[0], kind="stable")[:3]
        assert row["items"] == top.tolist()
        assert row["model_version"] == described["arms"][arm]["model_version"]
    assert set(answer["model_version"].split(",")) == {
        described["arms"]["a"]["model_version"],
        described["arms"]["b"]["model_version"],
    }


def test_http_run_equals_the_in_process_run_and_is_logged(experiment, small_simulator, tmp_path):
    root, logs, url = experiment
    arms = {
        "a": resolve_arm("a", str(root / "control"), logs, small_simulator),
        "b": resolve_arm("b", str(root / "treatment"), logs, small_simulator),
    }
    online = run_abtest(arms, small_simulator, 600, tmp_path / "http", url=url, seed=3)
    local = run_abtest(
        arms, small_simulator, 600, tmp_path / "local", split=ExperimentSplit("t1"), seed=3
    )
    assert online.mode == "http" and local.mode == "in-process"
    assert online.arms == local.arms and online.online == local.online
    assert online.feedback_rows == 600 * small_simulator.slate_size
    served = read_logs(root / "feedback")
    assert served.n_rows >= online.feedback_rows
    assert {name.split("/")[0] for name in served.policy} == {"a", "b"}


def test_client_refuses_a_server_serving_other_models(experiment, small_simulator, tmp_path):
    root, logs, url = experiment
    arms = {
        "a": resolve_arm("a", str(root / "control"), logs, small_simulator),
        "b": resolve_arm("b", "oracle", logs, small_simulator),
    }
    with pytest.raises(ConfigError, match="--b: 'oracle'"):
        run_abtest(arms, small_simulator, 100, tmp_path / "out", url=url)
    assert not (tmp_path / "out").exists()


def test_treatment_with_another_catalogue_is_refused(experiment, small_simulator, tmp_path):
    root, _, _ = experiment
    world = type(small_simulator)(small_simulator.config.model_copy(update={"n_items": 30}))
    other = generate_logs(world, n_rounds=1_000, seed=0)
    make_recommender("naive", epochs=1, device="cpu").fit(other).save(tmp_path / "other")
    args = ServeAppArgs(
        model_dir=str(root / "control"), experiment={"model_dir": str(tmp_path / "other")}
    )
    with pytest.raises(DataError, match=r"experiment.model_dir: .* n_items=30"):
        build_app(args)
