"""Estimated propensity scores for logs that do not record them.

A multinomial logistic regression of the logged item given the user features (and position)
gives π̂_0(a | x, k); the pscore of a row is its prediction at the logged item. Estimates are
clipped below at ``min_pscore`` so that one poorly predicted row cannot dominate.
"""

from __future__ import annotations

import numpy as np

from causalrec.platform.feedback import LoggedFeedback

__all__ = ["estimate_pscore"]

#: Method description written into evaluation tables.
METHOD = "estimated: multinomial logistic regression of item on user features and position"


def estimate_pscore(logs: LoggedFeedback, *, min_pscore: float = 1e-4, seed: int = 0) -> np.ndarray:
    """Estimate ``P(logged item | user features, position)`` for every row, shape (n_rows,)."""
    from sklearn.linear_model import LogisticRegression

    x = logs.user_features.astype(np.float64)
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)
    if logs.slate_size > 1:
        x = np.hstack([x, np.eye(logs.slate_size)[logs.position]])
    classes = np.unique(logs.item_id)
    if len(classes) == 1:
        return np.ones(logs.n_rows)
    model = LogisticRegression(max_iter=300, random_state=seed).fit(x, logs.item_id)
    proba = model.predict_proba(x)
    column = np.searchsorted(model.classes_, logs.item_id)
    return np.clip(proba[np.arange(logs.n_rows), column], min_pscore, 1.0)
