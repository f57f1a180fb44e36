"""Every recommender against the simulator's exact ground truth, per preset and feedback setting.

Usage::

    python benchmarks/methods.py                                   # the issue's full protocol
    python benchmarks/methods.py --n-users 2000 --n-items 300 --rounds 100000 --seeds 3

For each preset and seed a log is simulated (with a 5% uniform-exposure slice, which CausE
needs), every method is trained in every feedback setting it supports, and the exact value of
its top-1 policy is computed. Prints a Markdown table of mean ± sd over seeds with the logging
policy's and the oracle's values, and writes ``methods.csv`` (one row per fit, rewritten after
every fit so an interrupted run keeps what it measured; ``--table-only`` re-renders it).

``--dynamic`` benchmarks the backbones in worlds that change (issue 17)::

    python benchmarks/methods.py --dynamic --seeds 3 --out methods_dynamic.csv

For each dynamic preset (``satiation``, ``drift``, ``feedback_loop``: confounded exposure under
popularity feedback) and seed, a session log is simulated and naive and IPS training are run
with each backbone (``mf``, ``two_tower``, ``transformer``). Each model's session policy (top-1;
the transformer reads each session's own steps) is rolled out in the world, paired with the
naive MF policy on common random numbers: the table gives the long-term value in clicks per
session (mean ± sd over seeds) and the mean paired difference from naive MF with the mean
rollout standard error of that difference.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd

from causalrec.methods import RECOMMENDERS, make_recommender
from causalrec.simulators import ConfoundedRecSimulator, generate_logs, load_simulator_config
from causalrec.simulators.rollout import iter_session_steps
from causalrec.simulators.session_logs import generate_session_logs

PRESETS = ("confounded", "unconfounded", "hidden_confounding", "popularity_bias")
DYNAMIC_PRESETS = ("satiation", "drift", "feedback_loop")
#: ``--cold-users``: users whose id is divisible by this have no session in training.
COLD_EVERY = 5
#: Each backbone's own parameters in the dynamic benchmark (the shared ones come from the CLI).
BACKBONES = {
    "mf": {},
    "two_tower": {},
    "transformer": {"history_length": 20, "layers": 2, "heads": 2, "dropout": 0.1},
}


def run(args: argparse.Namespace) -> pd.DataFrame:
    """Train every method on every preset and seed; append each fit to ``args.out`` as it ends."""
    rows = []
    for preset in args.presets.split(","):
        overrides = {k: v for k, v in (("n_users", args.n_users), ("n_items", args.n_items)) if v}
        simulator = ConfoundedRecSimulator(load_simulator_config(preset=preset, **overrides))
        logging_value = simulator.policy_value(simulator.logging_policy())
        oracle = simulator.oracle_value()
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            logs = generate_logs(simulator, n_rounds=args.rounds, seed=seed, uniform_fraction=0.05)
            for name in args.methods.split(","):
                cls = RECOMMENDERS[name]
                for setting in cls.supported_feedback:
                    if setting not in args.settings.split(","):
                        continue
                    params = {"feedback": setting, "seed": seed}
                    if "epochs" in cls.param_names():
                        params["epochs"] = args.epochs
                    start = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        model = make_recommender(name, **params).fit(logs)
                    value = simulator.policy_value(model.policy(1))
                    rows.append(
                        dict(preset=preset, setting=setting, method=name, seed=seed, value=value,
                             regret=oracle - value, logging=logging_value, oracle=oracle,
                             seconds=time.perf_counter() - start)
                    )  # fmt: skip
                    pd.DataFrame(rows).to_csv(args.out, index=False)
                    print(
                        f"{preset:>18} {setting:>8} {name:>9} seed {seed}: {value:.4f}", flush=True
                    )
    return pd.DataFrame(rows)


def run_dynamic(args: argparse.Namespace) -> pd.DataFrame:
    """Naive and IPS training of every backbone per dynamic preset and seed, rolled out."""
    rows = []
    presets = DYNAMIC_PRESETS if args.presets == ",".join(PRESETS) else args.presets.split(",")
    for preset in presets:
        overrides = {k: v for k, v in (("n_users", args.n_users), ("n_items", args.n_items)) if v}
        simulator = ConfoundedRecSimulator(load_simulator_config(preset=preset, **overrides))
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            logs = generate_session_logs(simulator, n_sessions=args.sessions, seed=seed)
            rollout = dict(n_sessions=args.rollouts, seed=10_000 + seed)
            baseline = None
            for backbone, extra in BACKBONES.items():
                for method in ("naive", "ips"):
                    start = time.perf_counter()
                    params = dict(backbone=backbone, dim=args.dim, epochs=args.epochs, seed=seed)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        model = make_recommender(method, **params, **extra).fit(logs)
                    policy = model.session_policy(k=1)
                    baseline = baseline or policy  # naive MF comes first
                    paired = simulator.paired_long_term_value(policy, baseline, **rollout)
                    rows.append(
                        dict(preset=preset, seed=seed, backbone=backbone, method=method,
                             value=float(paired.policy), se=paired.policy.standard_error,
                             vs_naive_mf=paired.difference, vs_naive_mf_se=paired.difference_se,
                             sessions=args.sessions, n_users=simulator.config.n_users,
                             seconds=time.perf_counter() - start)
                    )  # fmt: skip
                    pd.DataFrame(rows).to_csv(args.out, index=False)
                    print(
                        f"{preset:>13} seed {seed} {method:>5} {backbone:>11}: "
                        f"{float(paired.policy):.3f} ({paired.difference:+.3f} ± "
                        f"{paired.difference_se:.3f} vs naive MF)",
                        flush=True,
                    )
    return pd.DataFrame(rows)


def cold_user_value(simulator, policy, *, n_sessions: int, seed: int) -> tuple[float, float]:
    """Clicks per session of ``policy`` over the sessions of cold users (ids divisible by
    :data:`COLD_EVERY`), with its standard error (sessions are independent: no popularity
    feedback in the presets this runs on)."""
    returns, users, current = [], [], None
    horizon = simulator.config.session_length
    for record in iter_session_steps(
        simulator, policy, horizon=horizon, n_sessions=n_sessions, seed=seed
    ):
        if record.step == 0:
            current = np.zeros(len(record.session_id))
            returns.append(current)
            users.append(record.context.users.copy())
        current += record.expected_reward.sum(axis=1)
    cold = np.concatenate(returns)[np.concatenate(users) % COLD_EVERY == 0]
    return float(cold.mean()), float(cold.std(ddof=1) / np.sqrt(len(cold)))


def run_cold_users(args: argparse.Namespace) -> pd.DataFrame:
    """Every backbone trained without the cold users' sessions, rolled out on theirs."""
    rows = []
    presets = (
        ("satiation", "drift") if args.presets == ",".join(PRESETS) else args.presets.split(",")
    )
    for preset in presets:
        overrides = {k: v for k, v in (("n_users", args.n_users), ("n_items", args.n_items)) if v}
        simulator = ConfoundedRecSimulator(load_simulator_config(preset=preset, **overrides))
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            logs = generate_session_logs(simulator, n_sessions=args.sessions, seed=seed)
            warm = logs.select(logs.user_id % COLD_EVERY != 0)
            for backbone, extra in BACKBONES.items():
                for method in ("naive", "ips"):
                    params = dict(backbone=backbone, dim=args.dim, epochs=args.epochs, seed=seed)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        model = make_recommender(method, **params, **extra).fit(warm)
                    value, se = cold_user_value(
                        simulator, model.session_policy(k=1), n_sessions=args.rollouts,
                        seed=10_000 + seed,
                    )  # fmt: skip
                    rows.append(
                        dict(preset=preset, seed=seed, backbone=backbone, method=method,
                             cold_value=value, cold_se=se, sessions=args.sessions,
                             n_users=simulator.config.n_users)
                    )  # fmt: skip
                    pd.DataFrame(rows).to_csv(args.out, index=False)
                    print(
                        f"{preset:>10} seed {seed} {method:>5} {backbone:>11}: cold users "
                        f"{value:.3f} ± {se:.3f}",
                        flush=True,
                    )
    return pd.DataFrame(rows)


