"""``causalrec train``: fit a recommender on a log, save it, and report how good it is."""

from __future__ import annotations

import argparse
import json
import time

import yaml

from causalrec.methods.artifact import SavedModel
from causalrec.methods.metrics import evaluate_recommender
from causalrec.methods.registry import RECOMMENDERS, make_recommender
from causalrec.platform import storage
from causalrec.platform.cli_help import DefaultsHelpFormatter
from causalrec.platform.errors import ConfigError
from causalrec.platform.storage import read_logs

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``causalrec train``."""
    parser = subparsers.add_parser(
        "train",
        help="train a (debiasing) recommender on a log and report its value",
        description=(
            "Fit a recommender on all but a held-out slice of the log's rounds, save it to OUT "
            "(weights + manifest.json + metrics.json) and report: the exact value of its top-K "
            "policy and the regret to the oracle (simulated logs), AUC and NDCG@K on a fresh "
            "uniform-random log (simulated logs), and the DR estimate of its value on the "
            "held-out slice."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--logs", required=True, help="log directory")
    parser.add_argument("--method", required=True, help=f"one of {', '.join(RECOMMENDERS)}")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method parameter, e.g. --set epochs=20 --set propensity=popularity",
    )
    parser.add_argument("--holdout", type=float, default=0.2, help="share of rounds held out")
    parser.add_argument("--out", required=True, help="output directory for the model")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=run_train)


def parse_assignments(assignments: list[str]) -> dict:
    """``["epochs=20", "propensity=popularity"]`` to typed values (YAML scalars)."""
    params = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE; got {assignment!r}")
        params[key.strip()] = yaml.safe_load(value)
    return params


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``causalrec train``."""
    if not 0 < args.holdout < 1:
        raise ConfigError(f"--holdout must be in (0, 1); got {args.holdout}")
    model = make_recommender(args.method, **parse_assignments(args.set))  # fail fast
    storage.check_output_dir(args.out, overwrite=args.overwrite)
    logs = read_logs(args.logs)
    train, holdout = logs.split_by_round(args.holdout)
    started = time.perf_counter()
    model.fit(train)
    seconds = time.perf_counter() - started
    report = evaluate_recommender(model, holdout)
    payload = {
        "method": args.method,
        "params": model.get_params(),
        "train_rows": train.n_rows,
        "holdout_rows": holdout.n_rows,
        "train_seconds": round(seconds, 3),
        **report.to_dict(),
    }
    SavedModel.write(args.out, model, metrics=payload, overwrite=args.overwrite)
    if args.json:
        print(json.dumps(payload))
        return 0
    print(f"trained {model!r} on {train.n_rows:,} rows in {seconds:.1f} s; saved to {args.out}")
    for key in ("policy_value", "logging_value", "oracle_value", "regret", "auc", "ndcg"):
        value = payload[key]
        print(f"  {key:<14} {'n/a (real logs)' if value is None else f'{value:.4f}'}")
    low, high = payload["dr_interval"]
    print(f"  {'dr_estimate':<14} {payload['dr_estimate']:.4f}  [{low:.4f}, {high:.4f}] (held out)")
    return 0
