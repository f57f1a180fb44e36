"""Shared set-up of the benchmark scripts: one core, one BLAS thread, best-of timing.

Import this module first (before numpy): it pins the process to one CPU core and sets the
thread-count variables that BLAS libraries read when they load.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

__all__ = ["best_of"]


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """The shortest wall-clock time of ``repeats`` calls of ``fn``, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