def markdown_cold(frame: pd.DataFrame) -> str:
    """Per preset: cold users' clicks per session (mean ± sd over seeds, mean rollout SE)."""
    lines = []
    for preset, block in frame.groupby("preset", sort=False):
        lines.append(
            f"\n**{preset}**, cold users (no session in training, ids divisible by "
            f"{COLD_EVERY}): clicks per session ({block.seed.nunique()} seeds)\n"
        )
        lines.append("| backbone | method | cold-user value (mean ± sd) | mean rollout SE |")
        lines.append("|---|---|---|---|")
        for (backbone, method), rows in block.groupby(["backbone", "method"], sort=False):
            lines.append(
                f"| {backbone} | {method} | {rows.cold_value.mean():.3f} ± "
                f"{rows.cold_value.std(ddof=1):.3f} | {rows.cold_se.mean():.3f} |"
            )
    return "\n".join(lines)


def markdown_dynamic(frame: pd.DataFrame) -> str:
    """Per preset: long-term value (mean ± sd over seeds) and the paired difference from naive
    MF (mean over seeds ± mean rollout SE), clicks per session."""
    lines = []
    for preset, block in frame.groupby("preset", sort=False):
        seeds = block.seed.nunique()
        lines.append(
            f"\n**{preset}** — long-term value in clicks per session ({seeds} seeds, "
            f"{block.sessions.iloc[0]:,} logged sessions, {block.n_users.iloc[0]:,} users)\n"
        )
        lines.append("| backbone | method | value (mean ± sd) | vs naive MF (± rollout SE) |")
        lines.append("|---|---|---|---|")
        for (backbone, method), rows in block.groupby(["backbone", "method"], sort=False):
            lines.append(
                f"| {backbone} | {method} | {rows.value.mean():.3f} ± "
                f"{rows.value.std(ddof=1):.3f} | {rows.vs_naive_mf.mean():+.3f} ± "
                f"{rows.vs_naive_mf_se.mean():.3f} |"
            )
    return "\n".join(lines)


