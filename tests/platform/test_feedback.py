"""LoggedFeedback's constructors and splits."""

import numpy as np
import pytest

from causalrec.platform.errors import DataError
from causalrec.platform.feedback import LoggedFeedback


def _slates(n=5, k=2, first_round=0):
    rng = np.random.default_rng(0)
    slates = np.stack([rng.permutation(6)[:k] for _ in range(n)])
    return dict(
        users=np.arange(n) % 3,
        slates=slates,
        clicks=rng.integers(0, 2, size=(n, k)),
        pscore=np.full((n, k), 0.25),
        pscore_prefix=np.cumprod(np.full((n, k), 0.25), axis=1),
        user_features=rng.normal(size=(n, 4)),
        policy="p",
        n_items=6,
        first_round=first_round,
    )


def test_from_slates_lays_out_one_row_per_shown_item():
    arguments = _slates(n=5, k=2, first_round=7)
    logs = LoggedFeedback.from_slates(**arguments)
    assert logs.n_rows == 10 and logs.slate_size == 2 and logs.n_rounds == 5
    np.testing.assert_array_equal(logs.round_id, np.repeat(np.arange(7, 12), 2))
    np.testing.assert_array_equal(logs.position, np.tile([0, 1], 5))
    np.testing.assert_array_equal(logs.item_id.reshape(5, 2), arguments["slates"])
    np.testing.assert_array_equal(logs.click.reshape(5, 2), arguments["clicks"])
    np.testing.assert_array_equal(logs.user_id, np.repeat(arguments["users"], 2))
    np.testing.assert_allclose(logs.pscore_prefix[1::2], 0.0625)
    np.testing.assert_allclose(logs.user_features[::2], arguments["user_features"], rtol=1e-6)
    assert np.isnan(logs.expected_reward).all() and set(logs.policy) == {"p"}
    assert logs.click.dtype == np.int8 and logs.user_features.dtype == np.float32


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("users", np.arange(4), "users must have shape \\(5,\\)"),
        ("clicks", np.zeros((5, 3)), "clicks must have shape \\(5, 2\\)"),
        ("pscore", np.zeros(10), "pscore must have shape \\(5, 2\\)"),
        ("user_features", np.zeros((4, 2)), "user_features must have shape \\(5, d\\)"),
    ],
)
def test_from_slates_names_the_bad_argument(name, value, message):
    arguments = _slates()
    arguments[name] = value
    with pytest.raises(DataError, match=message):
        LoggedFeedback.from_slates(**arguments)


def test_split_by_round_keeps_rounds_whole_and_in_order():
    logs = LoggedFeedback.from_slates(**_slates(n=10, k=2))
    train, held_out = logs.split_by_round(0.3)
    assert (train.n_rounds, held_out.n_rounds) == (7, 3)
    assert train.round_id.max() < held_out.round_id.min()
    assert train.n_rows + held_out.n_rows == logs.n_rows
    with pytest.raises(DataError, match=r"held_out_fraction must be in \(0, 1\); got 1\.0"):
        logs.split_by_round(1.0)
