"""How often does ``estimators="auto"`` pick the estimator that is truly best? Per preset.

Usage::

    python benchmarks/estimator_selection.py                      # 6 presets x 20 seeds
    python benchmarks/estimator_selection.py --presets confounded --seeds 3   # a quick look

For each simulator preset (its catalogue shrunk to ``--users`` x ``--items`` so that one log
takes about a second) and seed, a log of ``--rounds`` rounds is simulated and the target
``softmax:T`` is evaluated with every candidate of ``AUTO_CANDIDATES``; off-policy
cross-validation picks one per log, from the log alone. The simulator's exact value then says
which candidate is truly best for the preset (lowest MSE over the seeds), and the script
reports, per preset:

* ``pick_rate``: share of seeds where auto chose the truly best candidate;
* ``closest_rate``: share of seeds where auto chose the candidate closest to the truth on that
  very log (the best any selector could do);
* ``rmse_auto``: RMSE of auto's estimate, against ``rmse_best`` (the truly best candidate),
  ``rmse_dr`` (always DR) and ``rmse_worst`` (the worst candidate), in clicks per round;
* ``chosen``: how often each candidate was chosen.

Writes ``runs.csv`` and ``summary.csv`` to ``--out``.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from causalrec.ope import OverlapWarning
from causalrec.ope.evaluate import OfflineEvaluator
from causalrec.ope.reward_model import RewardModelConfig
from causalrec.platform import storage
from causalrec.simulators import ConfoundedRecSimulator, generate_logs, load_simulator_config
from causalrec.simulators.policy_spec import named_policy

PRESETS = "unconfounded,confounded,popularity_bias,hidden_confounding,default,slate"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default=PRESETS, help="comma-separated simulator presets")
    parser.add_argument("--seeds", type=int, default=20, help="logs per preset")
    parser.add_argument("--rounds", type=int, default=5_000, help="rounds per log")
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--policy", default="softmax:1.5", help="target policy spec")
    parser.add_argument("--out", default="runs/estimator-selection", help="output directory")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    args = parser.parse_args()

    records = []
    jobs = [(preset, seed) for preset in args.presets.split(",") for seed in range(args.seeds)]
    worlds: dict[str, ConfoundedRecSimulator] = {}
    for preset, seed in tqdm(jobs, unit="log"):
        if preset not in worlds:
            config = load_simulator_config(preset=preset, n_users=args.users, n_items=args.items)
            worlds[preset] = ConfoundedRecSimulator(config)
        world = worlds[preset]
        logs = generate_logs(world, n_rounds=args.rounds, seed=seed)
        target = named_policy(args.policy, logs=logs, world=world)
        truth = float(world.policy_value(target))
        evaluator = OfflineEvaluator(logs, "auto", reward_model=RewardModelConfig(seed=seed))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OverlapWarning)
            table = evaluator.evaluate(target, seed=seed)
        table = table[["estimator", "estimate", "selected", "cv_score"]].copy()
        table.insert(0, "preset", preset)
        table.insert(1, "seed", seed)
        table["truth"] = truth
        table["error"] = table["estimate"] - truth
        records.append(table)
    runs = pd.concat(records, ignore_index=True)
    summary = summarize(runs)
    with storage.atomic_output_dir(args.out, overwrite=args.overwrite) as staging:
        runs.to_csv(staging / "runs.csv", index=False)
        summary.to_csv(staging / "summary.csv", index=False)
    pd.set_option("display.width", 200)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per preset (see the module docstring)."""
    rows = []
    for preset, frame in runs.groupby("preset", sort=False):
        mse = frame.groupby("estimator")["error"].apply(lambda e: float(np.mean(e**2)))
        best = mse.idxmin()
        chosen = frame[frame["selected"]]
        closest = frame.loc[frame["error"].abs().groupby(frame["seed"]).idxmin()]
        closest_by_seed = closest.set_index("seed")["estimator"]
        counts = chosen["estimator"].value_counts()
        rows.append(
            {
                "preset": preset,
                "seeds": frame["seed"].nunique(),
                "truly_best": best,
                "pick_rate": float((chosen["estimator"] == best).mean()),
                "closest_rate": float(
                    (chosen.set_index("seed")["estimator"] == closest_by_seed).mean()
                ),
                "rmse_auto": float(np.sqrt(np.mean(chosen["error"] ** 2))),
                "rmse_best": float(np.sqrt(mse[best])),
                "rmse_dr": float(np.sqrt(mse["DR(clip=inf)"])),
                "rmse_worst": float(np.sqrt(mse.max())),
                "chosen": ", ".join(f"{name} {n}" for name, n in counts.items()),
            }
        )
    return pd.DataFrame(rows)


if __name__ == "__main__":
    main()
