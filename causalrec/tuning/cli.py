"""``causalrec tune``: search methods and hyperparameters with Ray Tune, export the winner."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

from causalrec.platform.cli_help import DefaultsHelpFormatter
from causalrec.platform.config import config_dir, load_yaml_config
from causalrec.platform.storage import read_logs
from causalrec.tuning.config import TRACKERS, TuningConfig

__all__ = ["leaderboard", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``causalrec tune``."""
    parser = subparsers.add_parser(
        "tune",
        help="search debiasing methods and hyperparameters with Ray Tune",
        description=(
            "Run a Ray Tune search (Optuna TPE or random, ASHA early stopping) over the methods "
            "and hyperparameters of a tuning config, select by the DR estimate on a validation "
            "split (or the simulator's exact value), and write OUT/results.parquet, "
            "OUT/results.csv, OUT/summary.json and the winner in OUT/best/. On simulated logs "
            "the selection regret (exact value of the truly best trial minus that of the "
            "selected one) is reported. Joins the Ray cluster at --address or RAY_ADDRESS, "
            "otherwise starts a local Ray."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--logs", required=True, help="log directory to learn from")
    parser.add_argument(
        "--config",
        default=str(config_dir() / "tuning" / "default.yaml"),
        help="tuning config YAML (configs/tuning/*.yaml)",
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--address", default=None, help="Ray cluster address (or RAY_ADDRESS)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the interrupted search in OUT"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--tracking",
        choices=TRACKERS,
        default=None,
        help="experiment tracking of the trials (default: the config's `tracking`); mlflow "
        "needs `pip install 'causalrec[mlflow]'`",
    )
    parser.set_defaults(handler=run_tune)


def leaderboard(results: pd.DataFrame, metric: str, per_method: int = 3) -> str:
    """The top ``per_method`` trials of each method by ``metric``, best method first."""
    if results.empty:
        return "no trials"
    ranked = results.sort_values(metric, ascending=False, na_position="last")
    top = ranked.groupby("method", sort=False).head(per_method)
    lines = [
        f"{'method':<10} {'trial':<14} {metric:>9} {'exact':>7} {'epochs':>6} {'train s':>8} status"
    ]
    for row in top.itertuples():
        exact = row.ground_truth
        lines.append(
            f"{row.method:<10} {row.trial_id:<14} {getattr(row, metric):>9.4f} "
            f"{'n/a' if math.isnan(exact) else f'{exact:.4f}':>7} {row.epochs:>6} "
            f"{row.train_seconds:>8.1f} {row.status}"
        )
    return "\n".join(lines)


def run_tune(args: argparse.Namespace) -> int:
    """Handler of ``causalrec tune``."""
    from causalrec.methods.registry import RECOMMENDERS
    from causalrec.platform.errors import SearchInterruptedError
    from causalrec.tuning.runner import tune_recommenders
    from causalrec.tuning.space import validate_space

    config = load_yaml_config(args.config, TuningConfig)
    if args.tracking is not None:
        config = config.replace(tracking=args.tracking)
    validate_space(config, RECOMMENDERS)  # before reading the log or starting Ray
    # Above data.stream_above_rows the search reads the log's files itself (only the validation
    # rounds into memory): hand it the path.
    logs = args.logs if config.data.stream_above_rows is not None else read_logs(args.logs)
    try:
        result = tune_recommenders(
            logs,
            config,
            args.out,
            address=args.address,
            resume=args.resume,
            overwrite=args.overwrite,
            verbose=0 if args.json else 1,
        )
    except SearchInterruptedError as exc:
        print(f"causalrec tune: interrupted: {exc}", file=sys.stderr)
        return 130
    summary = result.summary
    if args.json:
        print(json.dumps({**summary, "out": str(Path(args.out).absolute())}))
        return 0
    metric = summary["selection_metric"]
    print(f"\n{summary['n_trials']} trials ({summary['status_counts']}); selection by {metric}")
    print(leaderboard(result.results, metric))
    selected, best = summary["selected"], summary["truly_best"]
    if selected is None:
        print("no trial produced a usable model")
        return 1
    print(f"\nselected: {selected['method']} {selected['params']} -> {result.best_dir}")
    if best is not None:
        print(
            f"exact value of the selected model {selected['ground_truth']:.4f}; truly best "
            f"trial {best['ground_truth']:.4f} ({best['method']}); selection regret "
            f"{summary['selection_regret']:.4f}; oracle {summary['oracle_value']:.4f}, logging "
            f"policy {summary['logging_value']:.4f} (clicks per round)"
        )
        for rule, choice in summary["selection_rules"].items():
            print(
                f"  by {rule:13s} {choice['method']:12s} exact {choice['ground_truth']:.4f}, "
                f"regret {choice['selection_regret']:.4f} clicks per round"
            )
    if config.tracking == "mlflow":
        from causalrec.tuning.tracking import tracking_store

        print(f"MLflow runs: {tracking_store(args.out)[0]}")
    return 0
