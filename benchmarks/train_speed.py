"""MF-IPS training throughput against a bare PyTorch loop of the same model and loss.

Usage::

    python benchmarks/train_speed.py [--rows 2000000] [--epochs 3]

Latent dim 32, batch 16,384, two CPU threads (``torch.set_num_threads(2)``). Both loops include
data loading (shuffling and mini-batch gathering). Also reports the peak memory of fitting on
10M rows (``--memory-rows``, in a fresh process).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from causalrec.methods import make_recommender
from causalrec.methods.networks import MatrixFactorization
from causalrec.simulators import ConfoundedRecSimulator, generate_logs, load_simulator_config

DIM, BATCH = 32, 16_384


def bare_loop(users, items, labels, weights, n_users, n_items, epochs) -> float:
    """The same MF, weighted logistic loss and Adam, written as plainly as possible."""
    generator = torch.Generator().manual_seed(0)
    model = MatrixFactorization(n_users, n_items, DIM, generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-6)
    tensors = [torch.from_numpy(a) for a in (users, items, labels, weights)]
    n = len(users)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(n)
        for offset in range(0, n, BATCH):
            index = order[offset : offset + BATCH]
            u, i, y, w = (t[index] for t in tensors)
            loss = (F.binary_cross_entropy_with_logits(model(u, i), y, reduction="none") * w).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return n * epochs / (time.perf_counter() - start)


def peak_memory(rows: int) -> float:
    code = (
        "import resource\n"
        "from causalrec.methods import make_recommender\n"
        "from causalrec.simulators import ConfoundedRecSimulator, generate_logs\n"
        "from causalrec.simulators import load_simulator_config\n"
        "sim = ConfoundedRecSimulator(load_simulator_config(preset='default'))\n"
        f"logs = generate_logs(sim, n_rounds={rows}, seed=0)\n"
        "make_recommender('ips', dim=32, epochs=1, device='cpu').fit(logs)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--memory-rows", type=int, default=10_000_000, help="0 to skip")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    simulator = ConfoundedRecSimulator(load_simulator_config(preset="default"))
    logs = generate_logs(simulator, n_rounds=args.rows, seed=0)
    weights = (1 / logs.pscore) / np.mean(1 / logs.pscore)

    arrays = (logs.user_id, logs.item_id, logs.click.astype(np.float32), weights.astype(np.float32))

    def causalrec_fit() -> float:
        model = make_recommender("ips", dim=DIM, batch_size=BATCH, epochs=args.epochs, device="cpu")
        start = time.perf_counter()
        model.fit(logs)
        return logs.n_rows * args.epochs / (time.perf_counter() - start)

    def bare() -> float:
        return bare_loop(*arrays, simulator.n_users, simulator.n_items, args.epochs)

    causalrec_fit(), bare()  # warm-up: thread pools, allocator, first-touch of the tables
    causalrec_rate = max(causalrec_fit() for _ in range(2))
    bare_rate = max(bare() for _ in range(2))
    results = {
        "causalrec_samples_per_s": causalrec_rate,
        "bare_torch_samples_per_s": bare_rate,
        "ratio": causalrec_rate / bare_rate,
        "device": "cpu",
        "threads": torch.get_num_threads(),
    }
    if args.memory_rows:
        results["peak_rss_gib_fit"] = peak_memory(args.memory_rows)
    results["driver_peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if args.json:
        print(json.dumps(results))
        return
    print("| measure | result | target |")
    print("|---|---|---|")
    print(f"| MF-IPS training, causalrec (samples/s) | {causalrec_rate:,.0f} | >= 1,500,000 |")
    print(f"| same model and loss, bare PyTorch loop (samples/s) | {bare_rate:,.0f} | |")
    print(f"| causalrec / bare | {results['ratio']:.0%} | >= 80% |")
    if "peak_rss_gib_fit" in results:
        peak = results["peak_rss_gib_fit"]
        print(f"| peak memory, fit on {args.memory_rows:,} rows (GiB) | {peak:.2f} | <= 4 |")


if __name__ == "__main__":
    main()
