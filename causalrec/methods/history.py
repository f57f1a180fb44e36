"""Each logged round's view of its user's past: the last L impressions before it, never after.

A sequential recommender scores the items of a round from the user's history: the items shown
to that user earlier and whether they were clicked, across sessions, in time order. This module
rebuilds that history for every round of a log, so that nothing at or after the round can enter
it:

* a user's impressions are ordered by ``timestamp`` (schema v2: cohort × session length + step,
  the world clock), then by round id and position; logs without timestamps (schema v1) use the
  round id, which follows the clock in every causalrec writer;
* the history of a round holds the user's impressions at *strictly earlier* times only: not the
  other positions of its own slate, and not the rounds of the user's concurrent sessions at the
  same clock value (they happened at once); the most recent last, padded on the left with
  :data:`~causalrec.platform.session.NO_ITEM` and click 0.

References:
    Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018 (the next-item
    setting this history feeds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from causalrec.platform.errors import ConfigError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.session import NO_ITEM

__all__ = ["RoundHistories", "round_histories"]


@dataclass(frozen=True)
class RoundHistories:
    """The history of every round of a log.

    Attributes:
        round_id: The rounds, in the log's order of first appearance, shape (n_rounds,).
        user_id: Each round's user, shape (n_rounds,).
        items: The user's last L impressions before the round, oldest first, shape
            (n_rounds, L); :data:`NO_ITEM` where the user has fewer.
        clicks: Their clicks, shape (n_rounds, L), int8 (0 where there is no item).
        length: How many of the L positions hold an impression, shape (n_rounds,).
    """

    round_id: np.ndarray
    user_id: np.ndarray
    items: np.ndarray
    clicks: np.ndarray
    length: np.ndarray


def round_histories(logs: LoggedFeedback, length: int) -> RoundHistories:
    """The last ``length`` impressions of each round's user before that round.

    Args:
        logs: A log (schema v1 or v2; K rows per round).
        length: L, the impressions a history holds (>= 1).

    Returns:
        One history per round, in the order the rounds first appear in ``logs``.

    Raises:
        ConfigError: If ``length`` < 1.
    """
    if length < 1:
        raise ConfigError(f"history length must be >= 1; got {length}")
    n = logs.n_rows
    clock = logs.timestamp if logs.timestamp is not None else logs.round_id
    # The user's impressions in time order: user, then clock, round and position.
    order = np.lexsort((logs.position, logs.round_id, clock, logs.user_id))
    users, rounds = logs.user_id[order], logs.round_id[order]
    times = clock[order]
    new_user = np.r_[True, users[1:] != users[:-1]]
    new_time = new_user | np.r_[True, times[1:] != times[:-1]]
    new_round = new_time | np.r_[True, rounds[1:] != rounds[:-1]]
    user_start = np.maximum.accumulate(np.where(new_user, np.arange(n), 0))
    time_start = np.maximum.accumulate(np.where(new_time, np.arange(n), 0))
    # A round's history ends just before the user's first impression at the round's time.
    first = np.flatnonzero(new_round)
    end = time_start[first]
    window = end[:, None] - length + np.arange(length)  # (n_rounds, L) positions in `order`
    inside = window >= user_start[first][:, None]
    taken = np.where(inside, window, 0)
    items = np.where(inside, logs.item_id[order][taken], NO_ITEM).astype(np.int64)
    clicks = np.where(inside, logs.click[order][taken], 0).astype(np.int8)
    # Back to the log's order of rounds (by the row of each round's first position).
    back = np.argsort(order[first], kind="stable")
    return RoundHistories(
        round_id=rounds[first][back],
        user_id=users[first][back],
        items=items[back],
        clicks=clicks[back],
        length=inside.sum(axis=1)[back],
    )
