"""Interval calibration: how often each estimator's interval covers the exact policy value.

Usage::

    python benchmarks/coverage.py                      # the full protocol (hours on 2 CPUs)
    python benchmarks/coverage.py --sizes 1000,10000 --seeds 200 --blb-seeds 0 --out cov.csv

For each log size n and seed, a log of n rounds is simulated from the ``confounded`` world
(``--n-users``/``--n-items`` shrink its catalogue; K = 1), the cross-fitted logistic reward model
is fitted once, and for each target policy (``softmax:T``: Plackett–Luce on true relevance) every
estimator gives a normal (delta-method), percentile-bootstrap and studentized-bootstrap 95%
interval, and IPS also the betting interval; the exact value comes from the simulator. With
``--blb-seeds`` the same is done at
``--blb-size`` rounds, where n x replicates exceeds the exact-bootstrap limit and the Bag of
Little Bootstraps path runs. A slate world (``--slate``: K = 3, 100 items) adds IIPS, RIPS and
SIPS with their normal and bootstrap intervals, in clicks per round.

Writes one row per (size, seed, target, estimator, method) to ``--out`` (CSV, appended as it
goes) and prints the coverage table: share of seeds whose interval holds the exact value, with
its binomial standard error, and the median ESS share of the weights.
"""

from __future__ import annotations

from _harness import best_of  # first: pins one core before numpy loads

# isort: split
import argparse
import csv
import time
from pathlib import Path

import numpy as np
import pandas as pd

from causalrec.ope import intervals, parse_estimators
from causalrec.ope.cross_fit import CrossFittedRewardModel
from causalrec.ope.intervals import INTERVAL_METHODS
from causalrec.ope.policy_inputs import round_inputs
from causalrec.ope.reward_model import RewardModelConfig
from causalrec.ope.slate import slate_pscores
from causalrec.simulators import ConfoundedRecSimulator, generate_logs, load_simulator_config
from causalrec.simulators.policy_spec import named_policy

del best_of  # imported for its side effect (one core, one BLAS thread)

ESTIMATORS = ("ips", "snips", "dr", "sndr")
SLATE_ESTIMATORS = ("iips", "rips", "sips")
FIELDS = ("size", "seed", "target", "estimator", "method", "low", "high", "truth", "ess_share")


def _world(args, slate: bool) -> ConfoundedRecSimulator:
    """The confounded world of the study (K = 3 over 100 items for the slate estimators)."""
    overrides = {"n_users": args.n_users, "n_items": args.n_items}
    if slate:
        overrides.update(slate_size=3, n_items=100)
    return ConfoundedRecSimulator(load_simulator_config(preset="confounded", **overrides))


def _standard_rows(sim, truths, targets, size, seed, n_bootstrap):
    log = generate_logs(sim, n_rounds=size, seed=seed)
    fitted = CrossFittedRewardModel.fit(log, RewardModelConfig())
    estimators = parse_estimators(list(ESTIMATORS))
    for name, policy in targets.items():
        inputs, diagnostics = round_inputs(log, policy, pscore=log.pscore, reward_model=fitted)
        terms = [e.terms_from_inputs(inputs) for e in estimators]
        by_method = {"normal": [intervals.normal_interval(t) for t in terms]}
        if n_bootstrap:
            by_method.update(
                intervals.bootstrap_intervals(terms, n_bootstrap=n_bootstrap, seed=seed)
            )
        by_method["betting"] = [
            intervals.betting_interval(t, seed=seed) if t.weight is not None else (np.nan, np.nan)
            for t in terms
        ]
        for method, bounds in by_method.items():
            for estimator, (low, high) in zip(ESTIMATORS, bounds, strict=True):
                yield (
                    size,
                    seed,
                    name,
                    estimator,
                    method,
                    low,
                    high,
                    truths[name],
                    diagnostics.ess_share,
                )


def _slate_rows(sim, truths, targets, size, seed, n_bootstrap):
    log = generate_logs(sim, n_rounds=size, seed=seed)
    estimators = parse_estimators(list(SLATE_ESTIMATORS))
    for name, policy in targets.items():
        for estimator in estimators:
            logging, evaluation = slate_pscores(log, policy, estimator)
            arrays = dict(
                reward=log.click,
                slate_id=log.round_id,
                position=log.position,
                pscore=logging,
                evaluation_pscore=evaluation,
            )
            weights = evaluation / logging
            ess_share = weights.sum() ** 2 / (weights @ weights) / len(weights)
            methods = (
                ("normal", "bootstrap", "studentized", "betting")
                if n_bootstrap
                else ("normal", "betting")
            )
            for method in methods:
                low, high = estimator.interval(
                    **arrays, method=method, n_bootstrap=n_bootstrap, seed=seed
                )
                yield (size, seed, name, estimator.name, method, low, high, truths[name], ess_share)


