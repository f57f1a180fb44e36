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
    taken_before = np.cumsum(chosen, axis=1) - chosen
    remaining = np.clip(1.0 - taken_before, np.finfo(float).tiny, None)
    return np.cumprod(chosen / remaining, axis=1)


def _exact_position_marginal(p: np.ndarray, k: int) -> np.ndarray:
    """P(item i at 0-based position k) for one user by enumerating ordered prefixes.

    With W(prefix) = P(prefix) / (1 - mass(prefix)) over ordered prefixes of k distinct items,
    P(i at k) = p_i * (sum_prefix W - sum_{prefix containing i} W).
    """
    n = p.shape[0]
    if k == 0:
        return p.copy()
    prob = p.copy()  # P(prefix) over axes of length n, zero where indices repeat
    mass = p.copy()
    for depth in range(1, k):
        shape = (n,) * depth
        remaining = np.clip(1.0 - mass, np.finfo(float).tiny, None)
        next_prob = prob[..., None] * (p.reshape((1,) * depth + (n,)) / remaining[..., None])
        next_mass = mass[..., None] + p.reshape((1,) * depth + (n,))
        # zero out prefixes that repeat an item
        index = np.indices((*shape, n), sparse=True)
        repeat = np.zeros((*shape, n), dtype=bool)
        for axis in range(depth):
            repeat |= index[axis] == index[depth]
        next_prob[repeat] = 0.0
        prob, mass = next_prob, next_mass
    weight = prob / np.clip(1.0 - mass, np.finfo(float).tiny, None)
    weight[prob == 0.0] = 0.0
    total = weight.sum()
    containing = np.zeros(n)
    for axis in range(k):
        other_axes = tuple(a for a in range(k) if a != axis)
        containing += weight.sum(axis=other_axes) if other_axes else weight
    return np.clip(p * (total - containing), 0.0, 1.0)


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
