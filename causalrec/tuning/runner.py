"""Run a search with Ray Tune and write its results, its winner and the selection regret.

:func:`tune_recommenders` validates the search space before anything starts, splits the log into
training and validation rounds, fits the validation split's reward models once, puts everything
trials share into Ray's object store, and runs ``tune.Tuner`` with Optuna (TPE or random) and
ASHA. The same code runs on the embedded local Ray and, with ``address`` or ``RAY_ADDRESS``, on a
cluster.

Outputs under ``OUT``:

* ``results.parquet`` and ``results.csv`` — one row per trial: method, parameters (JSON),
  metrics of its last epoch, epochs run, training time, restarts, status (``completed``,
  ``stopped_early`` by ASHA, ``error``), time of its last report;
* ``best/`` — the trial the selection metric chose, in the Recommender save format, plus
  ``model.json`` (method, parameters, metrics, the training log's fingerprint, causalrec
  version) and the log's ``users.parquet``/``items.parquet`` feature tables — what Serve loads;
* ``candidates/METHOD/`` — with ``export_candidates``, each method's best trial, as ``best/``;
* ``summary.json`` — the selection, the truly best trial, the selection regret and the timing
  (``prepare_seconds``: splitting the log and fitting the validation reward models once;
  ``search_seconds``: the Tune run);
* ``experiment/`` — Ray Tune's experiment state (what ``resume=True`` continues from).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

import causalrec
from causalrec.methods.base import Recommender
from causalrec.methods.registry import RECOMMENDERS
from causalrec.ope.evaluate import OfflineEvaluator
from causalrec.platform import storage
from causalrec.platform.errors import ConfigError, DataError, SearchInterruptedError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.tuning.config import TuningConfig
from causalrec.tuning.space import (
    define_by_run,
    max_epochs,
    param_default,
    trial_params,
    validate_space,
)
from causalrec.tuning.trial import MODEL_SUBDIR, TrialContext, run_trial

__all__ = [
    "CANDIDATES_DIR",
    "EXPERIMENT_DIR",
    "SearchInterruptedError",
    "TuningResult",
    "split_rounds",
    "tune_recommenders",
]

#: Sub-directory of ``OUT`` holding Ray Tune's experiment state.
EXPERIMENT_DIR = "experiment"
#: Sub-directory of ``OUT`` holding each method's best trial (``export_candidates``).
CANDIDATES_DIR = "candidates"
#: Metrics every trial reports (NaN where the log cannot provide them).
METRICS = ("ope_dr", "ope_dr_low", "ope_dr_high", "ground_truth", "regret")


@dataclass(frozen=True)
class TuningResult:
    """The outcome of a search.

    Attributes:
        results: One row per trial (the content of ``results.parquet``).
        summary: Selection, truly best trial, selection regret (``summary.json``).
        best_dir: ``OUT/best`` (``None`` when no trial produced a model).
    """

    results: pd.DataFrame
    summary: dict[str, Any]
    best_dir: Path | None


def split_rounds(logs: LoggedFeedback, validation_fraction: float):
    """The first rounds for training, the last ``validation_fraction`` of them for validation."""
    rounds = np.unique(logs.round_id)
    if len(rounds) < 10:
        raise DataError(f"the log has {len(rounds)} rounds; a search needs at least 10")
    cut = rounds[min(len(rounds) - 1, int(len(rounds) * (1 - validation_fraction)))]
    return logs.select(logs.round_id < cut), logs.select(logs.round_id >= cut)


def _gpus_per_trial(requested: float, cluster: dict[str, float]) -> float:
    if requested > 0 and cluster.get("GPU", 0) <= 0:
        print(
            f"notice: gpus_per_trial={requested} but the Ray cluster has no GPU; trials run on CPU",
            file=sys.stderr,
        )
        return 0.0
    return requested


def _tuner(trainable, config: TuningConfig, spaces, registry, horizon: int, out: Path, verbose):
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    metric = config.objective.metric
    seed = config.search.seed
    sampler = (
        optuna.samplers.TPESampler(seed=seed)
        if config.search.algorithm == "optuna"
        else optuna.samplers.RandomSampler(seed=seed)
    )
    search = OptunaSearch(
        space=define_by_run(spaces, registry, seed), metric=metric, mode="max", sampler=sampler
    )
    if config.scheduler.kind == "asha" and horizon > 1:
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            metric=metric,
            mode="max",
            max_t=horizon,
            grace_period=min(config.scheduler.grace_period, horizon),
            reduction_factor=config.scheduler.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=search,
            scheduler=scheduler,
            num_samples=config.search.num_samples,
            max_concurrent_trials=config.search.max_concurrent_trials,
            time_budget_s=config.search.time_budget_s,
            # Every trial asks for the same resources: reusing the worker processes spares each
            # trial a Python start-up and the torch import (seconds on a small machine).
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT_DIR,
            storage_path=str(out),
            failure_config=tune.FailureConfig(max_failures=config.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=verbose,
        ),
    )


def tune_recommenders(
    logs: LoggedFeedback,
    config: TuningConfig,
    out: str | Path,
    *,
    address: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    registry: dict[str, type[Recommender]] | None = None,
    verbose: int = 1,
) -> TuningResult:
    """Search over methods and hyperparameters (see the module docstring).

    Args:
        logs: The logged feedback to learn from.
        config: The search.
        out: Output directory (must be empty unless ``overwrite`` or ``resume``).
        address: Ray cluster to join (default: ``RAY_ADDRESS``, else a local Ray).
        resume: Continue the search whose state is in ``OUT/experiment``: finished trials are
            kept, unfinished and errored ones continue from their checkpoints.
        overwrite: Replace a non-empty ``out``.
        registry: Recommender classes by name (default: :data:`RECOMMENDERS`); custom
            recommenders can be searched by adding them here.
        verbose: Ray Tune's console verbosity (0 silent, 1 status, 2 every result).

    Raises:
        ConfigError: A search-space error (before any trial starts), ``ground_truth`` selection
            on real logs, or nothing to resume.
    """
    from ray import tune

    from causalrec.platform.runtime import init_ray

    registry = dict(registry or RECOMMENDERS)
    spaces = validate_space(config, registry)
    horizon = max_epochs(spaces, registry)
    simulator = None
    if logs.metadata.get("simulator"):
        from causalrec.ope.policy_spec import simulator_from_logs

        simulator = simulator_from_logs(logs)
    elif config.objective.metric == "ground_truth":
        raise ConfigError(
            "objective.metric='ground_truth' needs simulated logs (their metadata records the "
            "simulator); these logs are real: use 'ope_dr'"
        )
    out = Path(out).absolute()
    experiment = out / EXPERIMENT_DIR
    if resume:
        if not experiment.is_dir():
            raise ConfigError(f"nothing to resume: {str(experiment)!r} does not exist")
    else:
        storage.check_output_dir(out, overwrite=overwrite)
        if out.exists():
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)

    cluster = init_ray(address)
    prepare_started = time.monotonic()
    gpus = _gpus_per_trial(config.resources.gpus_per_trial, cluster)
    train, validation = split_rounds(logs, config.objective.validation_fraction)
    k = logs.slate_size
    evaluator = OfflineEvaluator(validation, ["dr"], reward_model=config.objective.reward_model)
    evaluator.prepare()
    oracle = simulator.oracle_value() if simulator is not None else None
    context = TrialContext(
        train=train,
        evaluator=evaluator,
        oracle_value=oracle,
        k=k,
        registry=registry,
        cpus_per_trial=config.resources.cpus_per_trial,
    )
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, context=context),
        {"cpu": config.resources.cpus_per_trial, "gpu": gpus},
    )
    if resume:
        tuner = tune.Tuner.restore(
            str(experiment), trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        tuner = _tuner(trainable, config, spaces, registry, horizon, out, verbose)
    started = time.monotonic()
    prepare_seconds = started - prepare_started
    with _sigint_watch() as interrupted:
        grid = tuner.fit()
    search_seconds = time.monotonic() - started
    _raise_if_interrupted(grid, config, search_seconds, experiment, interrupted())

    results, checkpoints = _results_frame(grid, registry)
    summary = _summary(results, config, logs, simulator, oracle, k)
    summary["timing"] = {
        "prepare_seconds": round(prepare_seconds, 3),
        "search_seconds": round(search_seconds, 3),
    }
    best_dir = None
    if summary["selected"] is not None:
        best_dir = _export_best(out, results, checkpoints, summary, logs, train)
    if config.export_candidates and not results.empty:
        _export_candidates(out, results, checkpoints, summary, logs, train)
    storage.write_table_atomic(out / "results.parquet", pa.Table.from_pandas(results))
    storage.write_csv_atomic(out / "results.csv", results)
    storage.write_json_atomic(out / "summary.json", summary)
    return TuningResult(results=results, summary=summary, best_dir=best_dir)


def _interrupt(_signum, _frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigint_watch():
    """Yields a callable that tells whether Ray Tune caught a SIGINT during the block.

    Tune (2.x) replaces the SIGINT handler for the run; on a SIGINT it stops the run, returns
    normally, and puts back the handler it found. So a marker handler installed before the run
    that is back in place after it means the run was interrupted. Outside the main thread (no
    signal handlers) the watch answers False and the trial statuses decide.
    """
    if threading.current_thread() is not threading.main_thread() or os.environ.get(
        "TUNE_DISABLE_SIGINT_HANDLER", "0"
    ) not in ("", "0"):
        yield lambda: False
        return
    previous = signal.signal(signal.SIGINT, _interrupt)
    state = {"interrupted": False}
    try:
        yield lambda: state["interrupted"]
    finally:
        state["interrupted"] = signal.getsignal(signal.SIGINT) is _interrupt
        signal.signal(signal.SIGINT, previous)


def _raise_if_interrupted(
    grid, config: TuningConfig, elapsed: float, experiment: Path, interrupted: bool
) -> None:
    """Tune returns early, without raising, when the driver is interrupted (SIGINT)."""
    unfinished = len(grid) - grid.num_terminated - grid.num_errors
    budget = config.search.time_budget_s
    missing = len(grid) < config.search.num_samples and (budget is None or elapsed < budget)
    if interrupted or unfinished > 0 or missing:
        raise SearchInterruptedError(
            f"the search stopped with {unfinished} unfinished trial(s) and "
            f"{max(0, config.search.num_samples - len(grid))} not started; its state is in "
            f"{str(experiment)!r}: run the same command again with --resume (resume=True)"
        )


def _planned_epochs(cls: type[Recommender], params: dict) -> int:
    if "epochs" not in cls.param_names():
        return 1
    return int(params.get("epochs", param_default(cls, "epochs") or 1))


def _results_frame(grid, registry) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per trial, and the latest checkpoint of each trial by trial id."""
    rows, checkpoints = [], {}
    for result in grid:
        method, params = trial_params(result.config)
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or Path(result.path).name
        epochs = int(metrics.get("epoch", 0))
        planned = _planned_epochs(registry[method], params)
        if result.error is not None:
            status = "error"
        elif epochs < planned:
            status = "stopped_early"
        else:
            status = "completed"
        rows.append(
            {
                "trial_id": trial_id,
                "method": method,
                "params": json.dumps(params, sort_keys=True),
                **{name: float(metrics.get(name, math.nan)) for name in METRICS},
                "epochs": epochs,
                "planned_epochs": planned,
                "train_seconds": float(metrics.get("train_seconds", math.nan)),
                "eval_seconds": float(metrics.get("eval_seconds", math.nan)),
                "restarts": int(metrics.get("restarts", 0)),
                "finished_at": float(metrics.get("timestamp", math.nan)),
                "device": str(metrics.get("device", "")),
                "status": status,
                "error": "" if result.error is None else str(result.error).splitlines()[0][:500],
            }
        )
        if result.checkpoint is not None:
            checkpoints[trial_id] = result.checkpoint
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = frame.sort_values("trial_id", kind="stable").reset_index(drop=True)
    return frame, checkpoints


