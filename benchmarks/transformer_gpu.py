"""The transformer on a GPU: training throughput in float32 and in bf16, and the GPU Tune sweep.

Usage (on a machine with CUDA; ``--device cpu`` runs the same steps on CPU as a smoke check)::

    python benchmarks/transformer_gpu.py [--sessions 20000] [--epochs 2] [--device cuda]

Trains the issue's large model (d = 256, 4 layers, 8 heads, L = 50; IPS loss, batch 4096) on the
``satiation`` preset's session log with ``precision="fp32"``, ``precision="bf16"`` and bf16
with ``compile=True``, and prints samples/s and tokens/s (samples/s × (L + 1)) for each, with
the device's name. Then, unless ``--no-tune``, it runs the GPU Tune test (``pytest -m gpu``:
fractional-GPU trials training on CUDA), which skips on a machine without CUDA.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from causalrec.methods import make_recommender
from causalrec.simulators import ConfoundedRecSimulator, load_simulator_config
from causalrec.simulators.session_logs import generate_session_logs

LARGE = {"dim": 256, "layers": 4, "heads": 8, "history_length": 50, "batch_size": 4096}


def throughput(logs, precision: str, device: str, epochs: int, compile: bool = False) -> float:
    """Training samples per second of the large IPS transformer (after a one-epoch warm-up)."""
    params = dict(backbone="transformer", device=device, precision=precision, compile=compile)
    params.update(LARGE)
    make_recommender("ips", epochs=1, **params).fit(logs)  # warm-up: kernels, allocator
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    make_recommender("ips", epochs=epochs, **params).fit(logs)
    if device == "cuda":
        torch.cuda.synchronize()
    return logs.n_rows * epochs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--no-tune", action="store_true")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here; use --device cpu for a smoke run")
    simulator = ConfoundedRecSimulator(load_simulator_config(preset="satiation"))
    logs = generate_session_logs(simulator, n_sessions=args.sessions, seed=0)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    results = {"device": name, "rows": logs.n_rows, **LARGE}
    for precision in ("fp32", "bf16"):
        rate = throughput(logs, precision, args.device, args.epochs)
        results[f"{precision}_samples_per_s"] = rate
        results[f"{precision}_tokens_per_s"] = rate * (LARGE["history_length"] + 1)
    results["bf16_speedup"] = results["bf16_samples_per_s"] / results["fp32_samples_per_s"]
    rate = throughput(logs, "bf16", args.device, args.epochs, compile=True)
    results["bf16_compiled_samples_per_s"] = rate
    results["bf16_compiled_tokens_per_s"] = rate * (LARGE["history_length"] + 1)
    print(json.dumps(results), flush=True)
    if not args.no_tune:
        test = "tests/tuning/test_tune.py::test_fractional_gpu_trials_train_on_cuda"
        sys.exit(subprocess.call([sys.executable, "-m", "pytest", "-q", "-rs", "-m", "gpu", test]))


if __name__ == "__main__":
    main()