def markdown(frame: pd.DataFrame) -> str:
    lines = []
    for preset, block in frame.groupby("preset", sort=False):
        first = block.iloc[0]
        lines.append(
            f"\n**{preset}** — logging policy {first.logging:.3f}, oracle {first.oracle:.3f} "
            "(exact value of the top-1 policy, mean ± sd over seeds)\n"
        )
        lines.append("| method | exposed | implicit |")
        lines.append("|---|---|---|")
        for method, rows in block.groupby("method", sort=False):
            cells = []
            for setting in ("exposed", "implicit"):
                values = rows[rows.setting == setting]["value"]
                cells.append(
                    f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if len(values) else "—"
                )
            lines.append(f"| {method} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--methods", default=",".join(RECOMMENDERS))
    parser.add_argument("--settings", default="exposed,implicit")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0, help="to add seeds to a run")
    parser.add_argument("--rounds", type=int, default=1_000_000)
    parser.add_argument("--n-users", type=int, default=None)
    parser.add_argument("--n-items", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", default="methods.csv")
    parser.add_argument("--dynamic", action="store_true", help="backbones in changing worlds")
    parser.add_argument("--sessions", type=int, default=3_000, help="--dynamic: logged sessions")
    parser.add_argument("--rollouts", type=int, default=4_000, help="--dynamic: rolled out")
    parser.add_argument("--dim", type=int, default=32, help="--dynamic: embedding width")
    parser.add_argument(
        "--cold-users", action="store_true", help="--dynamic: value on users unseen in training"
    )
    parser.add_argument(
        "--table-only",
        action="store_true",
        help="print the table of existing --out CSVs (comma-separated)",
    )
    args = parser.parse_args()
    if args.table_only:
        frame = pd.concat([pd.read_csv(path) for path in args.out.split(",")])
    else:
        frame = (
            (run_cold_users(args) if args.cold_users else run_dynamic(args))
            if args.dynamic
            else run(args)
        )
    if "cold_value" in frame:
        print(markdown_cold(frame))
    else:
        print(markdown_dynamic(frame) if "backbone" in frame else markdown(frame))


if __name__ == "__main__":
    main()