def _table(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.dropna(subset=["low", "high"])  # betting: IPS-type estimators only
    frame = frame.drop_duplicates(["size", "seed", "target", "estimator", "method"])
    frame = frame.assign(covered=(frame.low <= frame.truth) & (frame.truth <= frame.high))
    grouped = frame.groupby(["size", "target", "estimator", "method"])
    table = grouped.agg(
        coverage=("covered", "mean"), seeds=("covered", "size"), ess_share=("ess_share", "median")
    ).reset_index()
    table["coverage_se"] = np.sqrt(table.coverage * (1 - table.coverage) / table.seeds)
    return table


def _markdown(table: pd.DataFrame) -> str:
    """Rows (size, estimator), columns methods; cells: coverage at each target, in order."""
    targets = list(dict.fromkeys(table.target))
    methods = [m for m in INTERVAL_METHODS if m in set(table.method)]
    lines = [
        "| rounds | estimator | seeds | ESS share | " + " | ".join(methods) + " |",
        "|---:|---|---:|---|" + "---|" * len(methods),
    ]
    for (size, estimator), group in table.groupby(["size", "estimator"], sort=True):
        cells = []
        for method in methods:
            rows = group[group.method == method].set_index("target")
            cells.append(
                " / ".join(f"{rows.coverage[t]:.2f}" for t in targets) if len(rows) else "—"
            )
        ess = group.drop_duplicates("target").set_index("target").ess_share
        lines.append(
            f"| {size:,} | {estimator} | {int(group.seeds.min())} | "
            + " / ".join(f"{ess[t]:.1%}" for t in targets)
            + " | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--seeds", type=int, default=500)
    parser.add_argument("--first-seed", type=int, default=0, help="add seeds to an earlier run")
    parser.add_argument("--blb-size", type=int, default=200_000)
    parser.add_argument("--blb-seeds", type=int, default=200)
    parser.add_argument("--targets", default="softmax:1,softmax:1.5,softmax:2")
    parser.add_argument("--n-users", type=int, default=2000)
    parser.add_argument("--n-items", type=int, default=100)
    parser.add_argument("--n-bootstrap", type=int, default=1000, help="0: no bootstrap")
    parser.add_argument("--slate", action="store_true", help="also the K = 3 slate estimators")
    parser.add_argument("--slate-only", action="store_true", help="only the slate estimators")
    parser.add_argument("--out", default="coverage.csv")
    parser.add_argument("--table-only", action="store_true", help="print the table of --out")
    parser.add_argument(
        "--markdown", action="store_true", help="print a Markdown table (one row per size)"
    )
    args = parser.parse_args()
    out = Path(args.out.split(",")[0])
    if not args.table_only:
        runs = [(int(s), args.seeds) for s in args.sizes.split(",") if s]
        if args.blb_seeds:
            runs.append((args.blb_size, args.blb_seeds))
        worlds = [] if args.slate_only else [(False, _standard_rows)]
        worlds += [(True, _slate_rows)] if args.slate or args.slate_only else []
        new_file = not out.exists()
        with out.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new_file:
                writer.writerow(FIELDS)
            for slate, rows in worlds:
                sim = _world(args, slate)
                probe = generate_logs(sim, n_rounds=10, seed=0)
                targets = {
                    t: named_policy(t, logs=probe, world=sim) for t in args.targets.split(",")
                }
                truths = {t: float(sim.policy_value(p)) for t, p in targets.items()}
                for size, seeds in runs:
                    start = time.perf_counter()
                    for seed in range(args.first_seed, args.first_seed + seeds):
                        writer.writerows(rows(sim, truths, targets, size, seed, args.n_bootstrap))
                        handle.flush()
                    print(
                        f"K={sim.slate_size} n={size}: {seeds} seeds in "
                        f"{time.perf_counter() - start:.0f} s",
                        flush=True,
                    )
    table = _table(pd.concat([pd.read_csv(path) for path in args.out.split(",")]))
    if args.markdown:
        print(_markdown(table))
        return
    with pd.option_context("display.max_rows", None, "display.width", 200):
        print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))


if __name__ == "__main__":
    main()
