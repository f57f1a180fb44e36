"""``causalrec abtest``: a simulated A/B test, in-process or through a live Serve endpoint."""

from __future__ import annotations

import argparse
import json

from causalrec.abtest.formatting import format_result
from causalrec.platform.cli_help import DefaultsHelpFormatter

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``causalrec abtest``."""
    parser = subparsers.add_parser(
        "abtest",
        help="simulated A/B test of two models or policies, with the offline prediction",
        description=(
            "Draw user visits from the simulator behind --logs, assign users to arms by a "
            "salted hash of their id, serve each visit by its arm (in-process, or through the "
            "Serve application at --url whose ingress splits users), draw clicks from the "
            "simulator, and report per arm impressions, clicks, CTR, clicks per visit and the "
            "exact value; the lift (b - a) with its interval, p-value and minimum detectable "
            "effect; and the off-policy estimate of the same lift from --logs. Writes "
            "OUT/result.json, OUT/assignment.parquet and each arm's traffic as logs in OUT/a, "
            "OUT/b."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--a", required=True, help="control: a saved model dir or policy spec")
    parser.add_argument("--b", required=True, help="treatment: a saved model dir or policy spec")
    parser.add_argument("--users", type=int, required=True, help="user visits to simulate")
    parser.add_argument(
        "--logs", required=True, help="historical simulated logs (world and offline prediction)"
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--url", default=None, help="Serve application running the experiment (default: in-process)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of visits and clicks")
    parser.add_argument("--alpha", type=float, default=0.05, help="1 - confidence level")
    parser.add_argument("--salt", default="causalrec-ab", help="assignment salt (in-process)")
    parser.add_argument("--share-b", type=float, default=0.5, help="share of users in arm b")
    parser.add_argument("--estimator", default="dr", help="offline estimator: dr, ips or dm")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=run_abtest_command)


def run_abtest_command(args: argparse.Namespace) -> int:
    """Handler of ``causalrec abtest``."""
    from causalrec.abtest.arms import resolve_arm
    from causalrec.abtest.runner import run_abtest
    from causalrec.platform import storage
    from causalrec.serve.routing import ExperimentSplit
    from causalrec.simulators.world import simulator_from_logs

    storage.check_output_dir(args.out, overwrite=args.overwrite)
    split = ExperimentSplit(args.salt, args.share_b)
    logs = storage.read_logs(args.logs)
    simulator = simulator_from_logs(logs)
    arms = {
        "a": resolve_arm("a", args.a, logs, simulator),
        "b": resolve_arm("b", args.b, logs, simulator),
    }
    result = run_abtest(
        arms,
        simulator,
        args.users,
        args.out,
        logs=logs,
        url=args.url,
        split=split,
        seed=args.seed,
        alpha=args.alpha,
        offline_estimator=args.estimator,
        overwrite=args.overwrite,
        progress=not args.json,
    ).to_dict()
    print(json.dumps(result, indent=2) if args.json else format_result(result))
    return 0
