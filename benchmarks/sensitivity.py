"""Bounds under hidden confounding: the curve against Γ, and coverage at the world's true Γ.

Usage::

    python benchmarks/sensitivity.py                 # 24 seeds, about 1 min
    python benchmarks/sensitivity.py --seeds 4       # a quick look

World: the ``hidden_confounding`` preset shrunk to 300 users x 30 items (latent dimension 8)
with ``logging_beta=1`` and ``hidden_confounding=0.2``, small enough that its true Γ (the
largest odds ratio between the logger's propensity and the propensity given the observed
features) is moderate; the shipped preset's Γ is in the thousands. The analyst's propensities
are those given the observed features (what an analyst who sees x_u could have at best); the
target is a softmax over the true relevance.

Per seed, a log of ``--rounds`` rounds; the marginal-sensitivity bounds on the SNIPS value
(Tan 2006; Zhao, Small & Bhattacharya 2019, 200 bootstrap resamples) at Γ in ``--gammas`` and
at the true Γ. Prints coverage of the exact value per Γ (bootstrap-widened bounds) and mean
bounds, in clicks per round, and writes ``curve.csv`` and ``sensitivity_curve.png`` (seed 0's
curve, with the exact value) to ``--out``.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from causalrec.ope.sensitivity import sensitivity_curve
from causalrec.platform import storage
from causalrec.platform.policy import SoftmaxPolicy
from causalrec.simulators import ConfoundedRecSimulator, generate_logs, load_simulator_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=40_000)
    parser.add_argument("--gammas", default="1,1.25,1.5,2,3,5")
    parser.add_argument("--out", default="runs/sensitivity")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()

    config = load_simulator_config(
        preset="hidden_confounding", n_users=300, n_items=30, latent_dim=8, logging_beta=1.0,
        hidden_confounding=0.2,
    )  # fmt: skip
    simulator = ConfoundedRecSimulator(config)
    true_gamma = simulator.true_sensitivity_gamma()
    analyst, _ = simulator.observed_feature_propensity(np.arange(simulator.n_users))
    policy = SoftmaxPolicy(simulator.relevance_scorer, name="target")
    truth = float(simulator.policy_value(policy))
    gammas = sorted({*(float(g) for g in args.gammas.split(",")), true_gamma.gamma})
    rows = []
    for seed in range(args.seeds):
        logs = generate_logs(simulator, n_rounds=args.rounds, seed=seed)
        pscore = analyst[logs.user_id, logs.item_id]
        for bounds in sensitivity_curve(
            logs, policy, gammas, pscore=pscore, n_bootstrap=200, seed=seed
        ):
            record = bounds.to_dict()
            record["seed"] = seed
            record["covered"] = record["lower_bootstrap"] <= truth <= record["upper_bootstrap"]
            rows.append(record)
    curve = pd.DataFrame(rows)
    curve["truth"] = truth
    summary = curve.groupby("gamma").agg(
        coverage=("covered", "mean"),
        estimate=("estimate", "mean"),
        lower=("lower", "mean"),
        upper=("upper", "mean"),
        lower_bootstrap=("lower_bootstrap", "mean"),
        upper_bootstrap=("upper_bootstrap", "mean"),
    )
    with storage.atomic_output_dir(args.out, overwrite=args.overwrite) as staging:
        curve.to_csv(staging / "curve.csv", index=False)
        _plot(curve[curve["seed"] == 0], truth, true_gamma.gamma, staging / "sensitivity_curve.png")
    print(
        f"true Γ {true_gamma.gamma:.3f} (standard error {true_gamma.standard_error:.1g}); "
        f"exact value {truth:.4f} clicks per round; {args.seeds} seeds x {args.rounds:,} rounds"
    )
    print(summary.to_string(float_format=lambda v: f"{v:.4f}"))


def _plot(seed0: pd.DataFrame, truth: float, true_gamma: float, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    g = seed0["gamma"]
    axis.fill_between(g, seed0["lower_bootstrap"], seed0["upper_bootstrap"], alpha=0.2,
                      label="bounds with sampling error (95%)")  # fmt: skip
    axis.fill_between(g, seed0["lower"], seed0["upper"], alpha=0.4, label="bounds on this log")
    axis.plot(g, seed0["estimate"], marker="o", label="SNIPS estimate")
    axis.axhline(truth, color="black", linestyle="--", linewidth=1, label="exact value")
    axis.axvline(true_gamma, color="grey", linestyle=":", label=f"true Γ = {true_gamma:.2f}")
    axis.set(xscale="log", xlabel="Γ (odds of the propensity off by up to Γx)",
             ylabel="value (clicks per round)")  # fmt: skip
    axis.set_xticks(list(g), [f"{value:.3g}" for value in g])
    axis.minorticks_off()
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
