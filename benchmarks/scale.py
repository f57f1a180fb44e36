"""Scaling of the sharded paths: simulate, OPE and training rates with 1 and 2 workers.

Usage::

    python benchmarks/scale.py                       # 10^6 and 10^7 rows with 1 and 2 workers,
                                                     # 5 * 10^7 with 2 (about 30 min on 2 CPUs)
    python benchmarks/scale.py --rows 1e6 --workers 1,2 --stages simulate,ope

Every measurement runs in its own driver process on a fresh local Ray of 2 CPUs (``num_cpus=2``),
so the driver's peak resident memory (``ru_maxrss``) is that stage's alone; Ray's workers are
other processes and are not counted. Rates are rows per second of the stage's wall time, which
excludes Ray's start. Efficiency is the speed-up per worker: rate(2 workers) / (2 * rate(1)).
Every BLAS and torch pool has one thread, so a worker is one core.

* ``simulate``: :func:`causalrec.simulators.write_logs` of the ``confounded`` preset, one
  shard per 262,144 rounds (one impression per round), as Ray tasks; the log is kept for ``ope``.
* ``ope``: :func:`causalrec.ope.sharded.evaluate_dataset` of ``softmax:2`` with IPS, SNIPS and
  DR (logistic reward model fitted on a 200,000-round sample), one task per part file.
* ``train``: streaming training of ``naive`` from the log's first 2,000,000 rows with Ray
  Train workers (:mod:`causalrec.methods.streaming`, 1 CPU for one worker, 0.5 each for two,
  so that Ray Data's reads find a CPU), one epoch, samples per second (Ray Train's start-up
  included).

Results go to ``OUT/scale.json`` and a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

THREADS = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
STAGES = ("simulate", "ope", "train")
#: The training stage reads at most this many rows (one epoch's samples/s does not need more).
TRAIN_ROWS = 2_000_000


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(stage: str, rows: int, workers: int, log: Path) -> dict:
    """One measurement, in this process (the driver)."""
    from causalrec.platform.runtime import init_ray

    init_ray(num_cpus=2)
    before = _rss_mib()
    if stage == "simulate":
        from causalrec.simulators import ConfoundedRecSimulator, load_simulator_config, write_logs

        simulator = ConfoundedRecSimulator(load_simulator_config(preset="confounded"))
        started = time.perf_counter()
        summary = write_logs(simulator, log, rows, seed=0, workers=workers, overwrite=True)
        seconds = time.perf_counter() - started
        size = sum(file.stat().st_size for file in (log / "logs").glob("part-*.parquet"))
        units = summary.rows
        extra = {"shards": summary.shards, "disk_bytes_per_row": round(size / summary.rows, 1)}
    elif stage == "ope":
        from causalrec.methods.policy_spec import resolve_policy
        from causalrec.ope.sharded import evaluate_dataset
        from causalrec.platform import storage

        policy = resolve_policy("softmax:2", logs=storage.read_logs(storage.log_files(log)[0]))
        started = time.perf_counter()
        table = evaluate_dataset(log, policy.policy, "ips,snips,dr", workers=workers)
        seconds = time.perf_counter() - started
        units = int(table.n_rows.iloc[0])
        extra = {"parts": int(table.n_parts.iloc[0]),
                 "estimates": dict(zip(table.estimator, table.estimate, strict=True))}  # fmt: skip
    else:
        import dataclasses

        from causalrec.methods.registry import RECOMMENDERS
        from causalrec.methods.streaming import fit_streaming
        from causalrec.platform.log_dataset import LogDataset

        source = dataclasses.replace(LogDataset.open(log), round_stop=min(rows, TRAIN_ROWS))
        model = RECOMMENDERS["naive"](epochs=1, num_workers=workers, seed=0)
        started = time.perf_counter()
        # Ray Data's reads need a CPU outside the workers' reservations (see the README).
        fit_streaming(model, source, cpus_per_worker=1.0 if workers == 1 else 0.5)
        seconds = time.perf_counter() - started
        units, extra = int(model.streamed_rows_), {"trained_workers": model.trained_workers_}
    return {
        "stage": stage,
        "rows": rows,
        "workers": workers,
        "seconds": round(seconds, 2),
        "rate": units / seconds,
        "units": units,
        "driver_rss_before_mib": round(before, 1),
        "driver_peak_mib": round(_rss_mib(), 1),
        **extra,
    }


def _measure(stage: str, rows: int, workers: int, log: Path) -> dict:
    command = [sys.executable, __file__, "--child", stage, "--rows", str(rows),
               "--workers", str(workers), "--log", str(log)]  # fmt: skip
    env = {**os.environ, **THREADS}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(
            f"{stage} at {rows:,} rows, {workers} workers failed:\n{done.stderr[-4000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(results: list[dict]) -> str:
    lines = [
        "| stage | rows | workers | seconds | rate (rows/s) | efficiency | driver peak (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    single = {(r["stage"], r["rows"]): r["rate"] for r in results if r["workers"] == 1}
    for r in results:
        base = single.get((r["stage"], r["rows"]))
        efficiency = f"{r['rate'] / (r['workers'] * base):.2f}" if base and r["workers"] > 1 else ""
        lines.append(
            f"| {r['stage']} | {r['rows']:,} | {r['workers']} | {r['seconds']:.1f} | "
            f"{r['rate']:,.0f} | {efficiency} | {r['driver_peak_mib']:,.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1e6,1e7,5e7", help="log sizes (rows)")
    parser.add_argument("--workers", default="1,2", help="worker counts")
    parser.add_argument(
        "--both-workers-up-to", type=float, default=1e7,
        help="larger logs are measured with the most workers only (time)",
    )  # fmt: skip
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--data", default="/tmp/causalrec-scale", help="where the logs go")
    parser.add_argument("--out", default="runs/scale")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--log", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = _child(args.child, int(float(args.rows)), int(args.workers), Path(args.log))
        print(json.dumps(result, default=float))
        return
    sizes = [int(float(value)) for value in args.rows.split(",")]
    counts = sorted(int(value) for value in args.workers.split(","))
    stages = [stage for stage in args.stages.split(",") if stage]
    results = []
    for rows in sizes:
        log = Path(args.data) / f"log-{rows}"
        chosen = counts if rows <= args.both_workers_up_to else counts[-1:]
        for stage in stages:
            for workers in chosen:
                if stage == "train" and rows > TRAIN_ROWS and workers != counts[-1]:
                    continue
                result = _measure(stage, rows, workers, log)
                results.append(result)
                print(json.dumps(result, default=float), flush=True)
        shutil.rmtree(log, ignore_errors=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(_table(results))


if __name__ == "__main__":
    main()
