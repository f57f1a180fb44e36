"""G-computation with gradient boosting: recommend by E[click | x_u, z_i, do(position = 1)].

The direct method as a recommender: an outcome model of the click given observed user
features, item features and position is fitted on the exposed pairs with scikit-learn's
HistGradientBoostingClassifier; items are ranked by its prediction with the position set to the
top slot, which removes position bias from the ranking. It adjusts for confounding through the
observed features only (no propensities).

References:
    Robins, "A new approach to causal inference in mortality studies with a sustained exposure
    period", Mathematical Modelling 1986 (the g-formula).
    Hernán & Robins, "Causal Inference: What If", 2020, ch. 13.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from causalrec.methods.base import ModelState, Recommender
from causalrec.platform.errors import ConfigError, DataError
from causalrec.platform.feedback import LoggedFeedback

__all__ = ["GBoostRecommender"]


def _user_table(logs: LoggedFeedback) -> np.ndarray:
    """Per-user features: the log's user table, else each user's first logged features."""
    if logs.user_table is not None:
        return np.asarray(logs.user_table, dtype=np.float32)
    n_users = int(logs.user_id.max()) + 1
    table = np.zeros((n_users, logs.user_features.shape[1]), dtype=np.float32)
    first = np.unique(logs.user_id, return_index=True)[1]
    table[logs.user_id[first]] = logs.user_features[first]
    return table


class GBoostRecommender(Recommender):
    """G-computation (direct method) with HistGradientBoosting on observed features.

    Args:
        max_iter: Boosting iterations.
        learning_rate: Shrinkage.
        max_leaf_nodes: Leaves per tree.
        l2: L2 regularisation of the leaves.
        feedback: ``"exposed"`` (the only setting gboost supports).
        seed: Seed of the boosting (early-stopping split).
    """

    name: ClassVar[str] = "gboost"
    supported_feedback: ClassVar[tuple[str, ...]] = ("exposed",)

    def __init__(
        self,
        *,
        max_iter: int = 200,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 31,
        l2: float = 0.0,
        feedback: str = "exposed",
        seed: int = 0,
    ):
        self.max_iter, self.learning_rate = max_iter, learning_rate
        self.max_leaf_nodes, self.l2, self.feedback, self.seed = max_leaf_nodes, l2, feedback, seed

    def _rows(self, user_x: np.ndarray, items: np.ndarray, positions: np.ndarray) -> np.ndarray:
        return np.hstack([user_x, self.item_table_[items], positions[:, None]]).astype(np.float32)

    def fit(self, logs: LoggedFeedback, *, validation: LoggedFeedback | None = None):
        """Fit the outcome model on the exposed pairs.

        With ``validation``, ``validation_loss_`` is the model's log loss on it.
        """
        from sklearn.ensemble import HistGradientBoostingClassifier

        if self.feedback != "exposed":
            raise ConfigError(f"gboost supports feedback in ['exposed']; got {self.feedback!r}")
        if self.max_iter < 1 or not self.learning_rate > 0:
            raise ConfigError(
                f"max_iter must be >= 1 and learning_rate > 0; got {self.max_iter}, "
                f"{self.learning_rate}"
            )
        if logs.n_rows == 0 or np.unique(logs.click).size < 2:
            raise DataError("gboost needs both clicks and non-clicks in the log")
        items = logs.item_table if logs.item_table is not None else np.eye(logs.n_items)
        self.item_table_ = np.asarray(items, dtype=np.float32)
        self.user_table_ = _user_table(logs)
        rows = self._rows(logs.user_features, logs.item_id, logs.position.astype(np.float32))
        self.model_ = HistGradientBoostingClassifier(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            l2_regularization=self.l2,
            random_state=self.seed,
        ).fit(rows, logs.click)
        self.n_users_, self.n_items_ = len(self.user_table_), logs.n_items
        if validation is not None:
            from sklearn.metrics import log_loss

            rows = self._rows(
                validation.user_features, validation.item_id, validation.position.astype(np.float32)
            )
            self.validation_loss_ = float(
                log_loss(validation.click, self.model_.predict_proba(rows)[:, 1], labels=[0, 1])
            )
        return self

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        """P(click | x_u, z_i, position = 1) for every item (or ``items``)."""
        self._check_fitted()
        users = np.asarray(users, dtype=np.int64)
        items = np.arange(self.n_items_) if items is None else np.asarray(items, dtype=np.int64)
        out = np.empty((len(users), len(items)))
        per_chunk = max(1, 200_000 // max(len(items), 1))
        for start in range(0, len(users), per_chunk):
            chunk = users[start : start + per_chunk]
            rows = self._rows(
                np.repeat(self.user_table_[chunk], len(items), axis=0),
                np.tile(items, len(chunk)),
                np.zeros(len(chunk) * len(items), dtype=np.float32),
            )
            out[start : start + len(chunk)] = self.model_.predict_proba(rows)[:, 1].reshape(
                len(chunk), len(items)
            )
        return out

    def _get_state(self) -> ModelState:
        """The scikit-learn model (skops) and the user and item tables (safetensors)."""
        return ModelState(
            arrays={"users": self.user_table_, "items": self.item_table_},
            estimators={"model": self.model_},
        )

    def _set_state(self, state: ModelState, n_users: int, n_items: int) -> None:
        self.model_ = state.estimators["model"]
        self.user_table_ = np.asarray(state.arrays["users"], dtype=np.float32)
        self.item_table_ = np.asarray(state.arrays["items"], dtype=np.float32)
        self.n_users_, self.n_items_ = n_users, n_items
