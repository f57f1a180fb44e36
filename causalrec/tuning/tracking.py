"""Experiment tracking of a search: every trial an MLflow run (``pip install 'causalrec[mlflow]'``).

With ``tracking: mlflow`` (:class:`~causalrec.tuning.config.TuningConfig`), Ray Tune's
``MLflowLoggerCallback`` records each trial as a run of the MLflow experiment ``causalrec``
(``MLFLOW_EXPERIMENT_NAME`` or ``MLFLOW_EXPERIMENT_ID`` choose another): its parameters (the
trial's flat config, ``method`` and ``METHOD.PARAM``) and, at every epoch, what the trial reports
(``ope_dr`` and its interval, ``ground_truth``, ``regret``, ``epoch``, training and evaluation
seconds), stepped by Tune's ``training_iteration``. After the search, the selected model
(``OUT/best``) becomes the artifact ``best`` of the selected trial's run, which is tagged
``selected=true``. Runs carry the tags ``trial_id`` (Tune's trial id, as in ``results.csv``) and
``search_dir`` (``OUT``).

Where: ``MLFLOW_TRACKING_URI`` when set (a tracking server, a database); otherwise a local
store in ``OUT/mlruns`` with no server: runs in the SQLite database ``OUT/mlruns/mlflow.db``,
artifacts under ``OUT/mlruns/artifacts`` (MLflow's plain-file store is in maintenance mode
since MLflow 3 and refused by default). Read it back with
``mlflow.search_runs(experiment_names=["causalrec"])`` after
``mlflow.set_tracking_uri("sqlite:///OUT/mlruns/mlflow.db")``, or ``mlflow ui
--backend-store-uri sqlite:///OUT/mlruns/mlflow.db``.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from causalrec.tuning.config import TuningConfig

__all__ = [
    "EXPERIMENT_NAME",
    "MLRUNS_DIR",
    "MODEL_ARTIFACT",
    "log_selected_model",
    "tracking_store",
    "tune_callbacks",
]

#: Sub-directory of ``OUT`` holding the local MLflow store (without ``MLFLOW_TRACKING_URI``).
MLRUNS_DIR = "mlruns"
#: The MLflow experiment of searches (unless ``MLFLOW_EXPERIMENT_NAME`` names another).
EXPERIMENT_NAME = "causalrec"
#: Artifact path of the selected model in its trial's run.
MODEL_ARTIFACT = "best"


@functools.cache
def _trial_runs_callback() -> type:
    """The callback class (defined on first use: importing Ray Tune takes seconds)."""
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.result import (
        AUTO_RESULT_KEYS,
        DEBUG_METRICS,
        DONE,
        SHOULD_CHECKPOINT,
        TIME_TOTAL_S,
        TRAINING_ITERATION,
    )

    # What Tune adds to every result is not the trial's measurement, so not logged as a metric
    # (but ``training_iteration``, the step, and ``time_total_s`` are).
    bookkeeping = (set(AUTO_RESULT_KEYS) | set(DEBUG_METRICS) | {DONE, SHOULD_CHECKPOINT}) - {
        TRAINING_ITERATION,
        TIME_TOTAL_S,
    }

    class TrialRunsCallback(MLflowLoggerCallback):
        """Ray Tune's MLflow callback, each run tagged with its trial id and search directory.

        Tune calls it on the driver: a trial's run gets its parameters when the trial starts
        and the trial's metrics after every report.

        Args:
            tracking_uri: Where runs go (see :func:`tracking_store`).
            experiment_name: The MLflow experiment.
            search_dir: The search's output directory (the ``search_dir`` tag).
        """

        def __init__(self, tracking_uri: str, *, experiment_name: str, search_dir: Path):
            super().__init__(
                tracking_uri,
                experiment_name=experiment_name,
                tags={"search_dir": str(search_dir)},
            )

        def setup(self, *args, **kwargs) -> None:
            """Connect to the store and the experiment (before the first trial)."""
            _import_sql_store(self.tracking_uri)
            super().setup(*args, **kwargs)

        def log_trial_start(self, trial) -> None:
            """Open the trial's run, tagged ``trial_id``, and log its parameters."""
            shared = self.tags
            self.tags = {**shared, "trial_id": trial.trial_id}
            try:
                super().log_trial_start(trial)
            finally:
                self.tags = shared

        def log_trial_result(self, iteration: int, trial, result: dict[str, Any]) -> None:
            """Log what the trial reported (without Tune's bookkeeping)."""
            measured = {k: v for k, v in result.items() if k not in bookkeeping}
            super().log_trial_result(iteration, trial, measured)

    return TrialRunsCallback


