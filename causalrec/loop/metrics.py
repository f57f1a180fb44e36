"""What a recommender does to its world: exposure concentration and interest homogenisation.

Every function takes plain arrays (a log's ``item_id`` and ``click`` columns, a popularity
vector, a matrix of user preferences), so the closed loop, the A/B runner and notebooks share one
definition of each measure.

References:
    Chaney, Stewart, Engelhardt, "How Algorithmic Confounding in Recommendation Systems Increases
    Homogeneity and Decreases Utility", RecSys 2018 (homogenisation as mean pairwise similarity).
    Abdollahpouri, Burke, Mobasher, "Managing Popularity Bias in Recommender Systems with
    Personalized Re-ranking", FLAIRS 2019 (the long tail as the items outside the head that
    holds the top 20%).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from causalrec.platform.errors import DataError

__all__ = [
    "METRICS",
    "Metric",
    "catalogue_coverage",
    "exposure_gini",
    "exposure_measures",
    "interest_homogenisation",
    "long_tail_items",
    "long_tail_share",
]


def _item_ids(items: np.ndarray, n_items: int, name: str = "items") -> np.ndarray:
    items = np.asarray(items)
    if items.ndim != 1 or items.dtype.kind not in "iu":
        raise DataError(f"{name} must be a 1-d integer array; got {items.dtype} {items.shape}")
    if len(items) and (items.min() < 0 or items.max() >= n_items):
        raise DataError(
            f"{name} must be in [0, n_items={n_items}); got {items.min()}..{items.max()}"
        )
    return items


def long_tail_items(popularity: np.ndarray, head_share: float = 0.2) -> np.ndarray:
    """The long tail: items outside the top ``head_share`` of the catalogue by popularity.

    Args:
        popularity: Base popularity per item, shape (n_items,).
        head_share: Share of the catalogue in the head, in (0, 1); ties at the cut go to the
            head in item-id order.

    Returns:
        Boolean mask of shape (n_items,), True for tail items.
    """
    popularity = np.asarray(popularity, dtype=np.float64)
    if popularity.ndim != 1 or len(popularity) == 0:
        raise DataError(f"popularity must be a non-empty 1-d array; got shape {popularity.shape}")
    if not 0 < head_share < 1:
        raise DataError(f"head_share must be in (0, 1); got {head_share}")
    n_head = int(np.ceil(head_share * len(popularity)))
    order = np.argsort(-popularity, kind="stable")
    tail = np.ones(len(popularity), dtype=bool)
    tail[order[:n_head]] = False
    return tail


def long_tail_share(
    items: np.ndarray, tail: np.ndarray, weights: np.ndarray | None = None
) -> float:
    """Share of impressions (or of ``weights``, e.g. clicks) that went to tail items.

    Args:
        items: Shown item per impression, shape (n,).
        tail: Tail mask of :func:`long_tail_items`, shape (n_items,).
        weights: Per-impression weights (clicks for the click share), shape (n,), or ``None``.

    Returns:
        The share in [0, 1]; NaN when the total weight is 0.
    """
    items = _item_ids(items, len(tail))
    weights = np.ones(len(items)) if weights is None else np.asarray(weights, dtype=np.float64)
    if weights.shape != items.shape:
        raise DataError(f"weights must have shape {items.shape} as items; got {weights.shape}")
    total = float(weights.sum())
    return float(weights[tail[items]].sum() / total) if total > 0 else float("nan")


def catalogue_coverage(items: np.ndarray, n_items: int) -> float:
    """Share of the catalogue shown at least once, in [0, 1]."""
    items = _item_ids(items, n_items)
    return float(len(np.unique(items)) / n_items)


def exposure_gini(items: np.ndarray, n_items: int) -> float:
    """Gini coefficient of the exposure counts over the whole catalogue (0 even, → 1 one item).

    Items never shown count as 0, so a policy that ignores most of the catalogue scores high.
    G = Σ_i (2i − n − 1) c_(i) / (n Σ c), with c_(i) the counts in increasing order.
    """
    items = _item_ids(items, n_items)
    counts = np.sort(np.bincount(items, minlength=n_items)).astype(np.float64)
    total = counts.sum()
    if total == 0:
        return float("nan")
    rank = np.arange(1, n_items + 1)
    return float(((2 * rank - n_items - 1) * counts).sum() / (n_items * total))


def interest_homogenisation(preferences: np.ndarray) -> float:
    """Mean pairwise cosine similarity of user preference vectors (Chaney et al. 2018).

    Computed without the (n, n) matrix: with unit rows v_u, Σ_{u≠w} v_u·v_w = |Σ_u v_u|² − n.

    Args:
        preferences: θ_u per user, shape (n_users, d), n_users >= 2; zero rows are refused.

    Returns:
        The mean over ordered pairs of distinct users, in [−1/(n−1), 1].
    """
    theta = np.asarray(preferences, dtype=np.float64)
    if theta.ndim != 2 or theta.shape[0] < 2:
        raise DataError(f"preferences must have shape (n_users >= 2, d); got {theta.shape}")
    norms = np.linalg.norm(theta, axis=1)
    if (norms == 0).any():
        raise DataError(f"preferences has a zero row (user {int(np.flatnonzero(norms == 0)[0])})")
    unit = theta / norms[:, None]
    n = len(unit)
    total = unit.sum(axis=0)
    return float((total @ total - n) / (n * (n - 1)))


@dataclass(frozen=True)
class Metric:
    """A per-generation measure: its results column, label and unit."""

    column: str
    label: str
    unit: str


#: The metrics plotted against generation, in report order.
METRICS = (
    Metric("truth", "True long-term value of the deployed policy", "clicks per session"),
    Metric("ctr", "Observed CTR", "clicks per impression"),
    Metric("tail_exposure", "Long-tail share of impressions", "share"),
    Metric("tail_clicks", "Long-tail share of clicks", "share"),
    Metric("coverage", "Catalogue coverage", "share of items shown"),
    Metric("gini", "Gini coefficient of exposure", "0 = even"),
    Metric("homogenisation", "User-interest homogenisation", "mean pairwise cosine"),
)


def exposure_measures(
    items: np.ndarray, clicks: np.ndarray, tail: np.ndarray, preferences: np.ndarray
) -> dict[str, float]:
    """Every measure of :data:`METRICS` but the value, for one set of impressions and users.

    Args:
        items: Shown item per impression, shape (n,).
        clicks: Click per impression, shape (n,).
        tail: Tail mask of :func:`long_tail_items`, shape (n_items,).
        preferences: The users' θ_u, shape (n_users, d).

    Returns:
        ``ctr``, ``tail_exposure``, ``tail_clicks``, ``coverage``, ``gini``, ``homogenisation``.
    """
    n_items = len(tail)
    return {
        "ctr": float(np.mean(clicks)) if len(clicks) else float("nan"),
        "tail_exposure": long_tail_share(items, tail),
        "tail_clicks": long_tail_share(items, tail, clicks),
        "coverage": catalogue_coverage(items, n_items),
        "gini": exposure_gini(items, n_items),
        "homogenisation": interest_homogenisation(preferences),
    }
