"""Throughput and memory of log generation and of the batched environment, on one CPU core.

Usage::

    python benchmarks/simulate.py                # full run (10M-row peak-memory check included)
    python benchmarks/simulate.py --rounds 2000000 --memory-rounds 0   # quicker

Setting: 10,000 users, 1,000 items, latent dim 16, K = 1 (the ``default`` preset). The batched
environment is also measured with dynamics on: each dynamic preset, and every mechanism at once.
Prints a Markdown table (as in the README) and, with ``--json``, one JSON object.
"""

from __future__ import annotations

from _harness import best_of  # first: pins one core before numpy loads

# isort: split
import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from causalrec.simulators import (
    ConfoundedRecSimulator,
    ConfoundedRecVectorEnv,
    iter_log_chunks,
    load_simulator_config,
    write_logs,
)

TARGETS = {
    "generate_rows_per_s": 2_000_000,
    "write_rows_per_s": 1_000_000,
    "env_user_steps_per_s": 5_000_000,
    "dynamic_env_user_steps_per_s": 1_000_000,
    "peak_rss_gib_10m": 2.0,
}
#: Dynamic worlds whose batched environment is timed: the presets, and all mechanisms at once.
DYNAMIC_WORLDS = {
    "drift": {},
    "satiation": {},
    "feedback_loop": {},
    "retention": {},
    "all": {
        "interest_drift": 0.1,
        "satiation": 1.0,
        "popularity_feedback": 0.05,
        "leave_base": 0.3,
        "leave_sensitivity": 10.0,
        "conformity": 0.5,
    },
}


def measure_generation(simulator: ConfoundedRecSimulator, rounds: int) -> dict[str, float]:
    policy = simulator.logging_policy()
    start = time.perf_counter()
    for _ in iter_log_chunks(simulator, policy, 1, seed=0):  # builds the probability tables
        pass
    setup = time.perf_counter() - start

    def generate() -> None:
        for _ in iter_log_chunks(simulator, policy, rounds, seed=1):
            pass

    seconds = best_of(3, generate)
    return {"setup_s": setup, "generate_rows_per_s": rounds / seconds}


def measure_write(simulator: ConfoundedRecSimulator, rounds: int) -> dict[str, float]:
    directory = Path(tempfile.mkdtemp(prefix="causalrec-bench-"))
    try:

        def write() -> None:
            write_logs(simulator, directory / "logs", rounds, seed=1, overwrite=True)

        seconds = best_of(2, write)
        size = sum(p.stat().st_size for p in (directory / "logs").rglob("*.parquet"))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return {"write_rows_per_s": rounds / seconds, "bytes_per_row": size / rounds}


def measure_env(simulator: ConfoundedRecSimulator, num_envs: int, steps: int) -> dict[str, float]:
    envs = ConfoundedRecVectorEnv(num_envs, simulator=simulator)
    envs.reset(seed=0)
    actions = np.random.default_rng(0).integers(simulator.n_items, size=(steps, num_envs))
    envs.step(actions[0])  # warm-up: builds the relevance table

    def run() -> None:
        for t in range(steps):
            envs.step(actions[t])

    return {"env_user_steps_per_s": num_envs * steps / best_of(3, run)}


def measure_dynamic_envs(num_envs: int, steps: int) -> dict[str, float]:
    """User-steps/s of the batched environment in each dynamic world (Dict observations)."""
    results = {}
    for name, fields in DYNAMIC_WORLDS.items():
        preset = "default" if name == "all" else name
        simulator = ConfoundedRecSimulator(load_simulator_config(preset=preset, **fields))
        rate = measure_env(simulator, num_envs, steps)["env_user_steps_per_s"]
        results[f"dynamic_env_user_steps_per_s[{name}]"] = rate
    results["dynamic_env_user_steps_per_s"] = min(
        value for key, value in results.items() if key.startswith("dynamic_env")
    )
    return results


def measure_peak_memory(rounds: int) -> dict[str, float]:
    """Peak RSS of a fresh process that streams a ``rounds``-row log to disk."""
    directory = Path(tempfile.mkdtemp(prefix="causalrec-bench-mem-"))
    code = (
        "import resource, sys\n"
        "from causalrec.simulators import ConfoundedRecSimulator, load_simulator_config\n"
        "from causalrec.simulators import write_logs\n"
        "sim = ConfoundedRecSimulator(load_simulator_config(preset='default'))\n"
        f"write_logs(sim, sys.argv[1], {rounds}, seed=0)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    try:
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-c", code, str(directory / "logs")],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        files = len(list((directory / "logs" / "logs").glob("*.parquet")))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    peak_kib = int(result.stdout.strip().splitlines()[-1])
    return {
        "peak_rss_gib_10m": peak_kib / 2**20,
        "memory_run_s": seconds,
        "memory_run_files": files,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4_000_000, help="rounds per timed run")
    parser.add_argument("--memory-rounds", type=int, default=10_000_000, help="0 to skip")
    parser.add_argument("--num-envs", type=int, default=10_000)
    parser.add_argument("--env-steps", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    simulator = ConfoundedRecSimulator(load_simulator_config(preset="default"))
    results: dict[str, float] = {}
    results.update(measure_generation(simulator, args.rounds))
    results.update(measure_write(simulator, args.rounds))
    results.update(measure_env(simulator, args.num_envs, args.env_steps))
    results.update(measure_dynamic_envs(args.num_envs, args.env_steps))
    if args.memory_rounds:
        results.update(measure_peak_memory(args.memory_rounds))
    results["driver_peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    if args.json:
        print(json.dumps(results))
        return
    print("| measure | result | target |")
    print("|---|---|---|")
    rows = [
        ("log generation, in memory (rows/s)", "generate_rows_per_s", ">="),
        ("log generation + Parquet write (rows/s)", "write_rows_per_s", ">="),
        ("batched env (user-steps/s)", "env_user_steps_per_s", ">="),
        (
            "batched env, dynamics on, slowest world (user-steps/s)",
            "dynamic_env_user_steps_per_s",
            ">=",
        ),
        ("peak memory, 10M-row log (GiB)", "peak_rss_gib_10m", "<="),
    ]
    for label, key, relation in rows:
        if key in results:
            value = results[key]
            shown = f"{value:.2f}" if key.startswith("peak") else f"{value:,.0f}"
            target = TARGETS[key]
            target_shown = f"{target:.0f}" if key.startswith("peak") else f"{target:,.0f}"
            print(f"| {label} | {shown} | {relation} {target_shown} |")
    dynamic = [(k.split("[")[1][:-1], v) for k, v in results.items() if "_per_s[" in k]
    print(
        "\nbatched env with dynamics (user-steps/s): "
        + ", ".join(f"{k} {v:,.0f}" for k, v in dynamic)
    )
    print(f"setup (probability + alias tables, once per policy): {results['setup_s']:.2f} s")
    print(f"Parquet size: {results['bytes_per_row']:.1f} bytes/row")
    if "memory_run_s" in results:
        print(
            f"10M-row run: {results['memory_run_s']:.1f} s end to end in a fresh process, "
            f"{results['memory_run_files']:.0f} files"
        )


if __name__ == "__main__":
    main()