def tracking_store(out: str | Path) -> tuple[str, str | None]:
    """``(tracking URI, artifact location)`` of a search writing to ``out``.

    ``MLFLOW_TRACKING_URI`` when set (artifact location: the server's choice, ``None``);
    otherwise the local store ``OUT/mlruns`` (module docstring).
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri, None
    store = Path(out).absolute() / MLRUNS_DIR
    return f"sqlite:///{store / 'mlflow.db'}", (store / "artifacts").as_uri()


def tune_callbacks(config: TuningConfig, out: str | Path) -> list:
    """The Tune callbacks of ``config.tracking`` for a search writing to ``out``.

    Creates the local store and the experiment, when missing, before the search starts.
    """
    if config.tracking != "mlflow":
        return []
    uri, artifacts = tracking_store(out)
    if artifacts is not None:
        (Path(out).absolute() / MLRUNS_DIR).mkdir(parents=True, exist_ok=True)
    name = _experiment_name()
    client = _client(uri)
    if not os.environ.get("MLFLOW_EXPERIMENT_ID") and client.get_experiment_by_name(name) is None:
        client.create_experiment(name, artifact_location=artifacts)
    callback = _trial_runs_callback()
    return [callback(uri, experiment_name=name, search_dir=Path(out).absolute())]


def log_selected_model(config: TuningConfig, out: str | Path, summary: dict, best) -> str | None:
    """Log the selected model as the artifact ``best`` of its trial's run; returns the run id.

    Args:
        config: The search (nothing happens unless ``tracking`` is ``mlflow``).
        out: The search's output directory.
        summary: The search's summary (``summary["selected"]["trial_id"]``).
        best: The selected trial's saved model (with its directory in ``best.path``), or
            ``None`` when no trial produced one.
    """
    selected = summary.get("selected")
    if config.tracking != "mlflow" or best is None or selected is None:
        return None
    uri, _ = tracking_store(out)
    client = _client(uri)
    experiment = _experiment_id(client)
    search_dir = str(Path(out).absolute())
    runs = client.search_runs(
        [experiment],
        filter_string=f"tags.trial_id = '{selected['trial_id']}'",
        order_by=["attributes.start_time DESC"],
    )
    runs = [run for run in runs if run.data.tags.get("search_dir") == search_dir]
    if not runs:
        return None
    run_id = runs[0].info.run_id
    client.log_artifacts(run_id, str(best.path), artifact_path=MODEL_ARTIFACT)
    client.set_tag(run_id, "selected", "true")
    return run_id


def _experiment_name() -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT_NAME


def _experiment_id(client) -> str:
    """The callback's experiment, found as Ray finds it: an id in the environment, else the name."""
    return (
        os.environ.get("MLFLOW_EXPERIMENT_ID")
        or client.get_experiment_by_name(_experiment_name()).experiment_id
    )


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    _import_sql_store(uri)
    return MlflowClient(tracking_uri=uri)


def _import_sql_store(uri: str) -> None:
    """Import MLflow's SQL store without the SQLAlchemy 2.1 deprecation it triggers.

    MLflow (3.17) maps its tables with SQLAlchemy's ``noload`` strategy, which
    SQLAlchemy 2.1 deprecates when the store module is imported; nothing here uses those
    relationships. Only that one warning, only for database URIs, only at that import.
    """
    if uri.split(":", 1)[0].split("+", 1)[0] in ("sqlite", "postgresql", "mysql", "mssql"):
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore",
                message=r"The ``noload`` loader strategy is deprecated",
                category=DeprecationWarning,
            )
            import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
