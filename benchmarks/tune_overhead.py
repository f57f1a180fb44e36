"""How much of a search's CPU time goes into training: Ray Tune's overhead on a small machine.

Usage::

    python benchmarks/tune_overhead.py                      # 24 short trials on 2 CPUs
    python benchmarks/tune_overhead.py --trials 48 --epochs 8

A local Ray with ``--cpus`` CPUs is started first (its start-up is reported, not counted). Then a
sweep of ``--trials`` short trials (naive MF and MF-IPS, one CPU each, no early stopping, so every
trial runs all its epochs) runs; the Tune run is timed (the one-time preparation before it — the
log split and the validation reward models — is reported, not counted). Reported:

* training share = Σ trial training time / (wall time × CPUs) — the target is >= 75%;
* trial-work share = Σ (training + per-epoch evaluation) / (wall time × CPUs);
* trials per minute.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from causalrec.platform.runtime import init_ray
from causalrec.simulators import ConfoundedRecSimulator, generate_logs, load_simulator_config
from causalrec.tuning import TuningConfig, tune_recommenders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1_000_000)
    args = parser.parse_args()

    simulator = ConfoundedRecSimulator(
        load_simulator_config(preset="confounded", n_users=2000, n_items=300)
    )
    logs = generate_logs(simulator, n_rounds=args.rounds, seed=0)
    started = time.perf_counter()
    init_ray(num_cpus=args.cpus)
    ray_start = time.perf_counter() - started
    common = {"epochs": args.epochs, "batch_size": 4096, "lr": {"loguniform": [0.005, 0.05]}}
    config = TuningConfig.from_dict(
        {
            "methods": {"naive": dict(common), "ips": {**common, "propensity": "logged"}},
            "search": {"num_samples": args.trials, "max_concurrent_trials": args.cpus},
            "scheduler": {"kind": "fifo"},
            "resources": {"cpus_per_trial": 1},
        }
    )
    with tempfile.TemporaryDirectory() as out:
        result = tune_recommenders(logs, config, Path(out) / "run", verbose=0)
    results = result.results
    # The Tune run itself; the one-time preparation (log split, validation reward models) is
    # reported beside it.
    wall = result.summary["timing"]["search_seconds"]
    capacity = wall * args.cpus
    report = {
        "trials": len(results),
        "cpus": args.cpus,
        "wall_seconds": round(wall, 2),
        "ray_start_seconds": round(ray_start, 2),
        "prepare_seconds": result.summary["timing"]["prepare_seconds"],
        "mean_train_seconds_per_trial": round(float(results.train_seconds.mean()), 2),
        "training_share": round(float(results.train_seconds.sum()) / capacity, 3),
        "trial_work_share": round(
            float((results.train_seconds + results.eval_seconds).sum()) / capacity, 3
        ),
        "trials_per_minute": round(len(results) / wall * 60, 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
