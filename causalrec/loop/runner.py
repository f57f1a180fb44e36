"""The closed loop: each arm serves its world, retrains on what it logged, and redeploys.

For every seed, every arm has a twin world (:class:`~causalrec.loop.world.LoopWorld`: the same
structural causal model, the same seed, common random numbers). Generation 0 serves the world's
logger in every twin, so all arms start from the same logs. In generation g >= 1 an arm serves
the model it retrained after generation g − 1 on all its logs so far (or its fixed policy), and
each generation records

* ``truth``: the rollout truth of the deployed policy from where the world stands (clicks per
  session, with its standard error), and ``realised``: the generation's own expected clicks per
  session; ``clicks_per_session`` and ``ctr`` (clicks per impression) as observed;
* long-tail exposure and click share (items outside the head of the base popularity), catalogue
  coverage, the Gini coefficient of exposure, and the homogenisation of the users' interests
  after the generation (:mod:`causalrec.loop.metrics`);
* for retraining arms, the off-policy estimate of the next model on this generation's log, made
  before it is deployed; the results table sets it against the next generation's truth.

Run directory::

    OUT/
      config.yaml                 the loop's config
      loop.json                   seeds, arms, generations done per arm, failures, timing
      results.parquet, results.csv one row per seed, arm and generation
      effects.csv                 each intervention's effect per seed, method and metric
      serve-feedback/             with serving.mode http: the server's own log of the traffic
                                  it served (/feedback), checked against each generation's
      runs/seed=S/ARM/gen-GGG/    logs/ (Parquet, schema v2), world.safetensors (the world after
                                  the generation), model/ (the model retrained after it),
                                  record.json (the row)
      report.md, report.html, figures/

A generation's directory is built in a staging directory and swapped in when complete, so an
interrupted loop keeps every finished generation and ``resume=True`` continues each arm from its
last one without redoing it; the models are always served from their saved directories, so a
resumed loop gives the same numbers as one that was never stopped. A generation that fails is
recorded in ``loop.json`` with its error; its arm stops there, the other arms go on, and the
report is still written (a resumed loop retries the failed generation).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from causalrec.loop.arms import Deployment, check_arm, fixed_deployment, model_deployment, retrain
from causalrec.loop.config import ArmConfig, InterventionConfig, LoopConfig
from causalrec.loop.effects import intervention_effects
from causalrec.loop.interventions import apply_intervention, check_intervention
from causalrec.loop.metrics import exposure_measures, long_tail_items
from causalrec.loop.serving import LoopServer
from causalrec.loop.world import GenerationRun, LoopWorld, WorldState
from causalrec.platform import storage
from causalrec.platform.errors import ConfigError, DataError, OutputExistsError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.simulators.config import load_simulator_config
from causalrec.simulators.scm import ConfoundedRecSimulator
from causalrec.simulators.session_logs import session_log_metadata

__all__ = ["LoopResult", "read_results", "run_loop"]

CONFIG_FILE, STATE_FILE, RESULTS_FILE = "config.yaml", "loop.json", "results.parquet"
WORLD_FILE, RECORD_FILE, MODEL_DIR = "world.safetensors", "record.json", "model"
EFFECTS_FILE, SERVE_FEEDBACK_DIR = "effects.csv", "serve-feedback"


@dataclass(frozen=True)
class LoopResult:
    """What :func:`run_loop` produced.

    Attributes:
        out: The run directory.
        results: One row per seed, arm and generation (see :func:`read_results`).
        failures: One entry per failed generation: ``seed``, ``arm``, ``generation``, ``error``.
        seconds: Wall time of this call.
    """

    out: Path
    results: pd.DataFrame
    failures: list[dict[str, Any]]
    seconds: float


@dataclass
class _ArmRun:
    """One arm in one seed's twin world."""

    seed: int
    arm: ArmConfig
    simulator: ConfoundedRecSimulator
    world: LoopWorld
    directory: Path
    intervention: InterventionConfig | None = None
    logs: list[LoggedFeedback] = dataclasses.field(default_factory=list)
    failed: bool = False

    @property
    def name(self) -> str:
        """The arm's name in results: the intervention's for an intervened twin."""
        return self.arm.name if self.intervention is None else self.intervention.name

    def generation_dir(self, generation: int) -> Path:
        return self.directory / f"gen-{generation:03d}"


def _world(config: LoopConfig, seed: int) -> ConfoundedRecSimulator:
    simulator_config = load_simulator_config(
        preset=config.world.preset, **{**config.world.overrides, "seed": seed}
    )
    return ConfoundedRecSimulator(simulator_config)


