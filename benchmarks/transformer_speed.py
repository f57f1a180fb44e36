"""Transformer (``backbone="transformer"``) training throughput against a bare PyTorch loop.

Usage::

    python benchmarks/transformer_speed.py [--sessions 20000] [--epochs 1] [--workers 2]

The log is the ``satiation`` preset's session log (10 steps per session, K = 1). Both loops
train the same :class:`~causalrec.methods.networks.SequentialTransformer` (d = 32, 2 layers,
2 heads, L = 20) with the same IPS-weighted logistic loss, Adam and batch size on two CPU
threads, and both include their data handling (shuffle and mini-batch gathering); the bare
loop gets each row's history precomputed. Also reported: data-parallel training with
``--workers`` Ray Train workers against one in-process worker (wall time, start-up included),
and the memory a fit adds at its peak per million history steps (rows × L), in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from causalrec.methods import make_recommender
from causalrec.methods.history import round_histories
from causalrec.methods.networks import SequentialTransformer
from causalrec.simulators import ConfoundedRecSimulator, load_simulator_config
from causalrec.simulators.session_logs import generate_session_logs

MODEL = {"dim": 32, "layers": 2, "heads": 2, "history_length": 20, "dropout": 0.1}
BATCH = 1024


def _logs(sessions: int):
    simulator = ConfoundedRecSimulator(load_simulator_config(preset="satiation"))
    return generate_session_logs(simulator, n_sessions=sessions, seed=0)


def bare_loop(logs, epochs: int) -> float:
    """The same network, loss and optimiser as plainly as possible; samples per second."""
    length = MODEL["history_length"]
    histories = round_histories(logs, length)
    order = np.argsort(histories.round_id)
    rows = order[np.searchsorted(histories.round_id[order], logs.round_id)]
    items = torch.from_numpy(histories.items[rows])
    clicks = torch.from_numpy(histories.clicks[rows].astype(np.int64))
    weights = (1 / logs.pscore) / np.mean(1 / logs.pscore)
    targets = torch.from_numpy(logs.item_id.astype(np.int64))
    labels = torch.from_numpy(logs.click.astype(np.float32))
    weights = torch.from_numpy(weights.astype(np.float32))
    network = SequentialTransformer(
        logs.n_items, length, MODEL["dim"], MODEL["layers"], MODEL["heads"], MODEL["dropout"],
        torch.Generator().manual_seed(0),
    )  # fmt: skip
    optimizer = torch.optim.Adam(network.parameters(), lr=0.01, weight_decay=1e-6)
    n = logs.n_rows
    start = time.perf_counter()
    for _ in range(epochs):
        permutation = torch.randperm(n)
        for offset in range(0, n, BATCH):
            index = permutation[offset : offset + BATCH]
            states = network.encode(items[index], clicks[index])
            item = targets[index]
            logits = (states * network.item[item]).sum(dim=1) + network.item_bias[item]
            loss = F.binary_cross_entropy_with_logits(logits, labels[index], reduction="none")
            loss = (loss * weights[index]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return n * epochs / (time.perf_counter() - start)


def causalrec_fit(logs, epochs: int, workers: int = 1) -> tuple[float, float]:
    """Samples per second and wall seconds of ``fit`` (start-up included)."""
    model = make_recommender(
        "ips", backbone="transformer", batch_size=BATCH, epochs=epochs, device="cpu",
        num_workers=workers, **MODEL,
    )  # fmt: skip
    start = time.perf_counter()
    model.fit(logs)
    seconds = time.perf_counter() - start
    return logs.n_rows * epochs / seconds, seconds


def peak_memory_per_million_steps(sessions: int) -> dict[str, float]:
    """Peak RSS a fit adds over the process's RSS before it, per 1M history steps.

    In a fresh process (no allocator cache from earlier fits); a thread samples the RSS every
    5 ms during the fit (the kernel's high-water mark would include the simulation's peak).
    """
    code = (
        "import json, sys, threading, time, psutil\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "from transformer_speed import _logs, MODEL, BATCH\n"
        "from causalrec.methods import make_recommender\n"
        f"logs = _logs({sessions})\n"
        "process, peak, done = psutil.Process(), [0], threading.Event()\n"
        "def sample():\n"
        "    while not done.is_set():\n"
        "        peak[0] = max(peak[0], process.memory_info().rss); time.sleep(0.005)\n"
        "before = process.memory_info().rss\n"
        "thread = threading.Thread(target=sample); thread.start()\n"
        "make_recommender('ips', backbone='transformer', batch_size=BATCH, epochs=1,\n"
        "                 device='cpu', **MODEL).fit(logs)\n"
        "done.set(); thread.join()\n"
        "print(json.dumps([logs.n_rows, before, peak[0]]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    rows, before, peak = json.loads(out.stdout.strip().splitlines()[-1])
    steps = rows * MODEL["history_length"] / 1e6
    return {
        "rows": rows,
        "history_steps_millions": steps,
        "rss_before_fit_gib": before / 2**30,
        "fit_peak_gib_per_million_steps": (peak - before) / 2**30 / steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="0 to skip the Ray Train run")
    parser.add_argument("--memory-only", action="store_true", help="only the memory figure")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.memory_only:
        print(json.dumps(peak_memory_per_million_steps(args.sessions)))
        return
    logs = _logs(args.sessions)
    causalrec_fit(logs, 1), bare_loop(logs, 1)  # warm-up
    ours = max(causalrec_fit(logs, args.epochs)[0] for _ in range(2))
    bare = max(bare_loop(logs, args.epochs) for _ in range(2))
    results = {
        "rows": logs.n_rows,
        "causalrec_samples_per_s": ours,
        "bare_torch_samples_per_s": bare,
        "ratio": ours / bare,
        "tokens_per_s": ours * (MODEL["history_length"] + 1),
        **peak_memory_per_million_steps(args.sessions),
    }
    if args.workers > 1:
        from causalrec.platform.runtime import init_ray

        init_ray()
        _, one_seconds = causalrec_fit(logs, args.epochs)
        many_rate, many_seconds = causalrec_fit(logs, args.epochs, args.workers)
        results.update(
            one_worker_seconds=one_seconds,
            workers=args.workers,
            workers_seconds=many_seconds,
            workers_samples_per_s=many_rate,
            speedup=one_seconds / many_seconds,
        )
    if args.json:
        print(json.dumps(results))
        return
    print("| measure | result |")
    print("|---|---|")
    print(f"| rows (history length {MODEL['history_length']}) | {results['rows']:,} |")
    print(f"| transformer IPS training, causalrec (samples/s) | {ours:,.0f} |")
    print(f"| same model and loss, bare PyTorch loop (samples/s) | {bare:,.0f} |")
    print(f"| causalrec / bare (goal >= 80%) | {results['ratio']:.0%} |")
    print(f"| tokens/s (samples/s x (L + 1)) | {results['tokens_per_s']:,.0f} |")
    print(
        f"| fit memory per 1M history steps (GiB) | "
        f"{results['fit_peak_gib_per_million_steps']:.3f} |"
    )
    if "speedup" in results:
        print(f"| 1 worker in process, wall (s) | {results['one_worker_seconds']:.1f} |")
        print(
            f"| {args.workers} Ray Train workers, wall incl. start-up (s) | "
            f"{results['workers_seconds']:.1f} |"
        )
        print(f"| speed-up | {results['speedup']:.2f} |")


if __name__ == "__main__":
    main()
