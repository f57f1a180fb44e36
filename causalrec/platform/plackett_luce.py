"""Plackett–Luce (softmax without replacement) slate probabilities.

A slate of ``K`` distinct items is drawn from item probabilities ``p`` (summing to one) by
picking position 1 with probability ``p_i``, then position 2 among the remaining items with
probability ``p_i / (1 - p_{a_1})``, and so on (Plackett 1975; Luce 1959). Sampling uses the
Gumbel-top-k trick (Kool et al. 2019).

Prefix probabilities ``P(a_1..a_k)`` are always exact. Item–position marginals
``P(item i at position k)`` are exact by enumerating the ``n_items^k`` ordered prefixes of a
0-based position k while that is at most :data:`EXACT_PREFIX_BUDGET`, and otherwise estimated by
Rao–Blackwellised Monte Carlo (:mod:`causalrec.platform.pl_estimates`): positive for every item
that can be shown, with a reported relative standard error.

References:
    Plackett, "The Analysis of Permutations", Applied Statistics 1975.
    Kool, van Hoof, Welling, "Stochastic Beams and Where to Find Them", ICML 2019.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from causalrec.platform import pl_estimates

__all__ = [
    "EXACT_PREFIX_BUDGET",
    "SlateMarginals",
    "exact_marginal",
    "exact_positions",
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


def exact_marginal(p: np.ndarray, k: int) -> np.ndarray:
    """Exact ``P(item i at 0-based position k)`` for one user by enumerating ordered prefixes.

    Costs ``n_items^k``, shape (n_items,): use it only where :func:`exact_positions` allows.

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
        remaining = pl_estimates.remaining_mass(p, prefixes)[:, -1].reshape(shape)
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


def exact_positions(n_items: int, slate_size: int) -> np.ndarray:
    """Which 0-based positions have enumerable marginals (``n_items^k`` <= the budget), (K,)."""
    return np.array([n_items**k <= EXACT_PREFIX_BUDGET for k in range(slate_size)])


@dataclass(frozen=True)
class SlateMarginals:
    """Item–position marginals of one user's Plackett–Luce slates.

    Attributes:
        marginal: ``P(item i at position k)``, shape (n_items, K); strictly positive wherever
            ``p_i > 0`` and the item can reach position k.
        exact: Whether each position was enumerated exactly, shape (K,).
        relative_se: Largest estimated relative standard error over the items of each position,
            shape (K,); 0 at exact positions.
        draws: Prefixes drawn for the estimated positions (0 when all are exact).
    """

    marginal: np.ndarray
    exact: np.ndarray
    relative_se: np.ndarray
    draws: int = 0


def marginals(
    probs: np.ndarray,
    slate_size: int,
    rng: np.random.Generator | None = None,
    *,
    target_relative_se: float = pl_estimates.TARGET_RELATIVE_SE,
    max_draws: int = pl_estimates.MAX_DRAWS,
) -> SlateMarginals:
    """Item–position marginals of Plackett–Luce slates for one user.

    Positions whose ordered prefixes can be enumerated (see :func:`exact_positions`) are exact;
    the others are Rao–Blackwellised Monte Carlo estimates
    (:func:`causalrec.platform.pl_estimates.estimate_position_marginals`) with their relative
    standard error.

    Args:
        probs: Item probabilities, shape (n_items,), summing to one.
        slate_size: K.
        rng: Source of randomness for positions that need Monte Carlo.
        target_relative_se: Largest relative standard error aimed at for estimated positions.
        max_draws: Most prefixes drawn for them.

    Returns:
        The marginals, which positions are exact, and the estimation error.
    """
    n = probs.shape[0]
    out = np.empty((n, slate_size))
    exact = exact_positions(n, slate_size)
    relative_se = np.zeros(slate_size)
    for k in np.flatnonzero(exact):
        out[:, k] = exact_marginal(probs, int(k))
    draws = 0
    if not exact.all():
        if rng is None:
            raise ValueError("rng is required when some positions need Monte Carlo marginals")
        estimated = [int(k) for k in np.flatnonzero(~exact)]
        estimate = pl_estimates.estimate_position_marginals(
            probs, estimated, rng, target_relative_se=target_relative_se, max_draws=max_draws
        )
        out[:, estimated] = estimate.marginal
        relative_se[estimated] = estimate.relative_se.max(axis=0)
        draws = estimate.draws
    return SlateMarginals(out, exact, relative_se, draws)
