"""The pipeline's stages: each reads what the stages before it wrote and writes its own outputs.

Every stage is a function of a :class:`RunContext`; what it writes is listed in its docstring
(the report's run directory contract is in :mod:`causalrec.pipeline.report`). A stage that has
nothing to do returns ``"skipped"``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from causalrec.methods.artifact import SavedModel
from causalrec.pipeline.config import PipelineConfig
from causalrec.platform import storage
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.units import check_same_unit
from causalrec.simulators.scm import ConfoundedRecSimulator
from causalrec.tuning.config import TuningConfig

__all__ = ["STAGES", "RunContext"]


@dataclass
class RunContext:
    """What the stages share.

    Attributes:
        out: The run directory.
        config: The pipeline config.
        tuning: Its resolved tuning config.
        address: Ray cluster to join (``None``: ``RAY_ADDRESS`` or a local Ray).
        simulator: The world (set by ``simulate``); later stages reuse it, never rebuild it.
        logs: The confounded logs (``simulate``).
        validation: The rounds the search held out, on which candidates are evaluated (``tune``).
        candidates: Saved model of each method's best trial (``tune``).
        best: The search's selected model, ``tune/best`` (``tune``).
        url: The deployed application's base URL (``deploy``).
        node_ids: By stage, the Ray node that ran each of its tasks (``simulate``: each shard
            of the logs, ``None`` for a shard run in the pipeline's process; ``tune``: each
            trial); ``pipeline.json`` records them with the stage.
    """

    out: Path
    config: PipelineConfig
    tuning: TuningConfig
    address: str | None = None
    simulator: ConfoundedRecSimulator | None = None
    logs: LoggedFeedback | None = None
    validation: LoggedFeedback | None = None
    candidates: dict[str, SavedModel] = field(default_factory=dict)
    best: SavedModel | None = None
    url: str | None = None
    node_ids: dict[str, list[str | None]] = field(default_factory=dict)

    def update_summary(self, **values: Any) -> None:
        """Merge ``values`` into ``summary.json``."""
        path = self.out / "summary.json"
        summary = json.loads(path.read_text()) if path.exists() else {}
        storage.write_json_atomic(path, {**summary, **values})


def simulate(ctx: RunContext) -> None:
    """Confounded logs (``logs/``), a uniform slice (``uniform/``), ``summary.json``, graph."""
    from causalrec.simulators import ConfoundedRecSimulator, load_simulator_config, write_logs

    stage = ctx.config.simulate
    simulator = ConfoundedRecSimulator(
        load_simulator_config(preset=stage.preset, **stage.overrides)
    )
    sharding = {"chunk_rounds": stage.chunk_rounds, "workers": stage.workers,
                "address": ctx.address}  # fmt: skip
    write_logs(simulator, ctx.out / "logs", stage.rounds, seed=ctx.config.seed, **sharding)
    if stage.uniform_rounds:
        write_logs(
            simulator,
            ctx.out / "uniform",
            stage.uniform_rounds,
            policy=simulator.uniform_policy(),
            seed=ctx.config.seed + 1,
            uniform_fraction=0.0,
            **sharding,
        )
    ctx.node_ids["simulate"] = [
        shard["node_id"]
        for name in ("logs", "uniform")[: 2 if stage.uniform_rounds else 1]
        for shard in json.loads((ctx.out / name / storage.SUMMARY_FILE).read_text())["run"][
            "shards"
        ]
    ]
    ctx.simulator, ctx.logs = simulator, storage.read_logs(ctx.out / "logs")
    ctx.update_summary(
        preset=stage.preset,
        n_users=simulator.n_users,
        n_items=simulator.n_items,
        slate_size=simulator.slate_size,
        n_rounds=stage.rounds,
        uniform_rounds=stage.uniform_rounds,
        oracle_value=simulator.oracle_value(),
        logging_value=simulator.policy_value(simulator.logging_policy()),
        selected=None,
        truly_best=None,
        selection_regret=None,
    )
    storage.write_json_atomic(ctx.out / "causal_graph.json", simulator.causal_graph().to_dict())


def tune(ctx: RunContext) -> None:
    """The search (``tune/``, with ``candidates/METHOD/``) and ``candidates.csv``."""
    from causalrec.tuning.runner import tune_recommenders

    # Tune warns whenever syncing its experiment state takes > 5 s (slow disks, busy CPUs);
    # the pipeline reports its own progress, so keep the console to that.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    tuning = ctx.tuning.model_copy(update={"export_candidates": True})
    result = tune_recommenders(
        ctx.logs,
        tuning,
        ctx.out / "tune",
        address=ctx.address,
        simulator=ctx.simulator,
        verbose=0,
    )
    ctx.validation, ctx.candidates, ctx.best = result.validation, result.candidates, result.best
    ctx.node_ids["tune"] = [node or None for node in result.results["node_id"]]
    metric = tuning.objective.metric
    oracle = ctx.simulator.oracle_value()
    rows = []
    for name, saved in sorted(result.candidates.items()):
        record = saved.training_record
        true_value = record["metrics"]["ground_truth"]
        rows.append(
            {
                "candidate": name,
                "method": record["method"],
                "trial_id": record["trial_id"],
                "params": json.dumps(record["params"], sort_keys=True),
                "true_value": true_value,
                "regret": oracle - true_value,
                metric: record["metrics"][metric],
            }
        )
    frame = pd.DataFrame(rows)
    summary = result.summary
    selected = summary["selected"]
    frame["selected"] = frame["trial_id"] == (selected or {}).get("trial_id")
    storage.write_csv_atomic(ctx.out / "candidates.csv", frame)

    def brief(trial):
        if trial is None:
            return None
        return {
            "candidate": trial["method"],
            "method": trial["method"],
            "true_value": trial["ground_truth"],
            "ope_dr": trial["ope_dr"],
        }

    rules = {
        rule: {
            "method": choice["method"],
            "value": choice["value"],
            "true_value": choice["ground_truth"],
            "regret": choice["selection_regret"],
        }
        for rule, choice in summary["selection_rules"].items()
    }
    ctx.update_summary(
        selected=brief(selected),
        truly_best=brief(summary["truly_best"]),
        selection_regret=summary["selection_regret"],
        selection_metric=metric,
        selection_rules=rules,
        n_trials=summary["n_trials"],
        search_seconds=summary["timing"]["search_seconds"],
    )


def deploy(ctx: RunContext) -> str | None:
    """The experiment on Ray Serve: baseline (arm a) vs. the winner (``tune/best``, arm b).

    Returns ``"skipped"`` with ``serve.deploy: false``.
    """
    from ray import serve

    from causalrec.platform.runtime import free_port, init_ray
    from causalrec.serve.app import build_app

    stage, ab = ctx.config.serve, ctx.config.abtest
    if not stage.deploy:
        return "skipped"
    args = stage.app_args(
        ctx.out,
        baseline_dir=ctx.candidates[ab.baseline].path,
        treatment_dir=ctx.best.path,
        salt=ab.salt,
    )
    application = build_app(args)
    init_ray(ctx.address)
    port = stage.port or free_port(stage.host)
    serve.start(http_options={"host": stage.host, "port": port})
    serve.run(application, name="causalrec", route_prefix="/")
    ctx.url = f"http://{stage.host}:{port}"
    storage.write_json_atomic(
        ctx.out / "serve" / "deployment.json", {"url": ctx.url, "args": args.model_dump()}
    )


def abtest(ctx: RunContext) -> None:
    """Winner vs. baseline (``abtest/``), through the deployment unless ``via: in-process``."""
    from causalrec.abtest import resolve_arm, run_abtest
    from causalrec.serve.routing import ExperimentSplit

    ab = ctx.config.abtest
    arms = {
        "a": resolve_arm("a", str(ctx.candidates[ab.baseline].path), ctx.logs, ctx.simulator),
        "b": resolve_arm("b", str(ctx.best.path), ctx.logs, ctx.simulator),
    }
    run_abtest(
        arms,
        ctx.simulator,
        ab.users,
        ctx.out / "abtest",
        logs=ctx.validation,
        url=ctx.url if ab.via == "http" else None,
        split=ExperimentSplit(ab.salt),
        seed=ctx.config.seed,
        alpha=ab.alpha,
        offline_estimator=ab.estimator,
    )


def ope(ctx: RunContext) -> None:
    """Every candidate with every estimator, on the held-out rounds and the uniform slice.

    Writes ``ope.csv`` (held-out confounded rounds) and ``ope_uniform.csv`` (uniform slice):
    one row per candidate and estimator, with the estimate, its interval, diagnostics, the
    candidate's exact value and the error; and ``sensitivity.json``, the selected candidate's
    bounds against Γ on the held-out rounds (:func:`_sensitivity`).
    """
    from causalrec.ope import OfflineEvaluator

    stage = ctx.config.ope
    policies = {
        name: saved.policy(ctx.simulator.slate_size) for name, saved in ctx.candidates.items()
    }
    truth = {name: ctx.simulator.policy_value(policy) for name, policy in policies.items()}
    sources = {"ope.csv": ctx.validation}
    if (ctx.out / "uniform").exists():
        sources["ope_uniform.csv"] = storage.read_logs(ctx.out / "uniform")
    for filename, logs in sources.items():
        evaluator = OfflineEvaluator(logs, stage.estimators, reward_model=stage.reward_model)
        frames = []
        for name, policy in policies.items():
            frame = evaluator.evaluate(policy, warn=False)
            frame["estimator"] = _short_names(evaluator.estimators)
            frame.insert(0, "candidate", name)
            for unit in frame["unit"].unique():
                check_same_unit(f"{filename}: the estimates of {name}", unit, truth[name].unit)
            frame["true_value"] = truth[name]
            frame["error"] = frame["estimate"] - truth[name]
            frames.append(frame)
        storage.write_csv_atomic(ctx.out / filename, pd.concat(frames, ignore_index=True))
        if filename == "ope.csv":
            _sensitivity(ctx, policies, truth, evaluator)


def _sensitivity(ctx: RunContext, policies: dict, truth: dict, evaluator) -> None:
    """``sensitivity.json``: the selected candidate's SNIPS bounds at each Γ, and the truth.

    On the held-out confounded rounds, with the propensities of ``ope.csv``; 200 bootstrap
    resamples keep it to a fraction of a second. The world's true Γ (its logger's propensities
    against those given the observed features) is added for worlds of single items.
    """
    from causalrec.ope.sensitivity import SENSITIVITY_GAMMAS, sensitivity_curve
    from causalrec.platform.errors import ConfigError

    summary = json.loads((ctx.out / "summary.json").read_text())
    name = (summary.get("selected") or {}).get("candidate")
    if name not in policies:
        return
    curve = sensitivity_curve(
        ctx.validation, policies[name], SENSITIVITY_GAMMAS, pscore=evaluator.pscore,
        n_bootstrap=200, seed=ctx.config.seed,
    )  # fmt: skip
    check_same_unit("sensitivity.json: the bounds", curve[0].unit, truth[name].unit)
    try:
        gamma = ctx.simulator.true_sensitivity_gamma(n_draws=1024)
        true_gamma = {"gamma": gamma.gamma, "standard_error": gamma.standard_error}
        true_gamma |= {"exact": gamma.exact, "n_draws": gamma.n_draws}
    except ConfigError:  # slates with hidden confounding: not integrated
        true_gamma = None
    keep = ("gamma", "estimate", "lower", "upper", "lower_bootstrap", "upper_bootstrap")
    storage.write_json_atomic(
        ctx.out / "sensitivity.json",
        {
            "candidate": name,
            "estimator": "snips",
            "unit": curve[0].unit,
            "pscore": evaluator.pscore_source,
            "alpha": curve[0].alpha,
            "n_bootstrap": curve[0].n_bootstrap,
            "n_rounds": curve[0].n_rounds,
            "true_value": float(truth[name]),
            "true_gamma": true_gamma,
            "curve": [{key: getattr(point, key) for key in keep} for point in curve],
        },
    )


def report(ctx: RunContext) -> None:
    """``report.md``, ``report.html`` and ``figures/``."""
    from causalrec.pipeline.report import write_report

    write_report(ctx.out)


def _short_names(estimators) -> list[str]:
    """Estimator names (``dr``), or their full specs where two share a name."""
    names = [estimator.name for estimator in estimators]
    return [n if names.count(n) == 1 else repr(e) for n, e in zip(names, estimators, strict=True)]


#: The stages in order, by name.
STAGES = {
    "simulate": simulate,
    "tune": tune,
    "deploy": deploy,
    "abtest": abtest,
    "ope": ope,
    "report": report,
}
