"""Searches on the test session's local Ray cluster (real trials, real checkpoints)."""

import json
import os
import signal
import subprocess
import sys
import time

import cloudpickle
import numpy as np
import pandas as pd
import pytest
import yaml

from causalrec.methods import RECOMMENDERS, load_recommender
from causalrec.ope.evaluate import AUTO_CANDIDATES
from causalrec.ope.registry import parse_estimators
from causalrec.platform.errors import ConfigError
from causalrec.simulators import generate_logs, write_logs
from causalrec.tuning import TuningConfig, tune_recommenders

from . import flaky

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def logs(small_simulator):
    return generate_logs(small_simulator, n_rounds=20_000, seed=0)


SPACE = {
    "naive": {"lr": {"loguniform": [0.005, 0.05]}, "epochs": {"int": [1, 3]}, "batch_size": 2048},
    "ips": {"propensity_floor": {"uniform": [0.01, 0.2]}, "epochs": 2, "batch_size": 2048},
    "gboost": {"max_iter": {"int": [10, 30]}},
}


def test_search_writes_results_best_model_and_selection_regret(
    ray_session, logs, small_simulator, tmp_path
):
    config = TuningConfig.from_dict(
        {
            "methods": SPACE,
            "search": {"num_samples": 5, "seed": 1},
            "scheduler": {"grace_period": 1},
        }
    )
    result = tune_recommenders(logs, config, tmp_path / "run", verbose=0)
    results = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert len(results) == 5 and set(results.method) <= set(SPACE)
    assert list(pd.read_csv(tmp_path / "run" / "results.csv").trial_id) == list(results.trial_id)
    assert set(results.status) <= {"completed", "stopped_early"}
    oracle = small_simulator.oracle_value()
    candidates = {repr(e) for e in parse_estimators(list(AUTO_CANDIDATES))}
    for row in results.itertuples():
        assert row.ope_dr_low <= row.ope_dr <= row.ope_dr_high
        assert row.ope_auto_low <= row.ope_auto <= row.ope_auto_high
        assert row.ope_auto_estimator in candidates
        assert 0 < row.ground_truth <= oracle + 1e-12
        assert row.regret == pytest.approx(oracle - row.ground_truth)
        assert 1 <= row.epochs <= row.planned_epochs and row.train_seconds > 0

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary == json.loads(json.dumps(result.summary))
    selected = results.loc[results.ope_dr.idxmax()]
    best = results.loc[results.ground_truth.idxmax()]
    assert summary["selected"]["trial_id"] == selected.trial_id
    assert summary["truly_best"]["trial_id"] == best.trial_id
    assert summary["selection_regret"] == pytest.approx(best.ground_truth - selected.ground_truth)
    assert summary["selection_regret"] >= 0
    # Every rule's choice and regret, whichever rule selected: risk-averse (lower bounds) and
    # cross-validated estimator choice included.
    assert set(summary["selection_rules"]) == {"ope_dr", "ope_dr_low", "ope_auto", "ope_auto_low"}
    for rule, choice in summary["selection_rules"].items():
        picked = results.loc[results[rule].idxmax()]
        assert choice["trial_id"] == picked.trial_id
        assert choice["selection_regret"] == pytest.approx(best.ground_truth - picked.ground_truth)
    assert summary["selection_rules"]["ope_dr"]["trial_id"] == selected.trial_id

    # best/ is the selected trial's model at its last epoch, loadable in the save format.
    model = load_recommender(tmp_path / "run" / "best")
    assert model.name == selected.method
    assert small_simulator.policy_value(model.policy(1)) == pytest.approx(selected.ground_truth)
    manifest = json.loads((tmp_path / "run" / "best" / "model.json").read_text())
    assert manifest["logs_fingerprint"] == logs.fingerprint()
    assert manifest["params"] == json.loads(selected.params)
    assert manifest["metrics"]["ope_dr"] == pytest.approx(selected.ope_dr)


def test_ground_truth_selection_random_search_and_gpu_notice(ray_session, logs, tmp_path, capsys):
    config = TuningConfig.from_dict(
        {
            "methods": {k: SPACE[k] for k in ("naive", "ips")},
            "search": {"num_samples": 3, "algorithm": "random"},
            "objective": {"metric": "ground_truth"},
            "scheduler": {"kind": "fifo"},
            "resources": {"gpus_per_trial": 0.5},
        }
    )
    result = tune_recommenders(logs, config, tmp_path / "run", verbose=0)
    assert result.summary["selection_regret"] == 0
    assert result.summary["selected"] == result.summary["truly_best"]
    assert (result.results.status == "completed").all()
    if not ray_session.cluster_resources().get("GPU"):
        assert "has no GPU; trials run on CPU" in capsys.readouterr().err


