"""OPE against ground truth: every estimator's error and interval coverage on simulated logs.

For each log size and seed a log is simulated, the target policy is evaluated with every
estimator, and the estimates are compared with the simulator's exact value of the target.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from causalrec.ope.cluster_inputs import item_clusters_from_features
from causalrec.ope.evaluate import OverlapWarning, evaluate
from causalrec.ope.registry import parse_estimators
from causalrec.ope.reward_model import RewardModelConfig
from causalrec.platform import storage
from causalrec.platform.errors import ConfigError
from causalrec.platform.units import check_same_unit
from causalrec.simulators import ConfoundedRecSimulator, SimulatorConfig, generate_logs
from causalrec.simulators.policy_spec import named_policy

__all__ = ["BenchResult", "run_ope_bench", "summarize_bench", "write_bench"]


@dataclass(frozen=True)
class BenchResult:
    """Raw and summarised results of :func:`run_ope_bench`.

    Attributes:
        runs: One row per (rounds, seed, estimator): estimate, interval, truth, errors.
        summary: One row per (rounds, estimator): mean relative error, RMSE, MSE, coverage,
            mean interval width, runs.
        truth: The target policy's exact value.
        policy: The target policy spec.
    """

    runs: pd.DataFrame
    summary: pd.DataFrame
    truth: float
    policy: str


def run_ope_bench(
    config: SimulatorConfig,
    *,
    rounds: Sequence[int],
    seeds: int,
    policy: str = "softmax:2",
    estimators: str | Sequence[str] | None = None,
    reward_model: RewardModelConfig | None = None,
    alpha: float = 0.05,
    n_clusters: int | None = None,
    progress: bool = False,
) -> BenchResult:
    """Evaluate ``policy`` on ``seeds`` logs of each size in ``rounds``.

    Args:
        config: The simulated world (its logging policy writes the logs).
        rounds: Log sizes (rounds per log).
        seeds: Logs per size; seeds ``0..seeds-1``.
        policy: Target policy spec (see :func:`~causalrec.simulators.policy_spec.named_policy`).
        estimators: Estimator specs (default: those of :func:`evaluate`).
        reward_model: Reward model for DM/DR (default: logistic).
        alpha: 1 - nominal coverage of the intervals.
        n_clusters: Item clusters for ``mips``, ``snmips`` and ``offcem``: k-means over the
            observed item features (the world's logging policy gives the cluster weights).
        progress: Show a progress bar.
    """
    from tqdm.auto import tqdm

    if seeds < 1:
        raise ConfigError(f"seeds must be >= 1; got {seeds}")
    if not rounds or min(rounds) < 10:
        raise ConfigError(f"rounds must be a list of sizes >= 10; got {list(rounds)}")
    if estimators is not None:
        parse_estimators(estimators)  # fail fast on a bad name
    simulator = ConfoundedRecSimulator(config)
    clusters = None
    if n_clusters is not None:
        clusters = item_clusters_from_features(simulator.item_features, n_clusters, seed=0)
    records = []
    truth = None
    target = None
    jobs = [(n, seed) for n in rounds for seed in range(seeds)]
    for n, seed in tqdm(jobs, disable=not progress, unit="log"):
        logs = generate_logs(simulator, n_rounds=n, seed=seed)
        if target is None:
            target = named_policy(policy, logs=logs, world=simulator)
            truth = simulator.policy_value(target)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OverlapWarning)  # recorded in the table instead
            table = evaluate(
                logs,
                target,
                estimators,
                reward_model=reward_model or RewardModelConfig(seed=seed),
                alpha=alpha,
                seed=seed,
                logging_policy=simulator.logging_policy() if clusters is not None else None,
                item_clusters=clusters,
            )
        table.insert(0, "rounds", n)
        table.insert(1, "seed", seed)
        records.append(table)
    runs = pd.concat(records, ignore_index=True)
    for unit in runs["unit"].unique():
        check_same_unit("the estimates", unit, truth.unit)
    runs["truth"] = truth
    runs["error"] = runs["estimate"] - truth
    runs["relative_error"] = runs["error"].abs() / abs(truth)
    runs["squared_error"] = runs["error"] ** 2
    runs["covered"] = (runs["low"] <= truth) & (truth <= runs["high"])
    runs["width"] = runs["high"] - runs["low"]
    return BenchResult(runs=runs, summary=summarize_bench(runs), truth=float(truth), policy=policy)


def summarize_bench(runs: pd.DataFrame) -> pd.DataFrame:
    """Aggregate raw runs per (rounds, estimator)."""
    grouped = runs.groupby(["rounds", "estimator"], sort=False)
    summary = grouped.agg(
        relative_error=("relative_error", "mean"),
        mse=("squared_error", "mean"),
        coverage=("covered", "mean"),
        width=("width", "mean"),
        bias=("error", "mean"),
        runs=("seed", "count"),
    ).reset_index()
    summary["rmse"] = np.sqrt(summary["mse"])
    return summary


def write_bench(result: BenchResult, out: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Write ``runs.csv``, ``summary.csv`` and ``error_vs_rounds.png`` into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with storage.atomic_output_dir(out, overwrite=overwrite) as staging:
        result.runs.to_csv(staging / "runs.csv", index=False)
        result.summary.to_csv(staging / "summary.csv", index=False)
        figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for estimator, rows in result.summary.groupby("estimator", sort=False):
            axes[0].plot(rows["rounds"], rows["relative_error"], marker="o", label=estimator)
            axes[1].plot(rows["rounds"], rows["coverage"], marker="o", label=estimator)
        axes[0].set(xscale="log", yscale="log", xlabel="rounds", ylabel="mean relative error")
        axes[1].set(xscale="log", xlabel="rounds", ylabel="coverage of 95% intervals")
        axes[1].axhline(0.95, color="grey", linestyle="--", linewidth=1)
        axes[0].legend(fontsize=7)
        figure.suptitle(f"OPE of {result.policy} (true value {result.truth:.4f})")
        figure.tight_layout()
        figure.savefig(staging / "error_vs_rounds.png", dpi=120)
        plt.close(figure)
    out = Path(out)
    return [out / "runs.csv", out / "summary.csv", out / "error_vs_rounds.png"]
