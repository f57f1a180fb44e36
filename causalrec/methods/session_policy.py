"""A sequential recommender acting on sessions: its scores follow the session's history.

A transformer model (``backbone="transformer"``) scores a user from the user's impressions. In a
dynamic world the request at step t of a session carries the session's last L slates
(:class:`~causalrec.platform.session.SessionContext`); :class:`HistoryPolicy` appends them to
what the model knew of the user at the end of its training log and draws slates from the
resulting scores, with the exact propensities of the chosen exploration (top-k, ε-greedy or
Plackett–Luce softmax, :func:`~causalrec.platform.policy.make_policy`).
"""

from __future__ import annotations

import numpy as np

from causalrec.methods.history import last_impressions
from causalrec.platform.policy import Exploration, Policy, RowScorer, SlateSample, make_policy
from causalrec.platform.session import NO_ITEM, SessionContext, SessionPolicy

__all__ = ["HistoryPolicy"]


class HistoryPolicy(SessionPolicy):
    """Slates of a history-scoring model given each session's context.

    Args:
        model: A fitted recommender whose ``score(users, history=(items, clicks))`` reads
            histories (a ``transformer`` backbone) and that holds ``user_history_``, each known
            user's latest impressions, shape (n_users, L) each.
        k: Slate size.
        exploration: How slates are drawn from the scores.
        name: Identifier written into logs and tables.
    """

    def __init__(self, model, k: int, exploration: Exploration, *, name: str):
        self.model, self.exploration, self.name = model, exploration, name
        self.n_items, self.slate_size = model.n_items_, k

    def histories(self, context: SessionContext) -> tuple[np.ndarray, np.ndarray]:
        """Each session's user history then its own steps, oldest first, shape (n, L + L_s·K)."""
        stored_items, stored_clicks = self.model.user_history_
        known = context.users < len(stored_items)
        users = np.where(known, context.users, 0)
        before = np.where(known[:, None], stored_items[users], NO_ITEM)
        before_clicks = np.where(known[:, None], stored_clicks[users], 0)
        steps = context.history_items.reshape(context.n, -1)  # step by step, position order
        step_clicks = context.history_clicks.reshape(context.n, -1)
        return (
            np.concatenate([before, steps], axis=1),
            np.concatenate([before_clicks, step_clicks], axis=1).astype(np.int8),
        )

    def request_histories(self, context: SessionContext) -> list[dict[str, list[int]]]:
        """Each session's last ``history_length`` impressions, as ``/recommend``'s ``history``.

        A server given these scores each session as :meth:`histories` does here (the model
        reads only the last L impressions), so served and local slates agree.
        """
        items, clicks = last_impressions(*self.histories(context), self.model.history_length)
        shown = items != NO_ITEM
        return [
            {"items": row[keep].tolist(), "clicks": row_clicks[keep].tolist()}
            for row, row_clicks, keep in zip(items, clicks, shown, strict=True)
        ]

    def _policy(self, context: SessionContext) -> Policy:
        scores = self.model.score(context.users, history=self.histories(context))
        return make_policy(
            RowScorer(scores), self.slate_size, self.exploration, name=self.name,
            cache_marginals=False,
        )  # fmt: skip

    def sample_session(self, context: SessionContext, rng: np.random.Generator) -> SlateSample:
        """Draw one slate per session from the scores given its history."""
        return self._policy(context).sample(np.arange(context.n), rng)

    def session_action_distribution(self, context: SessionContext) -> np.ndarray:
        """Item–position marginals given each session's history."""
        return self._policy(context).action_distribution(np.arange(context.n))

    def slate_probability(self, context: SessionContext, slates: np.ndarray) -> np.ndarray:
        """``P(slate | context)`` of whole slates, shape (n,)."""
        slates = np.asarray(slates)
        return self._policy(context).prefix_probability(np.arange(context.n), slates)[:, -1]
