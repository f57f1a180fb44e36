"""``causalrec pipeline``: the platform's main job, end to end (see :mod:`.runner`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from causalrec.platform.cli_help import DefaultsHelpFormatter
from causalrec.platform.config import config_dir
from causalrec.tuning.config import TRACKERS

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``causalrec pipeline``."""
    parser = subparsers.add_parser(
        "pipeline",
        help="end to end: simulate, tune, deploy, A/B test, evaluate off-policy, report",
        description=(
            "Simulate confounded logs and a uniform slice, tune the methods with Ray Tune, "
            "deploy baseline vs. winner as an A/B experiment on Ray Serve, run the A/B test "
            "through HTTP with clicks from the simulator, evaluate every candidate with every "
            "off-policy estimator against the exact values, and write OUT/report.md and "
            "OUT/report.html with figures. Joins RAY_ADDRESS (or --address) or starts a local "
            "Ray; runs unchanged under `ray job submit`."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument(
        "--config",
        default=str(config_dir() / "pipeline" / "quick.yaml"),
        help="pipeline config YAML (configs/pipeline/*.yaml)",
    )
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--address", default=None, help="Ray cluster address (or RAY_ADDRESS)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    parser.add_argument(
        "--keep-serving",
        action="store_true",
        help="leave the A/B deployment running (on a local Ray: until Ctrl-C)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show Ray's, Tune's and Serve's output live (by default it goes to OUT/pipeline.log "
        "and the console shows one line per stage)",
    )
    parser.add_argument(
        "--tracking",
        choices=TRACKERS,
        default=None,
        help="experiment tracking of the search's trials (default: the tuning config's "
        "`tracking`); mlflow needs `pip install 'causalrec[mlflow]'`",
    )
    parser.set_defaults(handler=run_pipeline_command)


def run_pipeline_command(args: argparse.Namespace) -> int:
    """Handler of ``causalrec pipeline``."""
    from causalrec.pipeline.config import load_pipeline_config
    from causalrec.pipeline.runner import LOG_FILE, run_pipeline, summary_lines

    config, tuning = load_pipeline_config(args.config)
    if args.tracking is not None:
        tuning = tuning.replace(tracking=args.tracking)
    started = time.monotonic()
    record = run_pipeline(
        config,
        tuning,
        args.out,
        config_path=args.config,
        address=args.address,
        overwrite=args.overwrite,
        keep_serving=args.keep_serving,
        verbose=args.verbose,
        log=lambda line: print(line, flush=True),
    )
    for line in summary_lines(args.out):
        print(line)
    if not args.verbose:
        print(f"log of Ray, Tune and Serve: {Path(args.out).absolute() / LOG_FILE}")
    print(f"pipeline finished in {time.monotonic() - started:.0f} s")
    if args.keep_serving and record.get("url"):
        _serve_until_interrupted(record["url"], args.address)
    return 0


def _serve_until_interrupted(url: str, address: str | None) -> None:
    """Keep a local Ray (and its deployment) alive; on a cluster the deployment stays anyway."""
    import os

    from causalrec.serve.cli import serve_until_interrupted

    if address or os.environ.get("RAY_ADDRESS"):
        print(f"the experiment stays deployed at {url} on the cluster (serve shutdown to stop)")
        return
    print(f"serving at {url}")
    serve_until_interrupted()
