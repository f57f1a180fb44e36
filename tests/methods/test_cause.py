import numpy as np
import pytest
import torch

from causalrec.methods import CausE, load_recommender, make_recommender
from causalrec.platform.errors import ConfigError, DataError
from causalrec.simulators import ConfoundedRecSimulator, generate_logs, load_simulator_config


@pytest.fixture(scope="module")
def world():
    simulator = ConfoundedRecSimulator(
        load_simulator_config(preset="confounded", n_users=600, n_items=60, latent_dim=8)
    )
    return simulator, generate_logs(simulator, n_rounds=30_000, seed=0, uniform_fraction=0.1)


def gap(model: CausE) -> float:
    network = model.network_
    with torch.no_grad():
        return float(torch.linalg.norm(network.item - network.control_item, dim=1).mean())


def test_cause_learns_and_its_penalty_ties_the_embeddings(world, tmp_path):
    simulator, logs = world
    loose = make_recommender("cause", distance_weight=0.0, epochs=15, batch_size=2048).fit(logs)
    tight = make_recommender("cause", distance_weight=5.0, epochs=15, batch_size=2048).fit(logs)
    assert gap(tight) < 0.5 * gap(loose)
    uniform = simulator.policy_value(simulator.uniform_policy())
    value = simulator.policy_value(tight.policy(1))
    assert value > uniform + 0.2 * (simulator.oracle_value() - uniform)
    loaded = load_recommender(tight.save(tmp_path / "cause"))
    assert isinstance(loaded, CausE) and gap(loaded) == pytest.approx(gap(tight))
    np.testing.assert_allclose(loaded.score(np.arange(4)), tight.score(np.arange(4)))


def test_cause_needs_a_uniform_slice(world):
    simulator, _ = world
    biased_only = generate_logs(simulator, n_rounds=2_000, seed=1, uniform_fraction=0.0)
    with pytest.raises(DataError, match=r"uniform-exposure slice .* --uniform-fraction"):
        make_recommender("cause", epochs=1).fit(biased_only)
    with pytest.raises(ConfigError, match="distance_weight must be >= 0; got -1"):
        make_recommender("cause", distance_weight=-1).fit(biased_only)
