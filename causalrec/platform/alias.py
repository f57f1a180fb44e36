"""Walker's alias tables, built for many distributions at once, for O(1) categorical draws.

Vose's construction runs in lock-step over all rows: each step pairs one under-full and one
over-full column in every row that still has both, so the number of numpy steps is at most the
number of categories, independent of the number of rows.

References:
    Walker, "An Efficient Method for Generating Discrete Random Variables with General
    Distributions", ACM TOMS 1977.
    Vose, "A Linear Algorithm for Generating Random Numbers with a Given Distribution",
    IEEE TSE 1991.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AliasTable"]


@dataclass(frozen=True)
class AliasTable:
    """Alias tables for ``n_rows`` categorical distributions over ``n_categories``.

    Attributes:
        accept: Probability of keeping the drawn column, shape (n_rows, n_categories).
        alias: Category used otherwise, shape (n_rows, n_categories).
    """

    accept: np.ndarray
    alias: np.ndarray

    @classmethod
    def build(cls, probs: np.ndarray) -> AliasTable:
        """Build tables from probabilities of shape (n_rows, n_categories), rows summing to one."""
        n_rows, n = probs.shape
        scaled = probs * (n / probs.sum(axis=1, keepdims=True))
        accept = np.ones((n_rows, n))
        alias = np.tile(np.arange(n, dtype=np.int32 if n < 2**31 else np.int64), (n_rows, 1))
        is_small = scaled < 1.0
        # Per-row stacks of small and large columns, with their heights.
        order = np.argsort(~is_small, axis=1, kind="stable")
        n_small = is_small.sum(axis=1)
        small = order.copy()
        large = order[:, ::-1].copy()
        n_large = n - n_small
        accept_flat, alias_flat, scaled_flat = accept.ravel(), alias.ravel(), scaled.ravel()
        small_flat, large_flat = small.ravel(), large.ravel()
        rows = np.flatnonzero((n_small > 0) & (n_large > 0))
        while rows.size:
            base = rows * n
            top_small = small_flat[base + n_small[rows] - 1]
            top_large = large_flat[base + n_large[rows] - 1]
            at_small, at_large = base + top_small, base + top_large
            leftover = scaled_flat[at_small]
            accept_flat[at_small] = leftover
            alias_flat[at_small] = top_large
            scaled_flat[at_large] += leftover - 1.0
            now_small = scaled_flat[at_large] < 1.0
            # Pop both tops; push the large column back onto the stack it now belongs to.
            n_small[rows] -= ~now_small
            n_large[rows] -= now_small
            pushed_small = rows[now_small]
            small_flat[pushed_small * n + n_small[pushed_small] - 1] = top_large[now_small]
            rows = rows[(n_small[rows] > 0) & (n_large[rows] > 0)]
        return cls(accept=accept, alias=alias)

    def sample(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw one category per entry of ``rows`` (row indices, shape (n,)); returns (n,)."""
        n = self.accept.shape[1]
        x = rng.random(len(rows)) * n
        column = np.minimum(x.astype(np.int64), n - 1)
        flat = rows * n + column
        keep = (x - column) < self.accept.ravel()[flat]
        return np.where(keep, column, self.alias.ravel()[flat].astype(np.int64))
