import numpy as np
import pytest

from causalrec.methods import DRJointLearning, MoreRobustDR, load_recommender, make_recommender
from causalrec.platform.errors import ConfigError
from causalrec.simulators import ConfoundedRecSimulator, generate_logs, load_simulator_config


@pytest.fixture(scope="module")
def world():
    simulator = ConfoundedRecSimulator(
        load_simulator_config(preset="unconfounded", n_users=600, n_items=60, latent_dim=8)
    )
    return simulator, generate_logs(simulator, n_rounds=30_000, seed=0)


@pytest.mark.parametrize(("name", "cls"), [("dr_jl", DRJointLearning), ("mrdr", MoreRobustDR)])
def test_doubly_robust_models_learn_relevance(world, name, cls, tmp_path):
    simulator, logs = world
    model = make_recommender(name, epochs=20, dim=8, batch_size=2048, seed=0).fit(logs)
    assert isinstance(model, cls)
    value = simulator.policy_value(model.policy(1))
    uniform = simulator.policy_value(simulator.uniform_policy())
    # A learned top-1 policy must close a clear share of the gap from random exposure to the oracle.
    assert value > uniform + 0.2 * (simulator.oracle_value() - uniform), (value, uniform)
    assert np.isfinite(model.history_).all()
    loaded = load_recommender(model.save(tmp_path / name))
    np.testing.assert_allclose(loaded.score(np.arange(5)), model.score(np.arange(5)))


def test_mrdr_weights_differ_from_dr_jl(world):
    _, logs = world
    from causalrec.methods.data import InteractionData

    data = InteractionData.from_logs(logs)
    dr = DRJointLearning()._prepare(logs, data)
    mrdr = MoreRobustDR()._prepare(logs, data)
    np.testing.assert_allclose(dr["weight"], mrdr["weight"])
    p = logs.pscore
    expected = (1 - p) / p**2
    np.testing.assert_allclose(mrdr["imputation_weight"], expected / expected.mean(), rtol=1e-6)
    assert not np.allclose(dr["imputation_weight"], mrdr["imputation_weight"])


def test_doubly_robust_bad_input(world):
    _, logs = world
    with pytest.raises(ConfigError, match="imputation_samples must be >= 1; got 0"):
        make_recommender("dr_jl", imputation_samples=0).fit(logs)
    with pytest.raises(ConfigError, match=r"dr_jl supports feedback in \['exposed'\]"):
        make_recommender("dr_jl", feedback="implicit").fit(logs)
