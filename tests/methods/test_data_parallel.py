"""Data-parallel training on Ray Train: 2 CPU workers (gloo) make the same updates as 1."""

from __future__ import annotations

import numpy as np
import pytest

from causalrec.methods import make_recommender
from causalrec.platform.errors import ConfigError
from causalrec.simulators import ConfoundedRecSimulator, SimulatorConfig
from causalrec.simulators.session_logs import generate_session_logs

PARAMS = {"backbone": "transformer", "epochs": 5, "dim": 16, "heads": 2, "layers": 1,
          "history_length": 6, "batch_size": 512, "dropout": 0.0, "device": "cpu"}  # fmt: skip


@pytest.mark.slow
def test_two_workers_make_the_same_updates_as_one(ray_session):
    """Each worker takes half of every global mini-batch and the gradients are averaged, so two
    gloo workers follow the single-process run step for step: the same losses and scores up to
    float rounding, far inside the seed-to-seed spread. Dropout is off because its masks are
    drawn per worker (with it on, the runs differ by the masks, as any two DDP runs do)."""
    world = ConfoundedRecSimulator(
        SimulatorConfig(n_users=200, n_items=50, session_length=5, satiation=1.0, seed=1)
    )
    logs = generate_session_logs(world, n_sessions=400, seed=2)
    held_out = generate_session_logs(world, n_sessions=200, seed=3)
    users = np.arange(50)

    def fit(workers: int, seed: int):
        model = make_recommender("ips", num_workers=workers, seed=seed, **PARAMS)
        model.fit(logs, validation=held_out)
        assert getattr(model, "trained_workers_", 1) == workers
        assert len(model.history_) == PARAMS["epochs"]
        return model

    one, two = fit(1, 0), fit(2, 0)
    np.testing.assert_allclose(two.history_, one.history_, rtol=1e-5)
    np.testing.assert_allclose(two.validation_history_, one.validation_history_, rtol=1e-5)
    np.testing.assert_allclose(two.score(users), one.score(users), atol=1e-5)
    # The agreement is a property of the updates, not of a flat loss: another seed moves the
    # result by far more than the tolerance above.
    spread = np.std([fit(1, seed).validation_history_[-1] for seed in range(4)], ddof=1)
    assert spread > 100 * 1e-5 * one.validation_history_[-1], spread


def test_num_workers_below_one_is_refused():
    with pytest.raises(ConfigError, match="num_workers must be >= 1; got 0"):
        make_recommender("ips", num_workers=0).fit(None)
