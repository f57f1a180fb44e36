"""``causalrec import-obd``: convert the Open Bandit Dataset into a causalrec log directory."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from causalrec.platform.cli_help import DefaultsHelpFormatter
from causalrec.platform.obd import CAMPAIGNS, POLICIES, read_obd, write_obd
from causalrec.platform.storage import check_output_dir
from causalrec.platform.validation import unknown_name_error

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the data-import subcommands."""
    parser = subparsers.add_parser(
        "import-obd",
        help="convert an Open Bandit Dataset log into a causalrec log directory",
        description=(
            "Convert one log of the Open Bandit Dataset (ZOZO, Inc.; Saito et al., NeurIPS 2021; "
            "CC BY 4.0) into a causalrec log directory: OUT/logs/part-00000.parquet (one row per "
            "impression, 0-based positions, the logged item-position propensities), "
            "OUT/items.parquet (item features) and OUT/summary.json. User features are one-hot "
            "hashed user features (vocabulary shared by the random and bts logs of the campaign, "
            "so both logs have the same columns) followed by the user-item affinities. DATA must "
            "hold <policy>/<campaign>/<campaign>.csv and item_context.csv for both policies. "
            "Prints a summary: rows, clicks, CTR, items, positions, mean and max 1/pscore."
        ),
        epilog="Example: causalrec import-obd --data ../shared/data/obd --policy bts --out obd_bts",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument(
        "--data", required=True, help="OBD directory (holding random/ and bts/ folders)"
    )
    parser.add_argument(
        "--policy", required=True, help=f"logging policy to convert: one of {', '.join(POLICIES)}"
    )
    parser.add_argument(
        "--campaign", default="all", help=f"campaign: one of {', '.join(CAMPAIGNS)}"
    )
    parser.add_argument("--out", required=True, help="output directory (must be empty or new)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.set_defaults(handler=run_import_obd)


def run_import_obd(args: argparse.Namespace) -> int:
    """Handler of ``causalrec import-obd``."""
    if args.policy not in POLICIES:
        raise unknown_name_error("OBD policy", args.policy, POLICIES)
    if args.campaign not in CAMPAIGNS:
        raise unknown_name_error("OBD campaign", args.campaign, CAMPAIGNS)
    check_output_dir(args.out, overwrite=args.overwrite)  # refuse before any work
    started = time.perf_counter()
    log = read_obd(args.data, policy=args.policy, campaign=args.campaign)
    summary = write_obd(log, args.out, overwrite=args.overwrite)
    elapsed = time.perf_counter() - started
    if args.json:
        print(json.dumps({**summary, "out": str(args.out), "seconds": round(elapsed, 3)}))
    else:
        print(_format_summary(summary, args.out, elapsed))
    return 0


def _format_summary(summary: dict[str, Any], out: str, elapsed: float) -> str:
    rows = [
        ("logging policy / campaign", f"{summary['policy']} / {summary['campaign']}"),
        ("rows (impressions = rounds)", f"{summary['rows']:,}"),
        ("clicks", f"{summary['clicks']:,}"),
        ("CTR (clicks / impression)", f"{summary['ctr']:.4f}"),
        ("items", f"{summary['items']}"),
        ("positions", f"{summary['positions']}"),
        ("user features", f"{summary['user_features']}"),
        ("mean 1 / pscore", f"{summary['mean_inverse_pscore']:,.1f}"),
        ("max 1 / pscore", f"{summary['max_inverse_pscore']:,.1f}"),
        ("seconds", f"{elapsed:.2f}"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join([f"wrote {out}"] + [f"  {name:<{width}}  {value}" for name, value in rows])
