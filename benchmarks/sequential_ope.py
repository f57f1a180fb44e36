"""Sequential off-policy estimators against rollout truth on every dynamic preset.

Usage::

    python benchmarks/sequential_ope.py                       # 10 seeds x 5,000 sessions
    python benchmarks/sequential_ope.py --seeds 3 --sessions 2000   # quicker

For each dynamic preset (full size: 10,000 users, 1,000 items, 10 steps per session) and seed, the
world's logger writes a session log; two target policies are evaluated on it:

* ``near``: the logger's own scores at temperature 1.25 (a policy close to the logger);
* ``far``: softmax over the true relevance at temperature 1 (a much better recommender).

Estimators: PDIS, WPDIS, sequential DR and WDR (Q model: cross-fitted FQE), and for contrast the
one-step (bandit) DR estimate of clicks per round times the session length, which treats each
step as a fresh request. Truth: the target's long-term value by rollouts (200,000 sessions).
Reported per preset, target and estimator: mean relative error, its spread over seeds, relative
RMSE and the coverage of the 95% intervals. Units: clicks per session.
"""

from __future__ import annotations

from _harness import best_of  # noqa: F401  first: pins one core before numpy loads

# isort: split
import argparse
import json
import time
import warnings

import numpy as np
import pandas as pd

from causalrec.ope import OverlapWarning, evaluate, evaluate_sessions
from causalrec.platform.policy import SoftmaxPolicy
from causalrec.simulators import ConfoundedRecSimulator, load_simulator_config
from causalrec.simulators.session_logs import generate_session_logs

PRESETS = ("drift", "satiation", "feedback_loop", "retention")
TRUTH_SESSIONS = 200_000


def targets(simulator: ConfoundedRecSimulator) -> dict[str, SoftmaxPolicy]:
    """The two target policies (see the module docstring)."""
    return {
        "near": SoftmaxPolicy(
            simulator.logging_scorer,
            temperature=1.25,
            epsilon=simulator.config.logging_epsilon,
            name="near",
        ),
        "far": SoftmaxPolicy(simulator.relevance_scorer, temperature=1.0, name="far"),
    }


def run_preset(preset: str, seeds: int, sessions: int) -> list[dict]:
    simulator = ConfoundedRecSimulator(load_simulator_config(preset=preset))
    horizon = simulator.config.session_length
    policies = targets(simulator)
    truth = {
        name: simulator.long_term_value(policy, n_sessions=TRUTH_SESSIONS, seed=10_000)
        for name, policy in policies.items()
    }
    rows = []
    for seed in range(seeds):
        logs = generate_session_logs(simulator, n_sessions=sessions, seed=seed)
        for name, policy in policies.items():
            start = time.perf_counter()
            table = evaluate_sessions(logs, policy, warn=False)
            seconds = time.perf_counter() - start
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OverlapWarning)
                bandit = evaluate(logs, policy, "dr", reward_model="logistic")
            bandit_row = {
                "estimator": "bandit_dr_x_T",
                "estimate": horizon * bandit["estimate"].iloc[0],
                "low": horizon * bandit["low"].iloc[0],
                "high": horizon * bandit["high"].iloc[0],
                "ess_share": np.nan,
            }
            for record in [*table.to_dict(orient="records"), bandit_row]:
                rows.append(
                    {
                        "preset": preset,
                        "target": name,
                        "seed": seed,
                        "estimator": record["estimator"],
                        "estimate": record["estimate"],
                        "low": record["low"],
                        "high": record["high"],
                        "truth": float(truth[name]),
                        "truth_se": truth[name].standard_error,
                        "ess_share": record["ess_share"],
                        "seconds": seconds,
                    }
                )
    return rows


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.assign(
        relative_error=(frame["estimate"] - frame["truth"]) / frame["truth"],
        covered=(frame["low"] <= frame["truth"]) & (frame["truth"] <= frame["high"]),
    )
    grouped = frame.groupby(["preset", "target", "estimator"], sort=False)
    return grouped.agg(
        truth=("truth", "first"),
        mean_estimate=("estimate", "mean"),
        mean_relative_error=("relative_error", "mean"),
        sd_relative_error=("relative_error", "std"),
        relative_rmse=("relative_error", lambda e: float(np.sqrt(np.mean(e**2)))),
        coverage=("covered", "mean"),
        ess_share=("ess_share", "mean"),
    ).reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--sessions", type=int, default=5_000, help="logged sessions per seed")
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--csv", default=None, help="write the per-seed rows here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    start = time.perf_counter()
    rows = [
        row
        for preset in args.presets.split(",")
        for row in run_preset(preset, args.seeds, args.sessions)
    ]
    frame = pd.DataFrame(rows)
    if args.csv:
        frame.to_csv(args.csv, index=False)
    summary = summarise(frame)
    if args.json:
        print(json.dumps(summary.to_dict(orient="records")))
        return
    print(
        f"{args.seeds} seeds x {args.sessions:,} logged sessions per preset; truth by "
        f"{TRUTH_SESSIONS:,} rollouts; clicks per session; {time.perf_counter() - start:.0f} s\n"
    )
    print("| preset | target | truth | estimator | mean rel. error | sd | rel. RMSE | "
          "95% coverage | ESS share |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in summary.itertuples():
        ess = "" if np.isnan(r.ess_share) else f"{r.ess_share:.2%}"
        print(
            f"| {r.preset} | {r.target} | {r.truth:.3f} | {r.estimator} | "
            f"{r.mean_relative_error:+.1%} | {r.sd_relative_error:.1%} | {r.relative_rmse:.1%} | "
            f"{r.coverage:.0%} | {ess} |"
        )


if __name__ == "__main__":
    main()
