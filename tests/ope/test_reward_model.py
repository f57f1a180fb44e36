"""Reward models give the same q̂ whatever the thread count of the process that fits them."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from causalrec.ope.reward_model import FeatureSpace, RewardModelConfig, make_reward_model

ROOT = Path(__file__).resolve().parents[2]
# Above torch's 32,768-element grain a sum is split into one partial sum per thread, so the
# logistic loss of a fit on this many rows is where an unpinned thread count shows.
N_ROWS = 40_000


def _predictions() -> np.ndarray:
    """q̂ of every item for 500 users, from a logistic model fitted on a seeded toy log."""
    rng = np.random.default_rng(np.random.SeedSequence(1))
    x = rng.normal(size=(N_ROWS, 4))
    z = rng.normal(size=(20, 3))
    items = rng.integers(20, size=N_ROWS)
    positions = rng.integers(2, size=N_ROWS)
    logit = -1.5 + x[:, 0] * z[items, 0] + 0.5 * x[:, 1] - 0.3 * positions
    reward = (rng.random(N_ROWS) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float64)
    space = FeatureSpace(item_features=z, n_positions=2)
    model = make_reward_model(space, RewardModelConfig(kind="logistic"))
    model.fit(x, items, positions, reward)
    return model.predict_all(x[:500], positions[:500])


@pytest.fixture
def torch_threads():
    """Set torch's thread count for one test and put the session's back afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_logistic_fit_does_not_depend_on_the_thread_count(torch_threads):
    torch_threads(1)
    one = _predictions()
    torch_threads(2)
    two = _predictions()
    assert torch.get_num_threads() == 2  # the caller's setting survives the fit
    np.testing.assert_array_equal(two, one)  # unpinned: they differ from the 9th digit


@pytest.mark.slow  # a Python start-up and the torch import
def test_a_single_threaded_process_fits_the_same_model(torch_threads, tmp_path):
    # A Ray worker (Serve replica, Tune trial) runs with one thread; a driver with one per core.
    out = tmp_path / "q.npy"
    code = (
        "import sys, numpy; from tests.ope.test_reward_model import _predictions; "
        "numpy.save(sys.argv[1], _predictions())"
    )
    threads = {name: "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    subprocess.run(
        [sys.executable, "-c", code, str(out)],
        cwd=ROOT,
        env={**os.environ, **threads},
        check=True,
        timeout=300,
    )
    torch_threads(2)
    np.testing.assert_array_equal(_predictions(), np.load(out))