def _row_summary(row: pd.Series | None) -> dict[str, Any] | None:
    if row is None:
        return None
    payload = {
        "trial_id": row["trial_id"],
        "method": row["method"],
        "params": json.loads(row["params"]),
    }
    payload.update({name: _finite_or_none(row[name]) for name in METRICS})
    return payload


def _finite_or_none(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _summary(results, config, logs, simulator, oracle, k) -> dict[str, Any]:
    metric = config.objective.metric
    usable = results[np.isfinite(results[metric])] if not results.empty else results
    selected = usable.loc[usable[metric].idxmax()] if len(usable) else None
    truly_best = None
    if simulator is not None and len(usable):
        truly_best = usable.loc[usable["ground_truth"].idxmax()]
    selection_regret = None
    if selected is not None and truly_best is not None:
        selection_regret = float(truly_best["ground_truth"] - selected["ground_truth"])
    return {
        "selection_metric": metric,
        "k": k,
        "n_trials": len(results),
        "status_counts": results["status"].value_counts().to_dict() if len(results) else {},
        "selected": _row_summary(selected),
        "truly_best": _row_summary(truly_best),
        "selection_regret": selection_regret,
        "oracle_value": oracle,
        "logging_value": (
            float(simulator.policy_value(simulator.logging_policy()))
            if simulator is not None
            else None
        ),
        "logs_fingerprint": logs.fingerprint(),
        "causalrec_version": causalrec.__version__,
    }


def _export_best(out, results, checkpoints, summary, logs, train) -> Path | None:
    selected = summary["selected"]
    return _export_trial(out / "best", selected, results, checkpoints, summary, logs, train)


def _export_candidates(out, results, checkpoints, summary, logs, train) -> dict[str, Path]:
    """The best trial of each method (by the selection metric) in ``OUT/candidates/METHOD``."""
    metric = summary["selection_metric"]
    usable = results[np.isfinite(results[metric])]
    exported = {}
    for method, trials in usable.groupby("method", sort=True):
        best = _row_summary(trials.loc[trials[metric].idxmax()])
        path = _export_trial(
            out / CANDIDATES_DIR / method, best, results, checkpoints, summary, logs, train
        )
        if path is not None:
            exported[method] = path
    return exported


def _export_trial(dest, trial, results, checkpoints, summary, logs, train) -> Path | None:
    """A trial's model, the log's feature tables and ``model.json`` in ``dest``."""
    checkpoint = checkpoints.get(trial["trial_id"])
    if checkpoint is None:
        return None
    row = results.set_index("trial_id").loc[trial["trial_id"]]
    with storage.atomic_output_dir(dest, overwrite=True) as staging:
        with checkpoint.as_directory() as directory:
            for path in (Path(directory) / MODEL_SUBDIR).iterdir():
                shutil.copy2(path, staging / path.name)
        if logs.user_table is not None and logs.item_table is not None:
            # Serve logs its traffic with these user features (so it can be evaluated later).
            storage.write_feature_tables(staging, logs.user_table, logs.item_table)
        storage.write_json_atomic(
            staging / "model.json",
            {
                "method": trial["method"],
                "params": trial["params"],
                "metrics": {name: trial[name] for name in METRICS},
                "selection_metric": summary["selection_metric"],
                "k": summary["k"],
                "epochs": int(row["epochs"]),
                "trial_id": trial["trial_id"],
                "logs_fingerprint": summary["logs_fingerprint"],
                "train_fingerprint": train.fingerprint(),
                "train_rows": train.n_rows,
                "causalrec_version": causalrec.__version__,
            },
        )
    return dest
