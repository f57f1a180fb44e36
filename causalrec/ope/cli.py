"""``causalrec evaluate`` and ``causalrec ope-bench``."""

from __future__ import annotations

import argparse
import json
import math
import warnings

import numpy as np
import pandas as pd

from causalrec.ope.bench import run_ope_bench, write_bench
from causalrec.ope.cluster_inputs import item_clusters_from_features
from causalrec.ope.evaluate import DEFAULT_ESTIMATORS, OfflineEvaluator, OverlapWarning
from causalrec.ope.evaluate_sessions import evaluate_sessions
from causalrec.ope.reward_model import RewardModelConfig
from causalrec.ope.sensitivity import SensitivityBounds, sensitivity_bounds
from causalrec.ope.sharded import BATCH_ROWS, REWARD_SAMPLE_ROUNDS
from causalrec.platform.cli_help import DefaultsHelpFormatter
from causalrec.platform.config import list_presets
from causalrec.platform.errors import ConfigError
from causalrec.platform.storage import check_output_dir, log_files, read_logs
from causalrec.simulators import load_simulator_config

__all__ = ["register"]

_COLUMNS = ["estimator", "estimate", "low", "high", "ess_share", "max_weight", "clipped_share"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the OPE subcommands."""
    evaluate_parser = subparsers.add_parser(
        "evaluate",
        help="estimate a policy's value from logs (off-policy evaluation)",
        description=(
            "Estimate the value (mean clicks per impression, or per slate for slate estimators) "
            "of a target policy from logged feedback, with confidence intervals and overlap "
            "diagnostics. Policies: 'uniform', 'empirical:LOG_DIR' (the item-position "
            "frequencies of another log), and for simulated logs 'logging', 'oracle', "
            "'softmax:T', 'epsilon_greedy:E'."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    evaluate_parser.add_argument("--logs", required=True, help="log directory to evaluate on")
    evaluate_parser.add_argument("--policy", required=True, help="target policy spec")
    evaluate_parser.add_argument(
        "--sessions",
        action="store_true",
        help=(
            "evaluate whole sessions of a session log (causalrec simulate --sessions): "
            "clicks per session by pdis, wpdis, dr and wdr; dr/wdr use fitted Q evaluation "
            "('--reward-model none' skips them)"
        ),
    )
    _add_estimation_options(evaluate_parser)
    evaluate_parser.add_argument(
        "--sensitivity",
        type=float,
        default=None,
        metavar="GAMMA",
        help=(
            "also bound the value if the propensities' odds may be off by up to a factor "
            "GAMMA >= 1 (hidden confounding; marginal sensitivity model): sharp bounds of the "
            "SNIPS estimate and their percentile-bootstrap widening at --alpha"
        ),
    )
    evaluate_parser.add_argument(
        "--logging-policy",
        default=None,
        help="spec of the policy that wrote the log ('logging' for simulated logs): the "
        "cluster weights of mips, snmips and offcem need its whole distribution",
    )
    sharded = evaluate_parser.add_argument_group(
        "sharded evaluation (logs larger than memory: Ray Data over the Parquet parts)"
    )
    sharded.add_argument(
        "--sharded",
        action="store_true",
        help="evaluate shard by shard with Ray Data without loading the log (estimators among "
        "dm, ips, snips, dr, sndr, switch_dr, dros, sips, iips, rips; equal to the in-memory "
        "estimates for the same reward model; --interval bootstrap is a Poisson bootstrap)",
    )
    sharded.add_argument(
        "--workers", type=int, default=None, help="batches at once (default: the cluster's CPUs)"
    )
    sharded.add_argument(
        "--batch-rows",
        type=int,
        default=BATCH_ROWS,
        help="rows a task reads from its part file at a time",
    )
    sharded.add_argument(
        "--reward-sample-rounds",
        type=int,
        default=REWARD_SAMPLE_ROUNDS,
        help="rounds the reward model is fitted on (a hash-chosen sample)",
    )
    sharded.add_argument(
        "--n-bootstrap", type=int, default=1000, help="Poisson bootstrap replicates"
    )
    sharded.add_argument("--address", default=None, help="Ray cluster (or RAY_ADDRESS)")
    evaluate_parser.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate_parser.set_defaults(handler=run_evaluate)

    bench = subparsers.add_parser(
        "ope-bench",
        help="measure every estimator against the simulator's exact policy value",
        description=(
            "Simulate logs of several sizes and seeds, evaluate a target policy with every "
            "estimator, and compare with its exact value: mean relative error, MSE and the "
            "empirical coverage of the intervals. Writes runs.csv, summary.csv and "
            "error_vs_rounds.png to OUT."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    bench.add_argument(
        "--preset", default="confounded", help=f"one of {', '.join(list_presets('simulators'))}"
    )
    bench.add_argument("--config", default=None, help="simulator YAML instead of a preset")
    bench.add_argument("--rounds", default="1000,10000,100000", help="comma-separated log sizes")
    bench.add_argument("--seeds", type=int, default=20, help="logs per size")
    bench.add_argument("--policy", default="softmax:2", help="target policy spec")
    _add_estimation_options(bench)
    bench.add_argument("--out", default="runs/ope-bench", help="output directory")
    bench.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    bench.add_argument("--json", action="store_true", help="print the summary as JSON")
    bench.set_defaults(handler=run_bench)


def _add_estimation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--estimators",
        default=None,
        help=f"comma-separated specs, e.g. 'ips:clip=100,snips,dr,ips_slope:clips=10|100|inf' "
        f"(default: {','.join(DEFAULT_ESTIMATORS)}, plus iips,rips,sips for slates), or 'auto': "
        "every candidate, the one off-policy cross-validation chooses from the log marked",
    )
    parser.add_argument(
        "--item-clusters",
        type=int,
        default=None,
        metavar="N",
        help="N k-means clusters of the log's item features for mips, snmips and offcem "
        "(added to 'auto' when given)",
    )
    parser.add_argument(
        "--reward-model",
        default="logistic",
        choices=["logistic", "hgb", "mlp", "none"],
        help="reward model of DM and the DR family (cross-fitted); 'none' skips them",
    )
    parser.add_argument("--alpha", type=float, default=0.05, help="1 - confidence level")
    parser.add_argument(
        "--interval",
        default="normal",
        choices=["normal", "bootstrap", "studentized", "betting"],
        help="interval method",
    )


def _item_clusters(args: argparse.Namespace, logs) -> np.ndarray | None:
    """``--item-clusters N``: k-means clusters of the log's item features, or ``None``."""
    if args.item_clusters is None:
        return None
    if logs.item_table is None:
        raise ConfigError("--item-clusters needs item features; this log has none")
    if not 1 <= args.item_clusters <= logs.n_items:
        raise ConfigError(
            f"--item-clusters must be in [1, n_items={logs.n_items}]; got {args.item_clusters}"
        )
    return item_clusters_from_features(logs.item_table, args.item_clusters)


def _reward_model(args: argparse.Namespace) -> RewardModelConfig | None:
    return None if args.reward_model == "none" else RewardModelConfig(kind=args.reward_model)


def run_evaluate(args: argparse.Namespace) -> int:
    """Handler of ``causalrec evaluate``."""
    # The CLI is an entrypoint (platform.cli registers every command): it may resolve a saved
    # model directory, which the ope library itself never imports.
    from causalrec.methods.policy_spec import resolve_policy

    gamma = args.sensitivity
    if gamma is not None:
        if args.sessions:
            raise ConfigError("--sensitivity is not available with --sessions")
        if not (math.isfinite(gamma) and gamma >= 1):
            raise ConfigError(f"--sensitivity must be a finite number >= 1 (Γ); got {gamma}")
    if args.sharded:
        return _run_evaluate_sharded(args)
    logs = read_logs(args.logs)
    policy = resolve_policy(args.policy, logs=logs).policy
    if args.sessions:
        return _run_evaluate_sessions(args, logs, policy)
    logging_policy = None
    if args.logging_policy is not None:
        logging_policy = resolve_policy(args.logging_policy, logs=logs).policy
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OverlapWarning)
        evaluator = OfflineEvaluator(
            logs,
            args.estimators,
            reward_model=_reward_model(args),
            logging_policy=logging_policy,
            item_clusters=_item_clusters(args, logs),
        )
        table = evaluator.evaluate(policy, alpha=args.alpha, interval=args.interval)
    bounds = None
    if gamma is not None:  # on the propensities the table used (logged, else estimated)
        bounds = sensitivity_bounds(logs, policy, gamma, pscore=evaluator.pscore, alpha=args.alpha)
    if args.json:
        payload = {"logs": args.logs, "policy": args.policy, "n_rows": logs.n_rows}
        payload["results"] = table.to_dict(orient="records")
        if bounds is not None:
            payload["sensitivity"] = {"estimator": "snips", **bounds.to_dict()}
        print(json.dumps(payload))
        return 0
    columns = _COLUMNS + (["selected", "cv_score"] if "selected" in table else [])
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    first = table.iloc[0]
    if "selected" in table:
        chosen = table[table["selected"]].iloc[0]
        print(f"\nauto: {chosen['estimator']} = {chosen['estimate']:.4g} clicks per round")
        print(f"    why: {chosen['selection_reason']}")
    print(f"\nrows: {logs.n_rows:,}   pscore: {first['pscore']}")
    print(f"reward model: {first['reward_model']}")
    if bounds is not None:
        print(_sensitivity_lines(bounds))
    for warning in caught:
        print(f"warning: {warning.message}")
    return 0


