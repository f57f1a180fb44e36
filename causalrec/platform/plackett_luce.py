"""Plackett–Luce (softmax without replacement) slate probabilities.

A slate of ``K`` distinct items is drawn from item probabilities ``p`` (summing to one) by
picking position 1 with probability ``p_i``, then position 2 among the remaining items with
probability ``p_i / (1 - p_{a_1})``, and so on (Plackett 1975; Luce 1959). Sampling uses the
Gumbel-top-k trick (Kool et al. 2019).

Prefix probabilities ``P(a_1..a_k)`` are always exact. Item–position marginals
``P(item i at position k)`` are exact by enumerating the ``n_items^(k-1)`` ordered prefixes while
that is tractable, and otherwise estimated by Monte Carlo.

References:
    Plackett, "The Analysis of Permutations", Applied Statistics 1975.
    Kool, van Hoof, Welling, "Stochastic Beams and Where to Find Them", ICML 2019.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "EXACT_PREFIX_BUDGET",
    "gumbel_top_k",
    "marginals",
    "prefix_probabilities",
]

#: Largest number of ordered prefixes enumerated per user for exact marginals.
EXACT_PREFIX_BUDGET = 250_000


def gumbel_top_k(logits: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Draw one Plackett–Luce slate per row of ``logits``.

    Args:
        logits: Unnormalised log-probabilities, shape (n, n_items).
        k: Slate size.
        rng: Source of randomness.

    Returns:
        Item indices, shape (n, k), in slate order.
    """
    perturbed = logits + rng.gumbel(size=logits.shape)
    if k == 1:
        return perturbed.argmax(axis=1)[:, None]
    top = np.argpartition(-perturbed, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(perturbed, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def prefix_probabilities(probs: np.ndarray, slates: np.ndarray) -> np.ndarray:
    """Exact Plackett–Luce prefix probabilities of given slates.

    Args:
        probs: Item probabilities per row, shape (n, n_items), rows summing to one.
        slates: Item indices, shape (n, K), distinct within a row.

    Returns:
        ``P(a_1..a_k)`` for k = 1..K, shape (n, K).
    """
    chosen = np.take_along_axis(probs, slates, axis=1)
    remaining = _remaining_mass(probs, slates)
    return np.cumprod(chosen / remaining, axis=1)


#: Below this, ``1 - mass`` loses too many digits and the remaining mass is summed directly.
_CANCELLATION_GUARD = 1e-6


def _remaining_mass(probs: np.ndarray, slates: np.ndarray) -> np.ndarray:
    """Mass left before each position, ``sum of probs outside slate[:k]``, shape (n, K).

    ``1 - cumsum`` cancels catastrophically when the prefix holds almost all the mass (peaked
    softmaxes); those entries are recomputed by summing the remaining items directly.
    """
    chosen = np.take_along_axis(probs, slates, axis=1)
    remaining = 1.0 - (np.cumsum(chosen, axis=1) - chosen)
    for row, k in zip(*np.nonzero(remaining < _CANCELLATION_GUARD), strict=True):
        keep = np.ones(probs.shape[1], dtype=bool)
        keep[slates[row, :k]] = False
        remaining[row, k] = np.sort(probs[row, keep]).sum()
    return np.maximum(remaining, np.finfo(float).tiny)


def _remaining_after(p: np.ndarray, prefixes: np.ndarray) -> np.ndarray:
    """Mass outside each prefix (rows of item ids, shape (m, depth)), guarded as above."""
    remaining = 1.0 - p[prefixes].sum(axis=1)
    for row in np.flatnonzero(remaining < _CANCELLATION_GUARD):
        keep = np.ones(len(p), dtype=bool)
        keep[prefixes[row]] = False
        remaining[row] = np.sort(p[keep]).sum()
    return np.maximum(remaining, np.finfo(float).tiny)


def _exact_position_marginal(p: np.ndarray, k: int) -> np.ndarray:
    """P(item i at 0-based position k) for one user by enumerating ordered prefixes.

    With W(prefix) = P(prefix) / (1 - mass(prefix)) over ordered prefixes of k distinct items,
    P(i at k) = p_i * (sum_prefix W - sum_{prefix containing i} W); for items that dominate the
    weight the second form is summed directly to avoid cancellation.
    """
    n = p.shape[0]
    if k == 0:
        return p.copy()
    prob = p.copy()  # P(prefix) over k axes of length n
    for depth in range(1, k + 1):
        shape = (n,) * depth
        index = np.indices(shape, sparse=True)
        repeat = np.zeros(shape, dtype=bool)
        for axis in range(depth - 1):
            repeat |= index[axis] == index[depth - 1]
        prob = np.where(repeat, 0.0, prob)  # a prefix never repeats an item
        prefixes = np.stack(np.broadcast_arrays(*index), axis=-1).reshape(-1, depth)
        remaining = _remaining_after(p, prefixes).reshape(shape)
        if depth == k:
            weight = prob / remaining
            break
        prob = prob[..., None] * (p.reshape((1,) * depth + (n,)) / remaining[..., None])
    total = weight.sum()
    containing = np.zeros(n)
    for axis in range(k):
        other_axes = tuple(a for a in range(k) if a != axis)
        containing += weight.sum(axis=other_axes) if other_axes else weight
    outside = total - containing
    # Items that sit in most of the weight (dominant items of a peaked softmax) would lose their
    # small remainder to cancellation: sum their prefixes-without-them directly.
    for item in np.flatnonzero(outside < 1e-6 * total):
        keep = np.flatnonzero(np.arange(n) != item)
        outside[item] = weight[np.ix_(*([keep] * k))].sum()
    return np.clip(p * outside, 0.0, 1.0)


def marginals(
    probs: np.ndarray,
    slate_size: int,
    rng: np.random.Generator | None = None,
    *,
    mc_draws: int = 20_000,
) -> tuple[np.ndarray, np.ndarray]:
    """Item–position marginals of Plackett–Luce slates for one user.

    Args:
        probs: Item probabilities, shape (n_items,), summing to one.
        slate_size: K.
        rng: Source of randomness for positions that need Monte Carlo.
        mc_draws: Number of slates drawn when a position cannot be computed exactly.

    Returns:
        ``(marginal, exact)``: marginal probabilities of shape (n_items, K) and a boolean array
        of shape (K,) that is ``False`` for positions estimated by Monte Carlo.
    """
    n = probs.shape[0]
    out = np.empty((n, slate_size))
    exact = np.ones(slate_size, dtype=bool)
    for k in range(slate_size):
        if n**k <= EXACT_PREFIX_BUDGET:
            out[:, k] = _exact_position_marginal(probs, k)
        else:
            exact[k] = False
    if not exact.all():
        if rng is None:
            raise ValueError("rng is required when some positions need Monte Carlo marginals")
        logits = np.log(np.clip(probs, np.finfo(float).tiny, None))
        counts = np.zeros((n, slate_size))
        done = 0
        while done < mc_draws:
            batch = min(2_000, mc_draws - done)
            slates = gumbel_top_k(np.broadcast_to(logits, (batch, n)), slate_size, rng)
            for k in np.flatnonzero(~exact):
                counts[:, k] += np.bincount(slates[:, k], minlength=n)
            done += batch
        out[:, ~exact] = counts[:, ~exact] / mc_draws
    return out, exact
