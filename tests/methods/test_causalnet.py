import numpy as np
import pytest
import torch

from causalrec.methods import load_recommender, make_recommender
from causalrec.methods.metrics import auc
from causalrec.platform.errors import ConfigError
from causalrec.simulators import ConfoundedRecSimulator, generate_logs, load_simulator_config


@pytest.fixture(scope="module")
def world():
    simulator = ConfoundedRecSimulator(
        load_simulator_config(preset="confounded", n_users=600, n_items=60, latent_dim=8)
    )
    return simulator, generate_logs(simulator, n_rounds=30_000, seed=0)


def test_causalnet_learns_exposure_and_outcome(world, tmp_path):
    simulator, logs = world
    model = make_recommender("causalnet", epochs=15, batch_size=2048, dim=16, hidden=16).fit(logs)
    # The propensity head separates logged pairs from random ones.
    rng = np.random.default_rng(0)
    users = torch.from_numpy(np.r_[logs.user_id[:2000], rng.integers(600, size=2000)])
    items = torch.from_numpy(np.r_[logs.item_id[:2000], rng.integers(60, size=2000)])
    with torch.no_grad():
        exposure_logit, _ = model.network_.heads(users, items)
    assert auc(exposure_logit.numpy(), np.r_[np.ones(2000), np.zeros(2000)]) > 0.7
    uniform = simulator.policy_value(simulator.uniform_policy())
    assert simulator.policy_value(model.policy(1)) > uniform + 0.2 * (
        simulator.oracle_value() - uniform
    )
    loaded = load_recommender(model.save(tmp_path / "causalnet"))
    np.testing.assert_allclose(loaded.score(np.arange(3)), model.score(np.arange(3)), rtol=1e-6)


def test_causalnet_bad_input(world):
    _, logs = world
    with pytest.raises(ConfigError, match="hidden and unexposed must be >= 1"):
        make_recommender("causalnet", hidden=0).fit(logs)
    with pytest.raises(ConfigError, match="targeted_weight must be >= 0; got -1"):
        make_recommender("causalnet", targeted_weight=-1).fit(logs)