def test_output_dir_and_real_logs_are_checked_before_any_trial(logs, tmp_path):
    import dataclasses

    config = TuningConfig.from_dict({"methods": SPACE, "objective": {"metric": "ground_truth"}})
    real = dataclasses.replace(logs, metadata={})
    with pytest.raises(ConfigError, match="needs simulated logs"):
        tune_recommenders(real, config, tmp_path / "run", verbose=0)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("previous run")
    with pytest.raises(Exception, match="not empty"):
        tune_recommenders(logs, config, tmp_path / "taken", verbose=0)
    assert (tmp_path / "taken" / "keep.txt").read_text() == "previous run"
    with pytest.raises(ConfigError, match="nothing to resume"):
        tune_recommenders(logs, config, tmp_path / "fresh", resume=True, verbose=0)


def test_failed_trial_is_retried_from_its_checkpoint(ray_session, logs, tmp_path):
    cloudpickle.register_pickle_by_value(flaky)  # workers cannot import the tests package
    journal = tmp_path / "journal.txt"
    config = TuningConfig.from_dict(
        {
            "methods": {"flaky": {"epochs": 3, "batch_size": 2048, "journal": str(journal)}},
            "search": {"num_samples": 1},
            "scheduler": {"kind": "fifo"},
            "max_failures": 1,
        }
    )
    registry = {**RECOMMENDERS, "flaky": flaky.FlakyMF}
    result = tune_recommenders(logs, config, tmp_path / "run", registry=registry, verbose=0)
    row = result.results.iloc[0]
    assert row.status == "completed" and row.epochs == 3 and row.restarts == 1
    # Epoch 1 ran once: the retry continued from the checkpoint written after it.
    assert journal.read_text().split() == ["1", "2", "3"]
    assert (tmp_path / "journal.crashed").exists()


def test_cli_reports_a_space_error_before_starting(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"methods": {"naive": {"lr": {"uniform": [0.1, 0.01]}}}}))
    process = subprocess.run(
        [sys.executable, "-m", "causalrec.platform.cli", "tune", "--logs", str(tmp_path / "none"),
         "--config", str(bad), "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert process.returncode == 2
    assert "methods.naive.lr: uniform has an empty range [0.1, 0.01]" in process.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_interrupted_search_resumes_without_rerunning_finished_trials(small_simulator, tmp_path):
    from ray.tune import ExperimentAnalysis

    # Trials of a few seconds each (many small batches), so the interrupt lands inside one.
    write_logs(small_simulator, tmp_path / "logs", 100_000, seed=0)
    config = tmp_path / "tune.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "methods": {
                    "naive": {"lr": {"loguniform": [0.005, 0.05]}, "epochs": 8, "batch_size": 256}
                },
                "search": {"num_samples": 3, "max_concurrent_trials": 1},
                "scheduler": {"kind": "fifo"},
            }
        )
    )
    out = tmp_path / "run"
    command = [sys.executable, "-m", "causalrec.platform.cli", "tune", "--logs", str(tmp_path / "logs"),
               "--config", str(config), "--out", str(out)]  # fmt: skip
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    driver = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and driver.poll() is None:
        trials = (
            list((out / "experiment").glob("run_trial_*")) if (out / "experiment").is_dir() else []
        )
        if len(trials) >= 2:  # one trial at a time: the first has finished, the second runs
            break
        time.sleep(0.5)
    assert driver.poll() is None, driver.stderr.read()
    driver.send_signal(signal.SIGINT)
    _, stderr = driver.communicate(timeout=120)
    assert driver.returncode == 130, stderr
    assert "--resume" in stderr

    analysis = ExperimentAnalysis(str(out / "experiment"))
    finished = {
        t.trial_id: t.last_result["timestamp"] for t in analysis.trials if t.status == "TERMINATED"
    }
    assert 1 <= len(finished) < 3, finished

    resumed = subprocess.run(
        [*command, "--resume", "--json"], env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr
    results = pd.read_parquet(out / "results.parquet").set_index("trial_id")
    assert len(results) == 3 and (results.status == "completed").all()
    for trial_id, timestamp in finished.items():
        assert results.loc[trial_id, "finished_at"] == timestamp  # not re-run
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["n_trials"] == 3
    assert np.isfinite(results.ground_truth).all() and np.isfinite(results.ope_dr).all()


@pytest.mark.gpu
def test_fractional_gpu_trials_train_on_cuda(ray_session, logs, tmp_path):
    import torch

    if not torch.cuda.is_available() or not ray_session.cluster_resources().get("GPU"):
        pytest.skip("no CUDA device in this Ray cluster")
    config = TuningConfig.from_dict(
        {
            "methods": {"naive": SPACE["naive"], "ips": SPACE["ips"]},
            "search": {"num_samples": 4, "max_concurrent_trials": 4},
            "scheduler": {"kind": "fifo"},
            "resources": {"cpus_per_trial": 0.5, "gpus_per_trial": 0.25},
        }
    )
    result = tune_recommenders(logs, config, tmp_path / "run", verbose=0)
    assert len(result.results) == 4
    assert (result.results.device == "cuda").all()
