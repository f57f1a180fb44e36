"""Training data for recommenders, built once from a :class:`LoggedFeedback`.

Two feedback settings:

* ``exposed``: train on the exposed (user, item) pairs with their click labels — the explicit
  missing-not-at-random setting of Schnabel et al. (2016) and Wang et al. (2019). Each logged
  impression is one example; its propensity is the probability that the logger showed it.
* ``implicit``: clicks are positives and every other user–item pair is an unlabelled negative;
  exposure is unobserved (Saito et al. 2020). Positives are the distinct clicked pairs;
  negatives are drawn uniformly from all pairs at every epoch.

References:
    Schnabel, Swaminathan, Singh, Chandak, Joachims, "Recommendations as Treatments", ICML 2016.
    Wang, Zhang, Sun, Qi, "Doubly Robust Joint Learning for Recommendation on Data Missing Not
    at Random", ICML 2019.
    Saito, Yaginuma, Nishino, Sakata, Nakata, "Unbiased Recommender Learning from
    Missing-Not-At-Random Implicit Feedback", WSDM 2020.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from causalrec.platform.errors import ConfigError, DataError
from causalrec.platform.feedback import LoggedFeedback

__all__ = ["Feedback", "InteractionData"]

Feedback = Literal["exposed", "implicit"]


@dataclass(frozen=True)
class InteractionData:
    """User–item examples for training, as contiguous numpy arrays.

    Attributes:
        users: User ids, shape (n,).
        items: Item ids, shape (n,).
        labels: Click labels in {0, 1}, shape (n,), float32.
        pscore: The logger's probability of the example's exposure, shape (n,) (NaN if unknown).
        n_users: Number of users (max id + 1 over the log's user table and rows).
        n_items: Catalogue size.
        feedback: ``exposed`` or ``implicit``.
        user_features: Per-user features, shape (n_users, d_user), or ``None``.
        item_features: Per-item features, shape (n_items, d_item), or ``None``.
        exposure_counts: Impressions per item in the log, shape (n_items,).
    """

    users: np.ndarray
    items: np.ndarray
    labels: np.ndarray
    pscore: np.ndarray
    n_users: int
    n_items: int
    feedback: Feedback
    user_features: np.ndarray | None
    item_features: np.ndarray | None
    exposure_counts: np.ndarray

    @classmethod
    def from_logs(cls, logs: LoggedFeedback, feedback: Feedback = "exposed") -> InteractionData:
        """Build the examples of a feedback setting from a log."""
        if feedback not in ("exposed", "implicit"):
            raise ConfigError(f"feedback must be 'exposed' or 'implicit'; got {feedback!r}")
        if logs.n_rows == 0:
            raise DataError("the log is empty: nothing to train on")
        n_users = int(logs.user_id.max()) + 1
        if logs.user_table is not None:
            n_users = max(n_users, len(logs.user_table))
        exposure = np.bincount(logs.item_id, minlength=logs.n_items).astype(np.float64)
        if feedback == "exposed":
            users, items = logs.user_id, logs.item_id
            labels, pscore = logs.click.astype(np.float32), logs.pscore
        else:
            clicked = logs.click > 0
            pairs = np.unique(logs.user_id[clicked] * logs.n_items + logs.item_id[clicked])
            users, items = pairs // logs.n_items, pairs % logs.n_items
            labels = np.ones(len(pairs), dtype=np.float32)
            pscore = np.full(len(pairs), np.nan)
        return cls(
            users=np.ascontiguousarray(users, dtype=np.int64),
            items=np.ascontiguousarray(items, dtype=np.int64),
            labels=labels,
            pscore=np.asarray(pscore, dtype=np.float64),
            n_users=n_users,
            n_items=logs.n_items,
            feedback=feedback,
            user_features=_table(logs.user_table),
            item_features=_table(logs.item_table),
            exposure_counts=exposure,
        )

    @classmethod
    def catalogue(
        cls,
        n_users: int,
        n_items: int,
        feedback: Feedback,
        user_features: np.ndarray | None = None,
        item_features: np.ndarray | None = None,
    ) -> InteractionData:
        """The users, items and feature tables of a log, without its examples.

        What training from a stream of log rows (:mod:`causalrec.methods.streaming`) builds its
        networks and draws its samples from; the examples arrive batch by batch.
        """
        empty = np.zeros(0, dtype=np.int64)
        return cls(
            users=empty,
            items=empty,
            labels=np.zeros(0, dtype=np.float32),
            pscore=np.zeros(0),
            n_users=int(n_users),
            n_items=int(n_items),
            feedback=feedback,
            user_features=_table(user_features),
            item_features=_table(item_features),
            exposure_counts=np.zeros(int(n_items)),
        )

    @property
    def n_examples(self) -> int:
        """Number of (positive or exposed) examples."""
        return len(self.users)


def _table(table: np.ndarray | None) -> np.ndarray | None:
    return None if table is None else np.ascontiguousarray(table, dtype=np.float32)
