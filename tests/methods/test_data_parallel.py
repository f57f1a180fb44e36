"""Data-parallel training on Ray Train: 2 CPU workers (gloo) agree with 1 to within seed noise."""

from __future__ import annotations

import numpy as np
import pytest

from causalrec.methods import make_recommender
from causalrec.platform.errors import ConfigError
from causalrec.simulators import ConfoundedRecSimulator, SimulatorConfig
from causalrec.simulators.session_logs import generate_session_logs

PARAMS = {"backbone": "transformer", "epochs": 5, "dim": 16, "heads": 2, "layers": 1,
          "history_length": 6, "batch_size": 512, "device": "cpu"}  # fmt: skip


@pytest.mark.slow
def test_two_workers_agree_with_one_within_seed_noise(ray_session):
    world = ConfoundedRecSimulator(
        SimulatorConfig(n_users=200, n_items=50, session_length=5, satiation=1.0, seed=1)
    )
    logs = generate_session_logs(world, n_sessions=400, seed=2)
    held_out = generate_session_logs(world, n_sessions=200, seed=3)

    def validation_loss(workers: int, seed: int) -> float:
        model = make_recommender("ips", num_workers=workers, seed=seed, **PARAMS)
        model.fit(logs, validation=held_out)
        assert getattr(model, "trained_workers_", 1) == workers
        assert len(model.history_) == PARAMS["epochs"]
        return model.validation_history_[-1]

    one = [validation_loss(1, seed) for seed in range(5)]
    two = validation_loss(2, 0)
    # Same seed, same global mini-batches, gradients averaged: the data-parallel run lands
    # within the seed-to-seed spread of single-process runs of its own seed.
    assert abs(two - one[0]) < np.std(one, ddof=1), (two, one)


def test_num_workers_below_one_is_refused():
    with pytest.raises(ConfigError, match="num_workers must be >= 1; got 0"):
        make_recommender("ips", num_workers=0).fit(None)
