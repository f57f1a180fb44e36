import numpy as np
import pytest

from causalrec.methods import GBoostRecommender, load_recommender, make_recommender
from causalrec.platform.errors import ConfigError
from causalrec.simulators import ConfoundedRecSimulator, generate_logs, load_simulator_config


@pytest.fixture(scope="module")
def world():
    simulator = ConfoundedRecSimulator(
        load_simulator_config(preset="confounded", n_users=600, n_items=60, latent_dim=8)
    )
    return simulator, generate_logs(simulator, n_rounds=20_000, seed=0)


def test_g_computation_ranks_by_position_one_outcome(world, tmp_path):
    simulator, logs = world
    model = make_recommender("gboost", max_iter=60).fit(logs)
    assert isinstance(model, GBoostRecommender)
    users = np.arange(4)
    scores = model.score(users)
    assert scores.shape == (4, simulator.n_items)
    np.testing.assert_allclose(model.score(users, np.array([7, 2])), scores[:, [7, 2]])
    value = simulator.policy_value(model.policy(1))
    uniform = simulator.policy_value(simulator.uniform_policy())
    assert value > uniform + 0.2 * (simulator.oracle_value() - uniform)
    loaded = load_recommender(model.save(tmp_path / "gboost"))
    np.testing.assert_allclose(loaded.score(users), scores)


def test_gboost_bad_input(world):
    _, logs = world
    with pytest.raises(ConfigError, match=r"gboost supports feedback in \['exposed'\]"):
        make_recommender("gboost", feedback="implicit").fit(logs)
    with pytest.raises(ConfigError, match="max_iter must be >= 1"):
        make_recommender("gboost", max_iter=0).fit(logs)
