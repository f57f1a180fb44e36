"""Long-term value by rollouts: its standard error per second, and how far one-step values are.

Usage::

    python benchmarks/long_term.py                 # full run (about 5 minutes on one core)
    python benchmarks/long_term.py --sessions 20000 --figure docs/figures/one_step_vs_long_term.png

Part 1 (the goal: standard error <= 0.5% of the value within 30 s, one core, default size): the
``default`` preset (10,000 users, 1,000 items, 10 steps per session) and every dynamic preset;
the logger's long-term value with its standard error and seconds (a preset whose standard error
misses the goal at ``--sessions`` is rerun with the sessions the goal needs), and the paired
difference of two policies (oracle vs epsilon-greedy 0.2) on common random numbers against the
standard error of an unpaired difference.

Part 2 (why sequential evaluation exists): per dynamic preset, for five policies, the exact
one-step value times the session length (what a bandit evaluation implies for a session) next
to the long-term value by rollouts, in clicks per session; a figure of both.
"""

from __future__ import annotations

from _harness import best_of  # first: pins one core before numpy loads

# isort: split
import argparse
import json
import time
from pathlib import Path

import numpy as np

from causalrec.simulators import ConfoundedRecSimulator, load_simulator_config
from causalrec.simulators.policy_spec import named_policy

PRESETS = ("default", "drift", "satiation", "feedback_loop", "retention")
DYNAMIC = PRESETS[1:]
POLICIES = ("logging", "oracle", "epsilon_greedy:0.2", "softmax:0.5", "uniform")
TARGET_RELATIVE_SE = 0.005
TARGET_SECONDS = 30.0


def _policy(simulator: ConfoundedRecSimulator, spec: str):
    return (
        simulator.session_logging_policy()
        if spec == "logging"
        else named_policy(spec, world=simulator)
    )


def standard_error_goal(preset: str, sessions: int) -> dict:
    """The logger's long-term value: value, standard error, seconds (best of 2)."""
    simulator = ConfoundedRecSimulator(load_simulator_config(preset=preset))
    policy = _policy(simulator, "logging")
    simulator.long_term_value(policy, n_sessions=100, seed=0)  # builds the probability tables
    holder = {}

    def run() -> None:
        holder["value"] = simulator.long_term_value(policy, n_sessions=sessions, seed=1)

    seconds = best_of(2, run)
    value = holder["value"]
    if value.relative_se > TARGET_RELATIVE_SE:  # size the rollout for the goal, then time it
        sessions = int(sessions * 1.1 * (value.relative_se / TARGET_RELATIVE_SE) ** 2)
        seconds = best_of(2, run)
        value = holder["value"]
    paired = simulator.paired_long_term_value(
        named_policy("oracle", world=simulator),
        named_policy("epsilon_greedy:0.2", world=simulator),
        n_sessions=sessions,
        seed=2,
    )
    unpaired = float(np.hypot(paired.policy.standard_error, paired.baseline.standard_error))
    return {
        "preset": preset,
        "sessions": value.n_sessions,
        "value": float(value),
        "standard_error": value.standard_error,
        "relative_se": value.relative_se,
        "seconds": seconds,
        "paired_difference": paired.difference,
        "paired_difference_se": paired.difference_se,
        "unpaired_difference_se": unpaired,
    }


def one_step_vs_long_term(preset: str, sessions: int) -> list[dict]:
    """Per policy: exact one-step value × session length, and the long-term value."""
    simulator = ConfoundedRecSimulator(load_simulator_config(preset=preset))
    horizon = simulator.config.session_length
    rows = []
    for spec in POLICIES:
        one_step = simulator.policy_value(
            simulator.logging_policy() if spec == "logging" else named_policy(spec, world=simulator)
        )
        start = time.perf_counter()
        long_term = simulator.long_term_value(_policy(simulator, spec), n_sessions=sessions, seed=3)
        rows.append(
            {
                "preset": preset,
                "policy": spec,
                "one_step_times_horizon": horizon * float(one_step),
                "long_term": float(long_term),
                "long_term_se": long_term.standard_error,
                "seconds": time.perf_counter() - start,
            }
        )
    return rows


def plot(rows: list[dict], path: Path) -> None:
    """One panel per dynamic preset: one-step x T and long-term value per policy."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * len(DYNAMIC), 3.6), layout="constrained")
    axes = fig.subplots(1, len(DYNAMIC), sharey=True)
    x = np.arange(len(POLICIES))
    for ax, preset in zip(axes, DYNAMIC, strict=True):
        mine = [row for row in rows if row["preset"] == preset]
        ax.bar(x - 0.2, [r["one_step_times_horizon"] for r in mine], 0.4, label="one-step x T")
        ax.bar(
            x + 0.2,
            [r["long_term"] for r in mine],
            0.4,
            yerr=[1.96 * r["long_term_se"] for r in mine],
            label="long-term (rollouts, 95% CI)",
        )
        ax.set_xticks(x, [p.split(":")[0].replace("epsilon_greedy", "ε-greedy") for p in POLICIES])
        ax.tick_params(axis="x", rotation=45)
        ax.set_title(preset)
    axes[0].set_ylabel("clicks per session (T = 10 steps)")
    axes[0].legend(fontsize=7, loc="upper right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=40_000, help="sessions per rollout")
    parser.add_argument("--figure", default=None, help="PNG of part 2")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    goal = [standard_error_goal(preset, args.sessions) for preset in PRESETS]
    comparison = [row for preset in DYNAMIC for row in one_step_vs_long_term(preset, args.sessions)]
    if args.figure:
        plot(comparison, Path(args.figure))
    if args.json:
        print(json.dumps({"standard_error_goal": goal, "one_step_vs_long_term": comparison}))
        return
    print(
        f"Goal: relative SE <= {TARGET_RELATIVE_SE:.1%} within {TARGET_SECONDS:.0f} s "
        f"({args.sessions:,} sessions, logger, one core)\n"
    )
    print("| preset | sessions | value (clicks/session) | SE | relative SE | seconds | "
          "paired diff ± SE | unpaired SE |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for g in goal:
        print(
            f"| {g['preset']} | {g['sessions']:,} | {g['value']:.4f} | {g['standard_error']:.4f} | "
            f"{g['relative_se']:.2%} | {g['seconds']:.1f} | "
            f"{g['paired_difference']:.4f} ± {g['paired_difference_se']:.4f} | "
            f"{g['unpaired_difference_se']:.4f} |"
        )
    print("\nOne-step value x T vs long-term value (clicks per session, T = 10)\n")
    print("| preset | policy | one-step x T | long-term ± SE | long-term / (one-step x T) |")
    print("|---|---|---|---|---|")
    for r in comparison:
        ratio = r["long_term"] / r["one_step_times_horizon"]
        print(
            f"| {r['preset']} | {r['policy']} | {r['one_step_times_horizon']:.3f} | "
            f"{r['long_term']:.3f} ± {r['long_term_se']:.3f} | {ratio:.2f} |"
        )


if __name__ == "__main__":
    main()
