"""``causalrec pipeline``: from confounded logs to a deployed causal recommender and its A/B test.

Stages (:mod:`causalrec.pipeline.stages`), in order: ``simulate`` confounded logs and a uniform
slice; ``tune`` the methods with Ray Tune and export each method's best trial and the winner;
``deploy`` an A/B experiment on Ray Serve (baseline vs. winner, split by user id in the
ingress); ``abtest`` through HTTP with clicks from the simulator, beside its offline (OPE)
prediction; ``ope`` of every candidate with every estimator against the exact values;
``report`` (Markdown, HTML, figures). Progress is printed stage by stage (one line each) and
recorded in ``OUT/pipeline.json`` (status, seconds, error of each stage, and ``node_ids``: the
Ray node of each simulation shard and of each trial); what Ray, Tune and
Serve print goes to ``OUT/pipeline.log`` unless ``verbose``. A local Ray that the run started
is shut down at its end (with Serve), unless it keeps serving.

Everything that can be checked before work is checked first (output directory, simulator
preset, search space, budget, baseline, the deployment's ``serve.app`` arguments, the
``ope.estimators``, HTTP port), naming the field. A failing stage leaves the outputs of the
stages before it intact, is recorded as failed with its error (its traceback goes to the log),
and the report is still written from what exists.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

from causalrec.pipeline.config import PipelineConfig
from causalrec.pipeline.stages import STAGES, RunContext
from causalrec.platform import storage
from causalrec.platform.errors import CausalRecError, ConfigError, PipelineStageError
from causalrec.tuning.config import TuningConfig

__all__ = ["LOG_FILE", "check_config", "run_pipeline", "summary_lines"]

#: File in ``OUT`` that receives Ray's, Tune's and Serve's output in a quiet (default) run.
LOG_FILE = "pipeline.log"


def check_config(config: PipelineConfig, tuning: TuningConfig, *, address: str | None) -> None:
    """Refuse a run that cannot succeed, before any work (errors name the field).

    Raises:
        ConfigError: Unknown preset, method or estimator, an impossible budget, a baseline that
            is not tuned, an unknown or invalid ``serve.app`` field, an HTTP port in use.
    """
    from causalrec.methods.registry import RECOMMENDERS
    from causalrec.ope.registry import parse_estimators
    from causalrec.simulators import load_simulator_config
    from causalrec.tuning.space import validate_space

    stage = config.simulate
    try:
        load_simulator_config(preset=stage.preset, **stage.overrides)
    except CausalRecError as exc:
        raise ConfigError(f"simulate: {exc}") from None
    try:
        validate_space(tuning, RECOMMENDERS)
    except CausalRecError as exc:
        raise ConfigError(f"tuning: {exc}") from None
    n_methods, samples = len(tuning.methods), tuning.search.num_samples
    if samples < n_methods:
        raise ConfigError(
            f"tuning.search.num_samples: {samples} trials cannot try each of the {n_methods} "
            f"methods ({', '.join(tuning.methods)}); raise num_samples or drop methods"
        )
    held_out = int(stage.rounds * tuning.objective.validation_fraction)
    if held_out < 500:
        raise ConfigError(
            f"simulate.rounds: {stage.rounds} rounds leave {held_out} held-out rounds "
            f"(validation_fraction {tuning.objective.validation_fraction}); need >= 500"
        )
    if config.abtest.baseline not in tuning.methods:
        raise ConfigError(
            f"abtest.baseline: {config.abtest.baseline!r} is not among the tuned methods "
            f"({', '.join(tuning.methods)})"
        )
    # The deployment's arguments as the deploy stage builds them, on placeholder paths (the
    # models exist only after the search).
    placeholder = Path("OUT")
    config.serve.app_args(
        placeholder,
        baseline_dir=placeholder / "tune" / "candidates" / config.abtest.baseline,
        treatment_dir=placeholder / "tune" / "best",
        salt=config.abtest.salt,
    )
    if config.ope.estimators is not None:
        try:
            parse_estimators(config.ope.estimators)
        except CausalRecError as exc:
            raise ConfigError(f"ope.estimators: {exc}") from None
    if config.abtest.via == "http" and not config.serve.deploy:
        raise ConfigError(
            "abtest.via: 'http' needs the deployment; set serve.deploy: true or abtest.via: "
            "in-process"
        )
    if config.abtest.via == "http" and address is None and config.serve.port:
        with socket.socket() as sock:
            try:
                sock.bind((config.serve.host, config.serve.port))
            except OSError as exc:
                raise ConfigError(
                    f"serve.port: cannot listen on {config.serve.host}:{config.serve.port} "
                    f"({exc.strerror}); free it or set serve.port (0 picks a free port)"
                ) from None


def run_pipeline(
    config: PipelineConfig,
    tuning: TuningConfig,
    out: str | Path,
    *,
    config_path: str | None = None,
    address: str | None = None,
    overwrite: bool = False,
    keep_serving: bool = False,
    verbose: bool = False,
    log=print,
) -> dict[str, Any]:
    """Run every stage (see the module docstring); returns the content of ``pipeline.json``.

    Args:
        config: The pipeline.
        tuning: Its resolved tuning config.
        out: Run directory (refused when not empty, unless ``overwrite``).
        config_path: Where ``config`` came from (recorded).
        address: Ray cluster to join (default ``RAY_ADDRESS``, else a local Ray).
        overwrite: Replace a non-empty ``out``.
        keep_serving: Leave the deployment running after the run.
        verbose: Let Ray, Tune and Serve print to the console as they run; by default their
            output, warnings and a failed stage's traceback go to ``OUT/pipeline.log`` and
            the console shows one line per stage (and, on a terminal, a bar of the stage
            running).
        log: Where progress lines go.

    Raises:
        ConfigError: From :func:`check_config`, before any work.
        OutputExistsError: ``out`` holds a previous run and ``overwrite`` is false.
        PipelineStageError: A stage failed (recorded in ``pipeline.json``).
    """
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    out = storage.check_output_dir(out, overwrite=overwrite).absolute()
    check_config(config, tuning, address=address)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    # A local Ray that the run starts is the run's own: it goes with the run (and Serve with it).
    owns_ray = address is None and not ray.is_initialized()
    record: dict[str, Any] = {
        "config_path": config_path,
        "config": config.model_dump(mode="json"),
        "seed": config.seed,
        "started": _now(),
        "finished": None,
        "stages": [
            {"name": name, "status": "pending", "seconds": None, "error": None} for name in STAGES
        ],
    }
    ctx = RunContext(out=out, config=config, tuning=tuning, address=address)
    failure = None
    with contextlib.ExitStack() as stack:
        file = None
        if not verbose:
            file = stack.enter_context(open(out / LOG_FILE, "a", buffering=1, encoding="utf-8"))
        console = stack.enter_context(_Console(file, log, len(STAGES)))
        try:
            for index, (name, stage) in enumerate(STAGES.items()):
                entry = record["stages"][index]
                if failure is not None and name != "report":
                    entry["status"] = "skipped"
                    continue
                console.stage_started(index, name)
                started = time.monotonic()
                # The report renders pipeline.json, so it sees itself (and the run) as finished.
                last = index == len(STAGES) - 1
                entry["status"] = "done" if last and failure is None else "running"
                record["finished"] = _now() if last else None
                storage.write_json_atomic(out / "pipeline.json", record)
                with console.captured():
                    try:
                        outcome = stage(ctx)
                    except Exception as exc:  # recorded, then raised as PipelineStageError below
                        entry["status"], entry["error"] = "failed", f"{type(exc).__name__}: {exc}"
                        failure = failure or (name, exc)
                        if file is not None:
                            traceback.print_exc(file=file)
                    else:
                        entry["status"] = outcome or "done"
                if name in ctx.node_ids:
                    entry["node_ids"] = ctx.node_ids[name]
                entry["seconds"] = round(time.monotonic() - started, 1)
                lines = [
                    f"[{index + 1}/{len(STAGES)}] {name} {entry['status']} in {entry['seconds']} s"
                ]
                if entry["error"]:
                    lines.append(f"    {entry['error']}")
                if ctx.url and name == "deploy" and entry["status"] == "done":
                    lines.append(f"    serving at {ctx.url} (docs: {ctx.url}/docs)")
                console.lines(lines)
                storage.write_json_atomic(out / "pipeline.json", record)
        finally:
            with console.captured():
                _shut_down(
                    deployment=bool(ctx.url) and not keep_serving,
                    local_ray=owns_ray and not keep_serving,
                )
    if failure is not None:
        name, exc = failure
        raise PipelineStageError(
            f"stage {name!r} failed: {type(exc).__name__}: {exc} (outputs of the stages before "
            f"it are in {str(out)!r}; see pipeline.json{'' if verbose else ' and ' + LOG_FILE})"
        ) from exc
    record["url"] = ctx.url
    return record


def summary_lines(out: str | Path) -> list[str]:
    """The run's headline figures for the console."""
    out = Path(out)
    summary = json.loads((out / "summary.json").read_text())
    lines = [
        f"world: {summary['preset']} {summary['n_users']} users x {summary['n_items']} items, "
        f"{summary['n_rounds']:,} rounds; oracle {summary['oracle_value']:.4f}, logging "
        f"{summary['logging_value']:.4f}"
    ]
    selected, best = summary.get("selected"), summary.get("truly_best")
    if selected:
        lines.append(
            f"selected {selected['method']} (DR {selected['ope_dr']:.4f}, exact "
            f"{selected['true_value']:.4f}); truly best {best['method']} "
            f"({best['true_value']:.4f}); selection regret {summary['selection_regret']:.4f}"
        )
    result_path = out / "abtest" / "result.json"
    if result_path.exists():
        from causalrec.abtest.formatting import format_lifts

        result = json.loads(result_path.read_text())
        lines.append(f"A/B test ({result['mode']}, {result['users']:,} visits):")
        lines += [f"    {line}" for line in format_lifts(result)]
    lines.append(f"report: {out / 'report.md'} and {out / 'report.html'}")
    return lines