def _run_evaluate_sharded(args: argparse.Namespace) -> int:
    """``causalrec evaluate --sharded``: Ray Data over the log's parts (ope.sharded)."""
    from causalrec.methods.policy_spec import resolve_policy
    from causalrec.ope.sharded import evaluate_dataset

    for flag in ("sessions", "sensitivity", "logging_policy", "item_clusters"):
        if getattr(args, flag) not in (None, False):
            raise ConfigError(f"--{flag.replace('_', '-')} is not available with --sharded")
    if args.interval not in ("normal", "bootstrap"):
        raise ConfigError(
            f"--interval {args.interval} is not available with --sharded; use normal or bootstrap"
        )
    # The policy is resolved against the log's first part (its metadata names the world).
    head = read_logs(log_files(args.logs)[0])
    policy = resolve_policy(args.policy, logs=head).policy
    table = evaluate_dataset(
        args.logs,
        policy,
        args.estimators,
        reward_model=_reward_model(args),
        reward_sample_rounds=args.reward_sample_rounds,
        alpha=args.alpha,
        n_bootstrap=args.n_bootstrap if args.interval == "bootstrap" else 0,
        batch_rows=args.batch_rows,
        workers=args.workers,
        address=args.address,
    )
    if args.json:
        payload = {"logs": args.logs, "policy": args.policy, "sharded": True}
        payload["results"] = table.to_dict(orient="records")
        print(json.dumps(payload))
        return 0
    columns = ["estimator", "estimate", "low", "high"]
    if args.interval == "bootstrap":
        columns += ["boot_low", "boot_high"]
    columns += ["ess_share", "max_weight"]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    first = table.iloc[0]
    print(
        f"\nrows: {first['n_rows']:,}   rounds: {first['n_rounds']:,}   part files: "
        f"{first['n_parts']} on {first['nodes']} node(s)   unit: clicks per round"
    )
    if first["reward_sample_rounds"]:
        print(f"reward model: {args.reward_model}, fitted on {first['reward_sample_rounds']:,} "
              "sampled rounds")  # fmt: skip
    return 0