def _finished(directory: Path) -> list[int]:
    """Generations whose directory is complete, in order."""
    done = sorted(
        int(path.name.removeprefix("gen-"))
        for path in directory.glob("gen-*")
        if (path / RECORD_FILE).is_file()
    )
    if done != list(range(len(done))):
        raise OutputExistsError(f"{directory}: finished generations {done} are not 0..n-1")
    return done


def _restore(run: _ArmRun) -> int:
    """Load the arm's world state and logs from its finished generations; the next generation."""
    done = _finished(run.directory)
    if not done:
        return 0
    run.world = LoopWorld(run.simulator, WorldState.load(run.generation_dir(done[-1]) / WORLD_FILE))
    for generation in done:
        logs = storage.read_logs(run.generation_dir(generation) / storage.LOGS_SUBDIR)
        run.logs.append(logs)
    return done[-1] + 1


def arm_deployment(
    arm: ArmConfig, simulator: ConfoundedRecSimulator, directory: Path, generation: int
) -> Deployment:
    """What ``arm`` serves in ``generation`` without interventions.

    Args:
        arm: The arm.
        simulator: Its world.
        directory: The arm's run directory (``OUT/runs/seed=S/NAME``), which holds the model
            it retrained after the previous generation.
        generation: The generation.
    """
    if generation == 0:
        return fixed_deployment("logging", simulator)
    if not arm.retrains:
        return fixed_deployment(arm.policy, simulator)
    model_dir = directory / f"gen-{generation - 1:03d}" / MODEL_DIR
    return model_deployment(arm, model_dir, simulator.slate_size)


def _intervened(
    run: _ArmRun, deployment: Deployment, generation: int, config: LoopConfig
) -> Deployment:
    if run.intervention is None or generation < run.intervention.from_generation:
        return deployment
    return apply_intervention(
        run.intervention,
        deployment,
        run.simulator,
        exploration=run.arm.exploration_spec(),
        head_share=config.head_share,
    )


def _deployment(run: _ArmRun, generation: int, config: LoopConfig) -> Deployment:
    deployment = arm_deployment(run.arm, run.simulator, run.directory, generation)
    return _intervened(run, deployment, generation, config)


def _world_metrics(run: GenerationRun, world: LoopWorld, tail: np.ndarray) -> dict[str, float]:
    return {
        "realised": float(run.returns.mean()),
        "clicks_per_session": float(run.clicks.mean()),
        "steps_per_session": float(run.steps.mean()),
        **exposure_measures(run.log.item_id, run.log.click, tail, world.preferences()),
        "sessions": len(run.returns),
        "impressions": int(run.log.n_rows),
    }


def _next_model(
    run: _ArmRun, staging: Path, log: LoggedFeedback, config: LoopConfig
) -> dict[str, Any]:
    """Retrain on all the arm's logs, save the model, and estimate it on this generation's log."""
    from causalrec.ope.evaluate_sessions import evaluate_sessions

    started = time.perf_counter()
    model = retrain(run.arm, LoggedFeedback.concat(run.logs), run.seed)
    model.save(staging / MODEL_DIR)
    storage.write_feature_tables(
        staging / MODEL_DIR, run.simulator.user_features, run.simulator.item_features
    )
    trained = time.perf_counter() - started
    following = _intervened(
        run,
        model_deployment(run.arm, staging / MODEL_DIR, run.simulator.slate_size),
        len(run.logs),
        config,
    )
    record = {
        "next_version": following.version,
        "train_seconds": trained,
        "ope_estimator": config.ope.estimator,
    }
    try:
        estimate = evaluate_sessions(
            log,
            following.policy,
            config.ope.estimator,
            horizon=run.simulator.config.session_length,
            alpha=config.ope.alpha,
            seed=run.seed,
            warn=False,
        ).iloc[0]
    except DataError as exc:  # e.g. a weighted estimate without support: undefined, not fatal
        nan = float("nan")
        return {**record, "ope_next": nan, "ope_next_low": nan, "ope_next_high": nan,
                "ope_next_ess_share": 0.0, "ope_warning": f"undefined: {exc}"}  # fmt: skip
    return {
        **record,
        "ope_next": float(estimate["estimate"]),
        "ope_next_low": float(estimate["low"]),
        "ope_next_high": float(estimate["high"]),
        "ope_next_ess_share": float(estimate["ess_share"]),
        "ope_warning": str(estimate["warning"] or ""),
    }


def _served_model_dir(run: _ArmRun, generation: int) -> Path | None:
    """The saved model an arm serves in ``generation``, if it serves its own model unchanged."""
    if not run.arm.retrains or generation == 0:
        return None
    if run.intervention is not None and generation >= run.intervention.from_generation:
        return None
    return run.generation_dir(generation - 1) / MODEL_DIR


