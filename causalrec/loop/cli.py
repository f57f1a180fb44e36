"""``causalrec loop``: retraining strategies over generations in twin worlds (:mod:`.runner`)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from causalrec.platform.cli_help import DefaultsHelpFormatter
from causalrec.platform.config import config_dir

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``causalrec loop``."""
    parser = subparsers.add_parser(
        "loop",
        help="the closed loop: serve, log feedback, retrain, redeploy over generations",
        description=(
            "Run each arm (a retraining strategy or a fixed policy) in its own twin of a dynamic "
            "world, generation after generation: serve, log the clicks with propensities, "
            "retrain on all logs so far, redeploy. Records the rollout truth, CTR, long-tail "
            "exposure, coverage, Gini of exposure and interest homogenisation per generation, "
            "and the off-policy estimate of each next model before it is deployed; writes "
            "OUT/results.parquet and OUT/report.md / report.html with figures."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument(
        "--config",
        default=str(config_dir() / "loop" / "quick.yaml"),
        help="loop config YAML (configs/loop/*.yaml)",
    )
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument(
        "--serving",
        choices=["in_process", "http"],
        default=None,
        help="serve the retrained models in process or on Ray Serve through HTTP (default: "
        "the config's serving.mode)",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    group.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in OUT from each arm's last finished generation",
    )
    parser.set_defaults(handler=run_loop_command)


def run_loop_command(args: argparse.Namespace) -> int:
    """Handler of ``causalrec loop``."""
    from causalrec.loop.config import load_loop_config
    from causalrec.loop.report import summarise
    from causalrec.loop.runner import run_loop

    config = load_loop_config(args.config)
    if args.serving is not None:
        config = config.replace(serving={**config.serving.model_dump(), "mode": args.serving})
    started = time.monotonic()
    try:
        result = run_loop(
            config,
            args.out,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=lambda line: print(line, flush=True),
        )
    except KeyboardInterrupt:
        print(
            "causalrec loop: interrupted; finished generations are kept in "
            f"{args.out}; continue with: causalrec loop --config {args.config} --out {args.out} "
            "--resume",
            file=sys.stderr,
        )
        return 130
    last = result.results[result.results.generation == result.results.generation.max()]
    seeds = len(config.seeds)
    print(f"\ntrue clicks per session in the last generation (mean over {seeds} seeds):")
    for row in summarise(last, "truth", config.alpha).itertuples():
        print(f"  {row.arm:<16} {row.mean:.4f}  [{row.low:.4f}, {row.high:.4f}]")
    for failure in result.failures:
        print(
            f"failed: seed {failure['seed']} arm {failure['arm']} generation "
            f"{failure['generation']}: {failure['error']}",
            file=sys.stderr,
        )
    out = Path(args.out).absolute()
    print(f"report: {out / 'report.md'} (and report.html)")
    print(f"loop finished in {time.monotonic() - started:.0f} s")
    return 1 if result.failures else 0
