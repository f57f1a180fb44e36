"""MLflow tracking of a search: runs with parameters and per-epoch metrics, the winner as artifact."""

import importlib.util
import json

import pandas as pd
import pytest

from causalrec.platform.cli import main
from causalrec.platform.errors import ConfigError
from causalrec.simulators import generate_logs
from causalrec.tuning import TuningConfig, tune_recommenders

needs_mlflow = pytest.mark.skipif(
    importlib.util.find_spec("mlflow") is None,
    reason="MLflow is not installed (the mlflow extra: pip install -e '.[test,mlflow]')",
)

SPACE = {
    "naive": {"lr": {"loguniform": [0.005, 0.05]}, "epochs": 2, "batch_size": 2048},
    "gboost": {"max_iter": 10},
}


@pytest.fixture
def no_mlflow(monkeypatch):
    """As if MLflow were not installed."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "mlflow" else find_spec(name, *a),
    )


def test_asking_for_mlflow_without_it_names_the_field_and_the_fix(no_mlflow, tmp_path, capsys):
    with pytest.raises(
        ConfigError, match=r"tracking='mlflow': .*pip install 'causalrec\[mlflow\]'"
    ):
        TuningConfig.from_dict({"methods": SPACE, "tracking": "mlflow"})
    assert TuningConfig.from_dict({"methods": SPACE}).tracking == "none"  # the default asks nothing
    args = ["tune", "--logs", str(tmp_path / "none"), "--out", str(tmp_path / "run")]
    assert main([*args, "--tracking", "mlflow"]) == 2
    assert "pip install 'causalrec[mlflow]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@needs_mlflow
@pytest.mark.ray
def test_trials_are_mlflow_runs_and_the_selected_model_is_an_artifact(
    ray_session, small_simulator, tmp_path, monkeypatch
):
    import mlflow

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(name, raising=False)
    logs = generate_logs(small_simulator, n_rounds=20_000, seed=0)
    config = TuningConfig.from_dict(
        {
            "methods": SPACE,
            "search": {"num_samples": 3, "algorithm": "random", "seed": 2},
            "scheduler": {"kind": "fifo"},
            "max_failures": 0,
            "tracking": "mlflow",
        }
    )
    out = tmp_path / "run"
    result = tune_recommenders(logs, config, out, verbose=0)

    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlruns' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["causalrec"])
    assert len(runs) == 3 and set(runs["status"]) == {"FINISHED"}
    results = pd.read_csv(out / "results.csv").set_index("trial_id")
    assert set(runs["tags.trial_id"]) == set(results.index)
    client = mlflow.MlflowClient()
    for row in runs.to_dict("records"):
        trial = results.loc[row["tags.trial_id"]]
        assert row["params.method"] == trial.method
        for key, value in json.loads(trial.params).items():
            assert row[f"params.{trial.method}.{key}"] == str(value)
        # One point per epoch, stepped by Tune's training_iteration; the last is in results.
        history = client.get_metric_history(row["run_id"], "ope_dr")
        assert [point.step for point in history] == list(range(1, trial.epochs + 1))
        assert history[-1].value == pytest.approx(trial.ope_dr)
        assert row["metrics.ground_truth"] == pytest.approx(trial.ground_truth)
        assert not {"metrics.pid", "metrics.should_checkpoint"} & set(row)  # Tune's bookkeeping
        assert row["artifact_uri"].startswith((out / "mlruns" / "artifacts").as_uri())

    selected = runs[runs["tags.selected"] == "true"]
    assert list(selected["tags.trial_id"]) == [result.summary["selected"]["trial_id"]]
    run_id = selected["run_id"].iloc[0]
    logged = {entry.path for entry in client.list_artifacts(run_id, "best")}
    assert logged == {f"best/{path.name}" for path in (out / "best").iterdir()}
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="best/model.json", dst_path=str(tmp_path / "download")
    )
    with open(local) as downloaded:
        assert json.load(downloaded) == json.loads((out / "best" / "model.json").read_text())
