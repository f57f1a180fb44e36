"""A context-free policy read from a log: the item–position frequencies another policy showed."""

from __future__ import annotations

import numpy as np
from typing_extensions import override

from causalrec.platform.errors import DataError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.policy import Policy, SlateSample

__all__ = ["EmpiricalPolicy"]


class EmpiricalPolicy(Policy):
    """A context-free policy: P(item i at position k) as observed in a log.

    Positions are independent under this policy (it knows only marginals), so
    :meth:`prefix_probability` is the product of the marginals and :meth:`sample` may repeat an
    item across positions; it is meant for evaluating logs whose rows are separate impressions
    (such as the Open Bandit Dataset), not for drawing slates.

    Args:
        marginals: Shape (n_items, K), columns summing to one.
        name: Identifier written into tables.
    """

    def __init__(self, marginals: np.ndarray, name: str = "empirical"):
        marginals = np.asarray(marginals, dtype=np.float64)
        if marginals.ndim != 2 or not np.allclose(marginals.sum(axis=0), 1.0):
            raise DataError("marginals must have shape (n_items, K) with columns summing to 1")
        self.marginals, self.name = marginals, name
        self.n_items, self.slate_size = marginals.shape

    @classmethod
    def from_log(cls, log: LoggedFeedback, *, n_items: int | None = None, name: str = "empirical"):
        """The item–position frequencies of ``log`` (over ``n_items``, default the log's)."""
        n_items = n_items or log.n_items
        if log.item_id.max() >= n_items:
            raise DataError(f"the log shows item {log.item_id.max()}; n_items is {n_items}")
        counts = np.zeros((n_items, log.slate_size))
        np.add.at(counts, (log.item_id, log.position), 1.0)
        totals = counts.sum(axis=0)
        if (totals == 0).any():
            empty = int(np.flatnonzero(totals == 0)[0])
            raise DataError(f"the log has no impression at position {empty}")
        return cls(counts / totals, name=name)

    @override
    def action_distribution(self, users: np.ndarray) -> np.ndarray:
        dist = np.broadcast_to(self.marginals, (len(users), *self.marginals.shape))
        return self._format(dist)

    @override
    def sample(self, users: np.ndarray, rng: np.random.Generator) -> SlateSample:
        n = len(users)
        cdf = np.cumsum(self.marginals, axis=0)
        draws = rng.random((n, self.slate_size))
        actions = np.stack(
            [np.searchsorted(cdf[:, k], draws[:, k] * cdf[-1, k]) for k in range(self.slate_size)],
            axis=1,
        )
        actions = np.minimum(actions, self.n_items - 1)
        marginal = self.marginals[actions, np.arange(self.slate_size)]
        return SlateSample(actions, np.cumprod(marginal, axis=1), marginal)

    @override
    def prefix_probability(self, users: np.ndarray, slates: np.ndarray) -> np.ndarray:
        slates = np.asarray(slates)
        return np.cumprod(self.marginals[slates, np.arange(slates.shape[1])], axis=1)
