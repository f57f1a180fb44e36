import numpy as np
import pytest

from causalrec.methods import load_recommender, make_recommender
from causalrec.platform.errors import ConfigError


def test_dice_interest_ranking_beats_naive_when_exposure_follows_popularity(
    popularity_world, tmp_path
):
    simulator, logs = popularity_world
    values = {
        name: [
            simulator.policy_value(
                make_recommender(name, feedback="implicit", epochs=15, seed=s).fit(logs).policy(1)
            )
            for s in range(2)
        ]
        for name in ("naive", "dice")
    }
    spread = max(np.std(values["naive"]), np.std(values["dice"]))
    assert np.mean(values["dice"]) - np.mean(values["naive"]) > max(3 * spread, 0.01), values
    model = make_recommender("dice", epochs=1, score_with="both").fit(logs)
    loaded = load_recommender(model.save(tmp_path / "dice"))
    np.testing.assert_allclose(loaded.score(np.arange(4)), model.score(np.arange(4)))


@pytest.mark.parametrize(
    ("params", "pattern"),
    [
        ({"score_with": "conformity"}, "score_with must be 'interest' or 'both'"),
        ({"alpha": -1.0}, "alpha must be >= 0; got -1.0"),
        ({"feedback": "exposed"}, r"dice supports feedback in \['implicit'\]"),
    ],
)
def test_dice_bad_input(popularity_world, params, pattern):
    _, logs = popularity_world
    with pytest.raises(ConfigError, match=pattern):
        make_recommender("dice", epochs=1, **params).fit(logs)
