import numpy as np
import pytest

from causalrec.methods import load_recommender, make_recommender
from causalrec.platform.errors import ConfigError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.simulators import ConfoundedRecSimulator, generate_logs, load_simulator_config


@pytest.fixture(scope="module")
def world():
    simulator = ConfoundedRecSimulator(
        load_simulator_config(preset="unconfounded", n_users=800, n_items=60, latent_dim=8)
    )
    return simulator, generate_logs(simulator, n_rounds=40_000, seed=0)


def top1_relevance(simulator, model, users):
    chosen = np.argmax(model.score(users), axis=1)
    return simulator.relevance(users)[np.arange(len(users)), chosen].mean()


def test_two_tower_generalises_to_unseen_users(world, tmp_path):
    simulator, logs = world
    seen = logs.select(logs.user_id < 400)  # users 400..799 never appear in training
    unseen = np.arange(400, 800)
    params = dict(epochs=20, batch_size=2048, dim=16)
    mf = make_recommender("naive", **params).fit(seen)
    towers = make_recommender("naive", backbone="two_tower", **params).fit(seen)
    assert top1_relevance(simulator, towers, unseen) > top1_relevance(simulator, mf, unseen) + 0.05
    loaded = load_recommender(towers.save(tmp_path / "towers"))
    np.testing.assert_allclose(loaded.score(unseen[:5]), towers.score(unseen[:5]), rtol=1e-6)


def test_two_tower_bad_input(world):
    _, logs = world
    with pytest.raises(ConfigError, match=r"cause supports backbone in \['mf'\]; got 'two_tower'"):
        make_recommender("cause", backbone="two_tower").fit(logs)
    with pytest.raises(
        ConfigError, match=r"ips supports backbone in .*'transformer'\]; got 'bert'"
    ):
        make_recommender("ips", backbone="bert").fit(logs)
    bare = LoggedFeedback(
        **{name: getattr(logs, name) for name in LoggedFeedback.ROW_FIELDS}, n_items=logs.n_items
    )
    with pytest.raises(ConfigError, match="needs the log's user and item feature tables"):
        make_recommender("naive", backbone="two_tower").fit(bare)


def test_score_features_scores_users_by_their_features(world):
    _, logs = world
    towers = make_recommender("naive", backbone="two_tower", epochs=2, dim=8).fit(logs)
    users = np.array([3, 50, 700])
    np.testing.assert_allclose(
        towers.score_features(logs.user_table[users]), towers.score(users), rtol=1e-6
    )
    with pytest.raises(Exception, match=r"user_features: expected rows of \d+ features"):
        towers.score_features(np.zeros((2, 1)))
    with pytest.raises(Exception, match="user_features: values must be finite"):
        towers.score_features(np.full((1, logs.user_table.shape[1]), np.nan))
    mf = make_recommender("naive", epochs=1).fit(logs)
    with pytest.raises(ConfigError, match="needs backbone='two_tower'"):
        mf.score_features(logs.user_table[users])