def _serve(
    run: _ArmRun, generation: int, deployment: Deployment, server: LoopServer | None
) -> tuple[GenerationRun, dict[str, Any]]:
    """Run the generation: through the server for a retrained model, else in process."""
    model_dir = _served_model_dir(run, generation)
    if server is None or model_dir is None:
        outcome = run.world.run_generation(deployment.policy, seed=run.seed, name=run.name)
        return outcome, {"served_via": "in_process"}
    return server.serve_generation(
        run.world,
        deployment,
        model_dir,
        run.arm.exploration_spec(),
        seed=run.seed,
        name=run.name,
    )


def _run_generation(
    run: _ArmRun,
    generation: int,
    config: LoopConfig,
    tail: np.ndarray,
    server: LoopServer | None = None,
) -> dict[str, Any]:
    """Serve, measure, retrain and save one generation of one arm; returns its record."""
    started = time.perf_counter()
    deployment = _deployment(run, generation, config)
    truth = run.world.long_term_value(
        deployment.policy, seed=run.seed, replicas=config.truth_replicas
    )
    outcome, served = _serve(run, generation, deployment, server)
    metadata = session_log_metadata(
        run.simulator, deployment.policy, run.simulator.n_users, run.seed
    )
    metadata.update({"generation": generation, "arm": run.name, "version": deployment.version})
    log = dataclasses.replace(
        outcome.log,
        user_table=run.simulator.user_features_f32,
        item_table=run.simulator.item_features.astype(np.float32),
        metadata=metadata,
    )
    record: dict[str, Any] = {
        "seed": run.seed,
        "arm": run.name,
        "generation": generation,
        "version": deployment.version,
        "truth": float(truth),
        "truth_se": truth.standard_error,
        **_world_metrics(outcome, run.world, tail),
        **served,
    }
    run.logs.append(log)
    target = run.generation_dir(generation)
    with storage.atomic_output_dir(target, overwrite=True) as staging:
        with storage.LogWriter(
            staging / storage.LOGS_SUBDIR,
            n_user_features=run.simulator.user_features.shape[1],
            metadata=metadata,
        ) as writer:
            writer.write(log)
        storage.write_feature_tables(
            staging / storage.LOGS_SUBDIR,
            run.simulator.user_features,
            run.simulator.item_features,
            run.simulator.popularity,
        )
        run.world.state.save(staging / WORLD_FILE)
        if run.arm.retrains and generation < config.generations:
            record.update(_next_model(run, staging, log, config))
        record["seconds"] = time.perf_counter() - started
        storage.write_json_atomic(staging / RECORD_FILE, record)
    return record


def _prepare(config: LoopConfig, out: Path, *, resume: bool, overwrite: bool) -> dict[str, Any]:
    """Check the run directory; returns the loop's state record."""
    text = yaml.safe_dump(config.model_dump(), sort_keys=False)
    if resume:
        if not (out / STATE_FILE).is_file():
            raise ConfigError(f"--resume: {str(out)!r} holds no loop run ({STATE_FILE} missing)")
        if (out / CONFIG_FILE).read_text() != text:
            raise ConfigError(
                f"--resume: the config differs from the one {str(out)!r} was started with "
                f"({out / CONFIG_FILE}); resume with that config or start a new --out"
            )
        import json

        state = json.loads((out / STATE_FILE).read_text())
        state["failures"] = []
        return state
    storage.check_output_dir(out, overwrite=overwrite)
    if out.exists() and overwrite:
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True)
    storage.write_atomic(out / CONFIG_FILE, lambda tmp: tmp.write_text(text))
    return {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "finished": None,
        "seeds": list(config.seeds),
        "arms": [arm.name for arm in config.arms],
        "generations": config.generations,
        "failures": [],
    }


