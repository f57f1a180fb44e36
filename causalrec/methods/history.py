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

__all__ = [
    "RoundHistories",
    "append_to_histories",
    "last_impressions",
    "latest_histories",
    "round_histories",
]


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


def latest_histories(
    logs: LoggedFeedback, length: int, n_users: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's last ``length`` impressions in the whole log (what a model knows at the end).

    Args:
        logs: A log (schema v1 or v2).
        length: L (>= 1).
        n_users: Rows of the result; users absent from the log get an empty history.

    Returns:
        ``(items, clicks)``, each of shape (n_users, L), oldest first, left-padded with
        :data:`NO_ITEM` and click 0.
    """
    if length < 1:
        raise ConfigError(f"history length must be >= 1; got {length}")
    clock = logs.timestamp if logs.timestamp is not None else logs.round_id
    order = np.lexsort((logs.position, logs.round_id, clock, logs.user_id))
    users = logs.user_id[order]
    # Rank of each impression from the user's last one: 0 for the most recent.
    last = np.r_[users[1:] != users[:-1], True]
    end = np.minimum.accumulate(np.where(last, np.arange(len(users)), len(users))[::-1])[::-1]
    from_end = end - np.arange(len(users))
    kept = from_end < length
    items = np.full((n_users, length), NO_ITEM, dtype=np.int64)
    clicks = np.zeros((n_users, length), dtype=np.int8)
    rows, columns = users[kept], length - 1 - from_end[kept]
    items[rows, columns] = logs.item_id[order][kept]
    clicks[rows, columns] = logs.click[order][kept]
    return items, clicks


def append_to_histories(
    items: np.ndarray, clicks: np.ndarray, new_items: np.ndarray, new_clicks: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Histories extended by newer impressions, keeping the last L (empty slots dropped).

    Args:
        items: Histories, shape (n, L), oldest first, :data:`NO_ITEM` where empty.
        clicks: Their clicks, shape (n, L).
        new_items: Newer impressions, shape (n, m), oldest first (e.g. a session's last steps
            flattened step by step), :data:`NO_ITEM` where empty.
        new_clicks: Their clicks, shape (n, m).

    Returns:
        ``(items, clicks)`` of shape (n, L): the last L non-empty impressions of both, oldest
        first, left-padded.
    """
    length = items.shape[1]
    joined = np.concatenate([items, np.asarray(new_items, dtype=np.int64)], axis=1)
    joined_clicks = np.concatenate([clicks, np.asarray(new_clicks, dtype=np.int8)], axis=1)
    # Empty slots first, then the impressions in their order (a stable sort on "non-empty").
    order = np.argsort(joined != NO_ITEM, axis=1, kind="stable")[:, -length:]
    taken = np.take_along_axis(joined, order, axis=1)
    taken_clicks = np.take_along_axis(joined_clicks, order, axis=1)
    return taken, np.where(taken == NO_ITEM, 0, taken_clicks).astype(np.int8)


def last_impressions(
    items: np.ndarray, clicks: np.ndarray, length: int
) -> tuple[np.ndarray, np.ndarray]:
    """The last ``length`` non-empty impressions of each history, shape (n, length) each.

    Args:
        items: Histories, shape (n, m), oldest first, :data:`NO_ITEM` where empty.
        clicks: Their clicks, shape (n, m).
        length: L, the impressions kept.

    Returns:
        ``(items, clicks)``, oldest first, left-padded with :data:`NO_ITEM` (clicks 0).
    """
    n = len(items)
    empty = np.full((n, length), NO_ITEM, dtype=np.int64)
    return append_to_histories(empty, np.zeros((n, length), dtype=np.int8), items, clicks)
