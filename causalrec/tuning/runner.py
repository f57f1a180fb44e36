"""Run a search with Ray Tune and write its results, its winner and the selection regret.

:func:`tune_recommenders` validates the search space before anything starts, splits the log into
training and validation rounds, fits the validation split's reward models once, puts everything
trials share into Ray's object store, and runs ``tune.Tuner`` with Optuna (TPE or random) and
ASHA. The same code runs on the embedded local Ray and, with ``address`` or ``RAY_ADDRESS``, on a
cluster.

Outputs under ``OUT``:

* ``results.parquet`` and ``results.csv`` — one row per trial: method, parameters (JSON),
  metrics of its last epoch, epochs run, training time, restarts, status (``completed``,
  ``stopped_early`` by ASHA, ``error``), time of its last report, the device and the Ray node
  (``node_id``) that ran it;
* ``best/`` — the trial the selection metric chose, as a saved model
  (:class:`~causalrec.methods.artifact.SavedModel`) with ``model.json`` (method, parameters,
  metrics, the training log's fingerprint, causalrec version) and the log's
  ``users.parquet``/``items.parquet`` feature tables — what Serve loads;
* ``candidates/METHOD/`` — with ``export_candidates``, each method's best trial, as ``best/``;
* ``summary.json`` — the selection, the truly best trial, the selection regret and the timing
  (``prepare_seconds``: splitting the log and fitting the validation reward models once;
  ``search_seconds``: the Tune run);
* ``experiment/`` — Ray Tune's experiment state (what ``resume=True`` continues from);
* ``train_split/`` — with ``data.stream_above_rows`` and a log passed in memory, the training
  split as a log directory that the trials read.

**Large logs.** ``logs`` may be the path of a log directory. Above ``data.stream_above_rows``
training rows, the training split does not go into the object store: the driver reads the
log's ``round_id`` column a part file at a time to find the validation cut, reads only the
validation rounds into memory, and gives the trials a
:class:`~causalrec.platform.log_dataset.LogDataset` of the training rounds (the part files and
the rounds below the cut); each trial reads its rows from the files (:mod:`.trial`). The
fingerprints of the log and of the split are computed from the files, a column at a time, and
equal those of the same rows in memory. A log passed in memory above the threshold is first
written to ``OUT/train_split/``. Ray Data's read tasks run outside the trials' reservations, so
fewer trials run at once when needed to leave ``data.reserved_cpus`` CPUs free. At or below the
threshold (and without one) a path is read into memory and nothing changes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa

from causalrec.methods.base import Recommender
from causalrec.methods.registry import RECOMMENDERS
from causalrec.ope.evaluate import OfflineEvaluator
from causalrec.ope.selection import AUTO
from causalrec.platform import storage
from causalrec.platform.errors import ConfigError, DataError, SearchInterruptedError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.log_dataset import LogDataset, write_split
from causalrec.simulators.scm import ConfoundedRecSimulator
from causalrec.simulators.world import is_simulated, simulator_from_logs
from causalrec.tuning.config import TuningConfig
from causalrec.tuning.results import (
    SearchData,
    TuningResult,
    export_models,
    results_frame,
    summarize,
)
from causalrec.tuning.space import define_by_run, max_epochs, validate_space
from causalrec.tuning.tracking import log_selected_model
from causalrec.tuning.trial import TrialContext, run_trial

__all__ = ["EXPERIMENT_DIR", "SearchInterruptedError", "split_rounds", "tune_recommenders"]

#: Sub-directory of ``OUT`` holding Ray Tune's experiment state.
EXPERIMENT_DIR = "experiment"
#: Sub-directory of ``OUT`` holding the training split of a log passed in memory, when the
#: trials read it from Parquet (``data.stream_above_rows``).
TRAIN_SPLIT_DIR = "train_split"
#: Fewest rounds a search splits.
MIN_ROUNDS = 10


def split_rounds(
    logs: LoggedFeedback, validation_fraction: float
) -> tuple[LoggedFeedback, LoggedFeedback]:
    """The first rounds for training, the last ``validation_fraction`` of them for validation."""
    if logs.n_rounds < MIN_ROUNDS:
        raise DataError(f"the log has {logs.n_rounds} rounds; a search needs at least {MIN_ROUNDS}")
    return logs.split_by_round(validation_fraction)


@dataclasses.dataclass(frozen=True)
class _Split:
    """The driver's view of the log: what trials train on and what it keeps in memory.

    ``logs`` and ``train`` are ``None`` when the trials read the training split from
    ``train_source`` (a path over ``data.stream_above_rows``); ``validation`` is always in
    memory.
    """

    logs: LoggedFeedback | None
    train: LoggedFeedback | None
    validation: LoggedFeedback
    train_source: LogDataset | None
    data: SearchData

    @property
    def described(self) -> LoggedFeedback:
        """A log carrying the metadata, catalogue and slate size (the whole log or validation)."""
        return self.logs if self.logs is not None else self.validation


def _open_log(logs: LoggedFeedback | str | os.PathLike, config: TuningConfig) -> _Split:
    """Split ``logs`` in memory, or, for a path over the threshold, into a dataset and rows."""
    fraction = config.objective.validation_fraction
    threshold = config.data.stream_above_rows
    if isinstance(logs, LoggedFeedback):
        train, validation = split_rounds(logs, fraction)
        return _Split(logs, train, validation, None, SearchData.of(logs, train))
    if threshold is not None:
        dataset = LogDataset.open(logs)
        n_rounds = len(dataset.round_ids())
        if n_rounds < MIN_ROUNDS:
            raise DataError(f"the log has {n_rounds} rounds; a search needs at least {MIN_ROUNDS}")
        cut = dataset.round_cut(fraction)
        train_source = dataset.rounds(stop=cut)
        train_rows = train_source.count_rows()
        if train_rows > threshold:
            validation = dataset.rounds(start=cut).read()
            users, items = validation.user_table, validation.item_table
            data = SearchData(
                logs_fingerprint=dataset.fingerprint(),
                train_fingerprint=train_source.fingerprint(),
                train_rows=train_rows,
                feature_tables=(users, items) if users is not None and items is not None else None,
            )
            return _Split(None, None, validation, train_source, data)
    return _open_log(storage.read_logs(logs), config)


def _spill(split: _Split, config: TuningConfig, out: Path) -> _Split:
    """An in-memory training split over the threshold, written to ``OUT/train_split``."""
    threshold = config.data.stream_above_rows
    if split.train is None or threshold is None or split.train.n_rows <= threshold:
        return split
    directory = out / TRAIN_SPLIT_DIR
    if directory.exists():  # a resumed search writes the same split again
        shutil.rmtree(directory)
    return dataclasses.replace(split, train=None, train_source=write_split(split.train, directory))


def _concurrency(config: TuningConfig, cluster: dict[str, float], streaming: bool) -> int:
    """Trials at once: ``max_concurrent_trials``, fewer to leave Ray Data CPUs when streaming."""
    wanted = config.search.max_concurrent_trials
    if not streaming:
        return wanted
    cpus, reserved = cluster.get("CPU", 0.0), config.data.reserved_cpus
    per_trial = config.resources.cpus_per_trial
    fit = int((cpus - reserved) // per_trial)
    if fit < 1:
        raise ConfigError(
            f"data.reserved_cpus={reserved:g}: trials that read the log's files need "
            f"{reserved:g} CPU(s) free for Ray Data beside resources.cpus_per_trial="
            f"{per_trial:g}, but the cluster has {cpus:g} CPUs; lower either, or raise "
            "data.stream_above_rows"
        )
    if fit < wanted:
        print(
            f"notice: trials read the log's files; {fit} trial(s) at once (not "
            f"max_concurrent_trials={wanted}) leave data.reserved_cpus={reserved:g} of the "
            f"cluster's {cpus:g} CPUs to Ray Data",
            file=sys.stderr,
        )
    return min(fit, wanted)


def _gpus_per_trial(requested: float, cluster: dict[str, float]) -> float:
    if requested > 0 and cluster.get("GPU", 0) <= 0:
        print(
            f"notice: gpus_per_trial={requested} but the Ray cluster has no GPU; trials run on CPU",
            file=sys.stderr,
        )
        return 0.0
    return requested


def _tuner(
    trainable, config: TuningConfig, spaces, registry, horizon: int, out: Path, verbose,
    concurrency: int,
):  # fmt: skip
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from causalrec.tuning.tracking import tune_callbacks

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
            max_concurrent_trials=concurrency,
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
            callbacks=tune_callbacks(config, out),
            verbose=verbose,
        ),
    )


def tune_recommenders(
    logs: LoggedFeedback | str | os.PathLike,
    config: TuningConfig,
    out: str | Path,
    *,
    address: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    registry: dict[str, type[Recommender]] | None = None,
    simulator: ConfoundedRecSimulator | None = None,
    verbose: int = 1,
) -> TuningResult:
    """Search over methods and hyperparameters (see the module docstring).

    Args:
        logs: The logged feedback to learn from, or the path of a log directory (read into
            memory unless its training split is over ``data.stream_above_rows``; then it must
            be a local directory; see the module docstring).
        config: The search.
        out: Output directory (must be empty unless ``overwrite`` or ``resume``).
        address: Ray cluster to join (default: ``RAY_ADDRESS``, else a local Ray).
        resume: Continue the search whose state is in ``OUT/experiment``: finished trials are
            kept, unfinished and errored ones continue from their checkpoints.
        overwrite: Replace a non-empty ``out``.
        registry: Recommender classes by name (default: :data:`RECOMMENDERS`); custom
            recommenders can be searched by adding them here.
        simulator: The world behind simulated ``logs``, if the caller holds it (default: rebuilt
            from the logs' metadata); trials measure their exact value in it.
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
    split_started = time.monotonic()
    split = _open_log(logs, config)
    split_seconds = time.monotonic() - split_started
    if simulator is None and is_simulated(split.described):
        simulator = simulator_from_logs(split.described)
    elif simulator is None and config.objective.metric == "ground_truth":
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
    split = _spill(split, config, out)
    concurrency = _concurrency(config, cluster, split.train_source is not None)
    train, validation = split.train, split.validation
    k = split.described.slate_size
    evaluator = OfflineEvaluator(validation, AUTO, reward_model=config.objective.reward_model)
    evaluator.prepare()
    oracle = simulator.oracle_value() if simulator is not None else None
    context = TrialContext(
        train=train,
        evaluator=evaluator,
        simulator=simulator,
        oracle_value=oracle,
        k=k,
        registry=registry,
        cpus_per_trial=config.resources.cpus_per_trial,
        train_source=split.train_source,
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
        tuner = _tuner(trainable, config, spaces, registry, horizon, out, verbose, concurrency)
    started = time.monotonic()
    prepare_seconds = split_seconds + started - prepare_started
    with _sigint_watch() as interrupted:
        grid = tuner.fit()
    search_seconds = time.monotonic() - started
    _raise_if_interrupted(grid, config, search_seconds, experiment, interrupted())

    results, checkpoints = results_frame(grid, registry)
    summary = summarize(results, config, split.data, simulator, oracle, k)
    summary["timing"] = {
        "prepare_seconds": round(prepare_seconds, 3),
        "search_seconds": round(search_seconds, 3),
    }
    best, candidates = export_models(
        out, results, checkpoints, summary, split.data, candidates=config.export_candidates
    )
    log_selected_model(config, out, summary, best)
    storage.write_table_atomic(out / "results.parquet", pa.Table.from_pandas(results))
    storage.write_csv_atomic(out / "results.csv", results)
    storage.write_json_atomic(out / "summary.json", summary)
    return TuningResult(
        results=results,
        summary=summary,
        best=best,
        candidates=candidates,
        train=train,
        validation=validation,
    )


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