class _Console:
    """The run's console: progress lines through ``log``; everything else to ``file``.

    With a ``file`` (a quiet run), what Ray, Tune, Serve and Python print during a stage goes
    there (:func:`~causalrec.platform.runtime.output_to_file`), each stage prints one line when
    it ends, and a terminal also shows a bar naming the stage that runs. Without one (a verbose
    run), nothing is captured and each stage prints a line when it starts and when it ends.
    """

    def __init__(self, file: TextIO | None, log, n_stages: int):
        from tqdm.auto import tqdm

        self.file, self.log, self.n_stages = file, log, n_stages
        # disable=None: only on a terminal (not in CI logs, Ray job logs or pipes).
        self.bar = tqdm(
            total=n_stages,
            bar_format="{desc} {elapsed}",
            leave=False,
            disable=True if file is None else None,
        )

    def stage_started(self, index: int, name: str) -> None:
        line = f"[{index + 1}/{self.n_stages}] {name} ..."
        if self.file is None:
            self.log(line)
        else:
            self.bar.set_description_str(line)
            print(f"{_now()} {line}", file=self.file)

    def lines(self, lines: list[str]) -> None:
        with self.bar.external_write_mode():
            for line in lines:
                self.log(line)
        if self.file is not None:
            self.bar.update()
            for line in lines:
                print(f"{_now()} {line}", file=self.file)

    def captured(self):
        """A block whose output goes to ``file`` (does nothing in a verbose run)."""
        from causalrec.platform.runtime import output_to_file

        return contextlib.nullcontext() if self.file is None else output_to_file(self.file)

    def __enter__(self) -> _Console:
        return self

    def __exit__(self, *exc_info) -> None:
        self.bar.close()


def _shut_down(*, deployment: bool, local_ray: bool) -> None:
    """Take down the deployment and the run's own local Ray.

    ``serve.shutdown()`` asks Serve's controller to stop with a call that only ends by the
    controller's death, which Ray then reports as an error ("Task
    ServeController.graceful_shutdown failed ... killed by ray.kill") on every successful
    shutdown. A local Ray that goes anyway takes Serve with it, without that call; on a cluster
    (or a Ray that was running before the run) Serve is shut down and Ray stays.
    """
    import ray

    try:
        if deployment and not local_ray:
            from ray import serve

            serve.shutdown()
        if local_ray and ray.is_initialized():
            ray.shutdown()
    except Exception as exc:  # the run's outputs are written; say so and go on
        print(f"warning: could not shut Serve or Ray down: {exc}", file=sys.stderr)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
