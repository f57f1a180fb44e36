"""Logged sessions as per-step arrays, and the policy's view of each logged step.

A session log (schema version 2: ``session_id``, ``step``) is rebuilt into arrays of shape
(n_sessions, T, ...) in step order, so each logged step's context (the user, the step, the last
L slates and clicks of the same session) can be handed to a
:class:`~causalrec.platform.session.SessionPolicy`. Only earlier steps of a session enter its
context: nothing of the future leaks into a step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from causalrec.platform.errors import DataError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.session import NO_ITEM, SessionContext, SessionPolicy

__all__ = ["LoggedSessions"]


@dataclass(frozen=True)
class LoggedSessions:
    """A session log per session and step (n sessions, T steps, K positions).

    Attributes:
        session_id: Session ids, shape (n,), ascending.
        users: The user of each session, shape (n,).
        mask: Whether step t of the session was logged, shape (n, T) (False after leaving).
        slates: Shown items, shape (n, T, K), ``NO_ITEM`` where not logged.
        clicks: Clicks, shape (n, T, K), int8.
        step_pscore: The logger's probability of each step's whole slate, shape (n, T) (1 where
            not logged).
        user_features: The observed features of each session's user, shape (n, d).
        window: L, the steps of history a context holds.
        n_items: Catalogue size.
    """

    session_id: np.ndarray
    users: np.ndarray
    mask: np.ndarray
    slates: np.ndarray
    clicks: np.ndarray
    step_pscore: np.ndarray
    user_features: np.ndarray
    window: int
    n_items: int

    @property
    def n_sessions(self) -> int:
        """Number of sessions."""
        return len(self.session_id)

    @property
    def horizon(self) -> int:
        """T, the steps per (padded) session."""
        return self.mask.shape[1]

    @property
    def slate_size(self) -> int:
        """K."""
        return self.slates.shape[2]

    @property
    def reward(self) -> np.ndarray:
        """Clicks per step (summed over the slate), shape (n, T), 0 where not logged."""
        return self.clicks.sum(axis=2, dtype=np.float64)

    @classmethod
    def from_logs(
        cls, logs: LoggedFeedback, *, horizon: int | None = None, window: int = 10
    ) -> LoggedSessions:
        """Rebuild the sessions of ``logs``.

        Args:
            logs: A log with session columns (a version-1 log is read as one-step sessions).
            horizon: T; defaults to the largest step + 1.
            window: L, the history steps a context holds.

        Raises:
            DataError: If a session has two users, a step twice, a gap in its steps, a step at
                or beyond ``horizon``, or a missing ``step_pscore``.
        """
        if logs.n_rows == 0:
            raise DataError("the log has no rows: there are no sessions to evaluate")
        if window < 1:
            raise DataError(f"window must be >= 1; got {window}")
        steps = int(logs.step.max()) + 1
        horizon = steps if horizon is None else int(horizon)
        if steps > horizon:
            raise DataError(f"step {steps - 1} is beyond horizon={horizon} (steps 0..T-1)")
        session_ids, index = np.unique(logs.session_id, return_inverse=True)
        n, K = len(session_ids), logs.slate_size
        users = np.full(n, -1, dtype=np.int64)
        users[index] = logs.user_id
        features = np.zeros((n, logs.user_features.shape[1]), dtype=np.float32)
        features[index] = logs.user_features
        if (users[index] != logs.user_id).any():
            row = int(np.flatnonzero(users[index] != logs.user_id)[0])
            raise DataError(f"session_id {logs.session_id[row]} has more than one user_id")
        cell = (index * horizon + logs.step) * K + logs.position
        if len(np.unique(cell)) != len(cell):
            raise DataError("a (session_id, step, position) appears more than once in the log")
        slates = np.full(n * horizon * K, NO_ITEM, dtype=np.int64)
        clicks = np.zeros(n * horizon * K, dtype=np.int8)
        slates[cell], clicks[cell] = logs.item_id, logs.click
        first = logs.position == 0
        mask = np.zeros(n * horizon, dtype=bool)
        mask[index[first] * horizon + logs.step[first]] = True
        mask = mask.reshape(n, horizon)
        gaps = mask[:, 1:] & ~mask[:, :-1]
        if gaps.any():
            session = int(np.flatnonzero(gaps.any(axis=1))[0])
            raise DataError(
                f"session_id {session_ids[session]} skips a step: steps must run 0, 1, 2, ..."
            )
        step_pscore = np.ones(n * horizon)
        step_pscore[index[first] * horizon + logs.step[first]] = logs.step_pscore[first]
        if np.isnan(step_pscore).any():
            raise DataError(
                "step_pscore is missing (null) for some logged steps: sequential estimators "
                "need the logger's probability of each step"
            )
        return cls(
            session_id=session_ids,
            users=users,
            mask=mask,
            slates=slates.reshape(n, horizon, K),
            clicks=clicks.reshape(n, horizon, K),
            step_pscore=step_pscore.reshape(n, horizon),
            user_features=features,
            window=window,
            n_items=logs.n_items,
        )

    def context(self, step: int, rows: np.ndarray | None = None) -> SessionContext:
        """The context of ``step`` for sessions ``rows`` (default: all): earlier steps only."""
        rows = np.arange(self.n_sessions) if rows is None else rows
        L, K = self.window, self.slate_size
        items = np.full((len(rows), L, K), NO_ITEM, dtype=np.int64)
        clicks = np.zeros((len(rows), L, K), dtype=np.int8)
        start = max(0, step - L)
        if step > 0:
            items[:, L - (step - start) :] = self.slates[rows, start:step]
            clicks[:, L - (step - start) :] = self.clicks[rows, start:step]
        return SessionContext(
            users=self.users[rows],
            step=np.full(len(rows), step, dtype=np.int64),
            history_items=items,
            history_clicks=clicks,
        )

    def policy_ratio(self, policy: SessionPolicy) -> np.ndarray:
        """Per-step ratios π(slate_t | s_t) / π_0(slate_t | s_t), shape (n, T); 1 if not logged."""
        ratio = np.ones(self.mask.shape)
        for step in range(self.horizon):
            rows = np.flatnonzero(self.mask[:, step])
            if len(rows):
                probability = policy.slate_probability(
                    self.context(step, rows), self.slates[rows, step]
                )
                ratio[rows, step] = probability / self.step_pscore[rows, step]
        return ratio
