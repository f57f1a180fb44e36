"""OPE error and interval coverage against catalogue size, with exact truth.

Usage::

    python benchmarks/ope_catalogue.py                    # 100, 1,000, 10,000 items, 20 seeds
    python benchmarks/ope_catalogue.py --items 100 --seeds 3 --rounds 2000   # a quick look

For each catalogue size the ``confounded`` world (strongly confounded exposure, ε = 0.05
uniform, one item per round) is rebuilt with that many items; ``--seeds`` logs of ``--rounds``
rounds are simulated, and the ``softmax:T`` target (Plackett-Luce on the true relevance) is
evaluated by IPS, DR, MIPS, SNMIPS and OffCEM. MIPS, SNMIPS and OffCEM use ``--clusters``
k-means clusters of the observed item features (fixed before any result was seen) and the
world's logging policy; DR and OffCEM share the cross-fitted logistic reward model. Each
estimate is compared with the simulator's exact value of the target, in clicks per round.

Writes ``runs.csv``, ``summary.csv`` and ``catalogue.png`` to ``--out`` and prints the summary
table (mean relative error, RMSE, bias, coverage of 95% normal intervals, mean width).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from causalrec.ope.bench import run_ope_bench
from causalrec.platform import storage
from causalrec.simulators import load_simulator_config

ESTIMATORS = ["ips", "dr", "mips", "snmips", "offcem"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", default="100,1000,10000", help="catalogue sizes")
    parser.add_argument("--rounds", type=int, default=10_000, help="rounds per log")
    parser.add_argument("--seeds", type=int, default=20, help="logs per catalogue size")
    parser.add_argument("--users", type=int, default=2_000, help="users in the world")
    parser.add_argument("--clusters", type=int, default=32, help="item clusters for MIPS/OffCEM")
    parser.add_argument("--policy", default="softmax:2", help="target policy spec")
    parser.add_argument("--out", default="runs/ope-catalogue", help="output directory")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    args = parser.parse_args()

    summaries, runs = [], []
    for n_items in (int(v) for v in args.items.split(",")):
        config = load_simulator_config(preset="confounded", n_items=n_items, n_users=args.users)
        start = time.perf_counter()
        result = run_ope_bench(
            config,
            rounds=[args.rounds],
            seeds=args.seeds,
            policy=args.policy,
            estimators=ESTIMATORS,
            n_clusters=min(args.clusters, n_items),
            progress=True,
        )
        seconds = time.perf_counter() - start
        for frame, into in ((result.summary, summaries), (result.runs, runs)):
            frame = frame.copy()
            frame.insert(0, "n_items", n_items)
            frame["truth"] = result.truth
            into.append(frame)
        summaries[-1]["seconds"] = seconds
        print(f"{n_items} items: truth {result.truth:.5f} clicks per round, {seconds:.0f} s")
    summary = pd.concat(summaries, ignore_index=True)
    summary["estimator"] = summary["estimator"].str.replace(r"\(.*\)", "", regex=True)
    columns = ["n_items", "estimator", "relative_error", "rmse", "bias", "coverage", "width"]
    with storage.atomic_output_dir(args.out, overwrite=args.overwrite) as staging:
        pd.concat(runs, ignore_index=True).to_csv(staging / "runs.csv", index=False)
        summary.to_csv(staging / "summary.csv", index=False)
        _plot(summary, staging / "catalogue.png", args)
    print(summary[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(json.dumps({"out": str(Path(args.out)), "seeds": args.seeds, "rounds": args.rounds}))


def _plot(summary: pd.DataFrame, path: Path, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for estimator, rows in summary.groupby("estimator", sort=False):
        axes[0].plot(rows["n_items"], rows["relative_error"], marker="o", label=estimator)
        axes[1].plot(rows["n_items"], rows["coverage"], marker="o", label=estimator)
    axes[0].set(xscale="log", yscale="log", xlabel="items in the catalogue")
    axes[0].set(ylabel="mean relative error |estimate - exact| / exact")
    axes[1].set(xscale="log", xlabel="items in the catalogue", ylabel="coverage of 95% intervals")
    axes[1].set_ylim(0, 1.02)
    axes[1].axhline(0.95, color="grey", linestyle="--", linewidth=1)
    axes[0].legend(fontsize=8)
    figure.suptitle(
        f"OPE of {args.policy} on the confounded world: {args.rounds:,} rounds, "
        f"{args.seeds} seeds, {args.clusters} item clusters"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