def _sensitivity_lines(bounds: SensitivityBounds) -> str:
    level = f"{1 - bounds.alpha:.0%}"
    return (
        f"sensitivity at Γ = {bounds.gamma:g} (propensity odds off by up to {bounds.gamma:g}x; "
        f"snips {bounds.estimate:.4g}, clicks per round):\n"
        f"    bounds [{bounds.lower:.4g}, {bounds.upper:.4g}]   with sampling uncertainty "
        f"({level} percentile bootstrap, {bounds.n_bootstrap} resamples) "
        f"[{bounds.lower_bootstrap:.4g}, {bounds.upper_bootstrap:.4g}]"
    )


def _run_evaluate_sessions(args: argparse.Namespace, logs, policy) -> int:
    """``causalrec evaluate --sessions``: sequential estimators in clicks per session."""
    if args.interval not in ("normal", "bootstrap"):
        raise ConfigError(
            f"--interval {args.interval} is not available with --sessions; use normal or bootstrap"
        )
    estimators = args.estimators
    if estimators is None:
        estimators = "pdis,wpdis" if args.reward_model == "none" else None
    table = evaluate_sessions(
        logs, policy, estimators, alpha=args.alpha, interval=args.interval, warn=False
    )
    if args.json:
        payload = {"logs": args.logs, "policy": args.policy, "n_rows": logs.n_rows}
        print(json.dumps({**payload, "results": table.to_dict(orient="records")}))
        return 0
    columns = ["estimator", "estimate", "low", "high", "ess_share", "max_weight"]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    first = table.iloc[0]
    sessions, steps = int(first["n_sessions"]), int(first["horizon"])
    print(f"\nunit: clicks per session   sessions: {sessions:,}   steps: {steps}")
    print(f"Q model: {', '.join(sorted(set(table['q_model']) - {'none'})) or 'none'}")
    if first["warning"]:
        print(f"warning: {first['warning']}")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    """Handler of ``causalrec ope-bench``."""
    try:
        rounds = [int(value) for value in args.rounds.split(",") if value.strip()]
    except ValueError:
        raise ConfigError(
            f"--rounds must be comma-separated integers; got {args.rounds!r}"
        ) from None
    check_output_dir(args.out, overwrite=args.overwrite)
    config = load_simulator_config(preset=None if args.config else args.preset, path=args.config)
    result = run_ope_bench(
        config,
        rounds=rounds,
        seeds=args.seeds,
        policy=args.policy,
        estimators=args.estimators,
        reward_model=_reward_model(args),
        alpha=args.alpha,
        n_clusters=args.item_clusters,
        progress=not args.json,
    )
    files = write_bench(result, args.out, overwrite=args.overwrite)
    if args.json:
        print(
            json.dumps(
                {
                    "policy": result.policy,
                    "truth": result.truth,
                    "files": [str(f) for f in files],
                    "summary": result.summary.to_dict(orient="records"),
                }
            )
        )
        return 0
    columns = ["rounds", "estimator", "relative_error", "rmse", "coverage", "width", "runs"]
    print(f"target {result.policy}: exact value {result.truth:.4f}")
    print(result.summary[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print("\nwrote " + ", ".join(str(f) for f in files))
    return 0