def run_loop(
    config: LoopConfig,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> LoopResult:
    """Run the closed loop (see the module docstring) and write its results and report.

    Args:
        config: The loop.
        out: The run directory (refused if non-empty, unless ``overwrite`` or ``resume``).
        resume: Continue the run in ``out`` from each arm's last finished generation.
        overwrite: Replace a non-empty ``out``.
        progress: Called with one line per finished generation (all seeds and arms).

    Returns:
        The results.

    Raises:
        ConfigError: For an unknown preset, method or parameter, or a ``--resume`` whose run
            directory or config does not match (all before any work is done).
        OutputExistsError: For a non-empty ``out`` without ``overwrite`` or ``resume``.
    """
    started = time.perf_counter()
    out = Path(out)
    for arm in config.arms:
        check_arm(arm)
    worlds = {seed: _world(config, seed) for seed in config.seeds}
    for intervention in config.interventions:
        check_intervention(intervention, config.arm(intervention.arm), worlds[config.seeds[0]])
    state = _prepare(config, out, resume=resume, overwrite=overwrite)
    runs, next_generation = [], {}
    for seed, simulator in worlds.items():
        twins = [(arm, None) for arm in config.arms] + [
            (config.arm(i.arm), i) for i in config.interventions
        ]
        for arm, intervention in twins:
            name = arm.name if intervention is None else intervention.name
            directory = out / "runs" / f"seed={seed}" / name
            run = _ArmRun(seed, arm, simulator, LoopWorld(simulator), directory, intervention)
            next_generation[id(run)] = _restore(run)
            runs.append(run)
    tails = {
        seed: long_tail_items(simulator.popularity, config.head_share)
        for seed, simulator in worlds.items()
    }
    with _server(config, out) as server:
        for generation in range(config.generations + 1):
            rows = []
            for run in runs:
                if run.failed or next_generation[id(run)] > generation:
                    continue
                try:
                    rows.append(_run_generation(run, generation, config, tails[run.seed], server))
                except Exception as exc:  # recorded; the other arms go on (the module docstring)
                    run.failed = True
                    state["failures"].append(
                        {
                            "seed": run.seed,
                            "arm": run.name,
                            "generation": generation,
                            "error": f"{type(exc).__name__}: {exc}",
                            "traceback": traceback.format_exc(limit=8),
                        }
                    )
                next_generation[id(run)] = generation + 1
            storage.write_json_atomic(out / STATE_FILE, state)
            if progress is not None and rows:
                progress(_progress_line(generation, config.generations, rows))
    results = collect_results(out)
    storage.write_table_atomic(out / RESULTS_FILE, _to_arrow(results))
    storage.write_csv_atomic(out / "results.csv", results)
    if config.interventions and not results.empty:
        effects = intervention_effects(config, out, results, worlds)
        storage.write_csv_atomic(out / EFFECTS_FILE, effects)
    state["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    storage.write_json_atomic(out / STATE_FILE, state)
    from causalrec.loop.report import write_loop_report

    write_loop_report(out)
    return LoopResult(out, results, state["failures"], time.perf_counter() - started)


def _server(config: LoopConfig, out: Path) -> contextlib.AbstractContextManager:
    """The loop's Serve application with ``serving.mode: http`` (a no-op context otherwise)."""
    if config.serving.mode != "http":
        return contextlib.nullcontext()
    return LoopServer(config.serving, out / SERVE_FEEDBACK_DIR, seed=config.seeds[0])


def _progress_line(generation: int, generations: int, rows: list[dict[str, Any]]) -> str:
    frame = pd.DataFrame(rows)
    means = frame.groupby("arm", sort=False)["truth"].mean()
    values = "  ".join(f"{arm} {value:.3f}" for arm, value in means.items())
    return (
        f"[loop] generation {generation}/{generations}: true clicks per session (mean over "
        f"{frame.seed.nunique()} seeds): {values}"
    )


def _to_arrow(frame: pd.DataFrame):
    import pyarrow as pa

    return pa.Table.from_pandas(frame, preserve_index=False)


def collect_results(out: str | Path) -> pd.DataFrame:
    """Every finished generation's record under ``out``, one row each, with ``next_truth``.

    ``next_truth`` is the truth of the same seed and arm one generation later (the realised
    value of the model that ``ope_next`` estimated), ``ope_error`` their difference.
    """
    import json

    records = [
        json.loads(path.read_text())
        for path in sorted(Path(out, "runs").glob(f"seed=*/*/gen-*/{RECORD_FILE}"))
    ]
    frame = pd.DataFrame(records)
    if frame.empty:
        return frame
    frame = frame.sort_values(["seed", "arm", "generation"], kind="stable").reset_index(drop=True)
    frame["next_truth"] = frame.groupby(["seed", "arm"])["truth"].shift(-1)
    if "ope_next" in frame:
        frame["ope_error"] = frame["ope_next"] - frame["next_truth"]
    return frame


def read_results(out: str | Path) -> pd.DataFrame:
    """The results table of a finished loop (``OUT/results.parquet``).

    Columns: ``seed``, ``arm``, ``generation``, ``version``; ``truth`` and ``truth_se``,
    ``realised``, ``clicks_per_session`` (clicks per session); ``steps_per_session``; ``ctr``
    (clicks per impression); ``tail_exposure``, ``tail_clicks``, ``coverage``, ``gini``,
    ``homogenisation`` (shares and coefficients in [0, 1] or [−1, 1]); for retraining arms
    ``ope_estimator``, ``ope_next`` (with ``ope_next_low``, ``ope_next_high``,
    ``ope_next_ess_share``, ``ope_warning``), ``next_truth``, ``ope_error`` (clicks per session),
    ``train_seconds``; ``served_via`` (``in_process`` or ``http``; over HTTP also
    ``requests``, ``served_rows`` and ``served_parts``, the server's log files of the
    generation); ``seconds``.
    """
    return pd.read_parquet(Path(out) / RESULTS_FILE)
