"""Round histories: the user's earlier impressions in time order, never the round's own or later."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from causalrec.methods.history import round_histories
from causalrec.platform.errors import ConfigError
from causalrec.platform.session import NO_ITEM
from causalrec.simulators import ConfoundedRecSimulator, SimulatorConfig, generate_logs
from causalrec.simulators.session_logs import generate_session_logs


def _sessions(slate_size: int):
    # Few users, many sessions: every user has several sessions in several cohorts.
    world = ConfoundedRecSimulator(
        SimulatorConfig(n_users=12, n_items=30, slate_size=slate_size, session_length=4,
                        interest_drift=0.1, popularity_feedback=0.05, concurrent_sessions=20,
                        leave_base=0.2, leave_sensitivity=1.0, seed=2)
    )  # fmt: skip
    return generate_session_logs(world, n_sessions=200, seed=5)


def _by_hand(logs, round_id: int, length: int) -> tuple[list[int], list[int]]:
    """The history of one round by a plain loop over the log's rows."""
    clock = logs.timestamp if logs.timestamp is not None else logs.round_id
    row = int(np.flatnonzero(logs.round_id == round_id)[0])
    user = logs.user_id[row]
    earlier = [
        (clock[i], logs.round_id[i], logs.position[i], logs.item_id[i], logs.click[i])
        for i in range(logs.n_rows)
        if logs.user_id[i] == user and clock[i] < clock[row]
    ]
    earlier.sort()
    last = earlier[-length:]
    pad = length - len(last)
    return [NO_ITEM] * pad + [e[3] for e in last], [0] * pad + [e[4] for e in last]


@pytest.mark.parametrize("slate_size", [1, 3])
def test_histories_equal_a_plain_loop_over_the_log(slate_size):
    logs = _sessions(slate_size)
    # Popularity feedback runs sessions in cohorts: the clock spans several of them, and a user
    # has concurrent sessions within one (which must not see each other).
    assert logs.timestamp is not None and len(np.unique(logs.timestamp)) > 8
    histories = round_histories(logs, length=7)
    _, first_rows = np.unique(logs.round_id, return_index=True)
    np.testing.assert_array_equal(histories.round_id, logs.round_id[np.sort(first_rows)])
    for k in range(0, len(histories.round_id), 3):
        items, clicks = _by_hand(logs, int(histories.round_id[k]), 7)
        assert histories.items[k].tolist() == items
        assert histories.clicks[k].tolist() == clicks
        assert histories.length[k] == sum(item != NO_ITEM for item in items)
    assert (histories.length == 0).any() and (histories.length == 7).any()


def test_what_comes_after_a_round_never_enters_its_history():
    logs = _sessions(3)
    before = round_histories(logs, length=20)
    clock = logs.timestamp
    row = int(np.flatnonzero(logs.user_id == logs.user_id[0])[len(logs.user_id) // 50])
    user, when = logs.user_id[row], (clock[row], logs.round_id[row])
    later = (logs.user_id == user) & (clock >= when[0])  # the round, its time and after
    sentinel = dataclasses.replace(
        logs, item_id=np.where(later, 29, logs.item_id), click=np.where(later, 1, logs.click)
    )
    after = round_histories(sentinel, length=20)
    k = int(np.flatnonzero(before.round_id == logs.round_id[row])[0])
    np.testing.assert_array_equal(after.items[k], before.items[k])
    np.testing.assert_array_equal(after.clicks[k], before.clicks[k])
    # A round of the user at a later time sees the (sentinel) impressions of that time.
    next_time = clock[(logs.user_id == user) & (clock > when[0])].min()
    next_round = logs.round_id[(logs.user_id == user) & (clock == next_time)][0]
    nxt = int(np.flatnonzero(after.round_id == next_round)[0])
    assert (after.items[nxt][-3:] == 29).all() and (after.clicks[nxt][-3:] == 1).all()
    assert not (before.items[nxt][-3:] == 29).all()


def test_logs_without_timestamps_follow_the_round_ids(small_simulator):
    logs = generate_logs(small_simulator, n_rounds=400, seed=1)
    logs = dataclasses.replace(logs, timestamp=None, session_id=None, step=None, step_pscore=None)
    shuffled = logs.select(np.random.default_rng(0).permutation(logs.n_rows))
    histories = round_histories(shuffled, length=4)
    for k in range(0, len(histories.round_id), 17):
        items, clicks = _by_hand(shuffled, int(histories.round_id[k]), 4)
        assert histories.items[k].tolist() == items and histories.clicks[k].tolist() == clicks


def test_a_history_length_below_one_is_refused():
    with pytest.raises(ConfigError, match="history length must be >= 1; got 0"):
        round_histories(_sessions(1), length=0)
