"""Selection regret of each policy-selection rule over seeds of the quick pipeline's search.

Usage::

    python benchmarks/selection_regret.py                  # seeds 0-9, about 3 min per seed
    python benchmarks/selection_regret.py --seeds 2        # a quick look

Each seed runs the quick pipeline's ``simulate`` and ``tune`` stages as the pipeline does
(``configs/pipeline/quick.yaml``: its world, its 100,000 logged rounds, its 10-trial random
search over naive, ips, dr_jl and gboost), with the seed of the logs and of the search set to
the seed. Every trial reports, on the validation split, the DR estimate and the estimate of the
estimator off-policy cross-validation chose for it, each with a 95% interval; the simulator
gives each trial's exact value. Then, per rule:

* ``ope_dr``: the largest DR estimate (the pipeline's default);
* ``ope_dr_low``: the largest lower end of DR's interval (risk averse);
* ``ope_auto``: the largest estimate of the cross-validation-chosen estimator;
* ``ope_auto_low``: the largest lower end of its interval;
* ``ground_truth``: the truly best trial (regret 0, for reference);

the script reports the selection regret (exact value of the truly best trial minus that of the
rule's pick, clicks per round), its share of the oracle's value, and SCOPE-RL's
SharpeRatio@k (Kiyohara et al., ICLR 2024): (best exact value among the rule's top k − the
logging policy's value) / (sd of the exact values of those k), k = ``--top-k``.

Writes ``runs.csv`` and ``summary.csv`` to ``--out``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from causalrec.pipeline.config import load_pipeline_config
from causalrec.platform import storage
from causalrec.platform.config import config_dir
from causalrec.simulators import ConfoundedRecSimulator, generate_logs, load_simulator_config
from causalrec.tuning.runner import tune_recommenders

RULES = ("ope_dr", "ope_dr_low", "ope_auto", "ope_auto_low", "ground_truth")


def sharpe_ratio_at_k(ranking: pd.Series, truth: pd.Series, baseline: float, k: int) -> float:
    """SharpeRatio@k: (max truth of the top k by ``ranking`` − baseline) / sd of those truths."""
    top = truth.loc[ranking.sort_values(ascending=False).index[:k]]
    spread = float(top.std(ddof=1)) if len(top) > 1 else 0.0
    return float((top.max() - baseline) / spread) if spread > 0 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(config_dir() / "pipeline" / "quick.yaml"))
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..SEEDS-1")
    parser.add_argument("--top-k", type=int, default=3, help="k of SharpeRatio@k")
    parser.add_argument("--out", default="runs/selection-regret", help="output directory")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    args = parser.parse_args()

    config, tuning = load_pipeline_config(args.config)
    stage = config.simulate
    simulator = ConfoundedRecSimulator(
        load_simulator_config(preset=stage.preset, **stage.overrides)
    )
    oracle = simulator.oracle_value()
    logging_value = float(simulator.policy_value(simulator.logging_policy()))
    records = []
    for seed in range(args.seeds):
        start = time.perf_counter()
        logs = generate_logs(simulator, n_rounds=stage.rounds, seed=seed)
        search = tuning.search.model_copy(update={"seed": seed})
        seeded = tuning.model_copy(update={"search": search})
        with tempfile.TemporaryDirectory() as directory:
            result = tune_recommenders(
                logs, seeded, Path(directory) / "tune", simulator=simulator, verbose=0
            )
        trials = result.results[np.isfinite(result.results["ope_dr"])]
        best = float(trials["ground_truth"].max())
        for rule in RULES:
            picked = trials.loc[trials[rule].idxmax()]
            records.append(
                {
                    "seed": seed,
                    "rule": rule,
                    "method": picked["method"],
                    "true_value": float(picked["ground_truth"]),
                    "regret": best - float(picked["ground_truth"]),
                    "sharpe_at_k": sharpe_ratio_at_k(
                        trials[rule], trials["ground_truth"], logging_value, args.top_k
                    ),
                    "trials": len(trials),
                    "auto_estimators": ";".join(sorted(set(trials["ope_auto_estimator"]))),
                }
            )
        print(
            f"seed {seed}: {len(trials)} trials, truly best {best:.4f}, "
            + ", ".join(f"{r['rule']} {r['regret']:.4f}" for r in records[-len(RULES) :])
            + f" ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    runs = pd.DataFrame(records)
    grouped = runs.groupby("rule", sort=False)
    summary = grouped.agg(
        seeds=("seed", "count"),
        mean_regret=("regret", "mean"),
        sd_regret=("regret", "std"),
        worst_regret=("regret", "max"),
        zero_regret_share=("regret", lambda r: float((r <= 1e-12).mean())),
        sharpe_at_k=("sharpe_at_k", "mean"),
    ).reset_index()
    summary["regret_share_of_oracle"] = summary["mean_regret"] / oracle
    summary["oracle_value"], summary["logging_value"] = oracle, logging_value
    with storage.atomic_output_dir(args.out, overwrite=args.overwrite) as staging:
        runs.to_csv(staging / "runs.csv", index=False)
        summary.to_csv(staging / "summary.csv", index=False)
    print(f"oracle {oracle:.4f}, logging policy {logging_value:.4f} clicks per round")
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
