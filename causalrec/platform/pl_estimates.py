"""Rao–Blackwellised Monte Carlo for Plackett–Luce marginals and slate values beyond enumeration.

Where the ordered prefixes of position k (0-based) are too many to enumerate (``n_items^k`` above
:data:`causalrec.platform.plackett_luce.EXACT_PREFIX_BUDGET`), counting how often item i lands at
position k in sampled slates gives zero for most items and 5–10% relative error for the rest.
Instead, prefixes ``a_1..a_k`` are sampled and the *exact* conditional probability is averaged:

    P(i at k) = E_prefix[ p_i · 1[i ∉ prefix] / (1 − mass(prefix)) ]

which is positive for every item outside a sampled prefix and has a relative error that does not
grow as p_i shrinks. Items that sit in most sampled prefixes (at most 2k of them) are estimated
from their own draws instead: prefixes from the Plackett–Luce law without item i, reweighted to
the full law,

    P(i at k) = p_i · E'_prefix[ Π_{j≤k} (1 − p_i − m_{<j}) / (1 − m_{<j}) / (1 − mass(prefix)) ]

so every estimate is strictly positive. For k <= 5 the drawn prefix is weighed as a set, by its
probability summed over all k! orders under both laws, which removes the weights' dependence on
the order in which the items happened to be drawn. Draws are added in batches until the largest
estimated relative standard error is at most ``target_relative_se`` (or ``max_draws`` is
reached), and that error is reported. The same conditioning gives the value of a slate policy,
Σ_k e_k E[Σ_{i ∉ prefix} p_i r_i / (1 − mass(prefix))], with its standard error.

Prefixes are drawn position by position from the item CDF (binary search) with the items already
drawn cut out, so a draw costs O(k² + k log n), not O(n) as the Gumbel-top-k trick: a 10-item
slate over 1,000 items needs no n-sized work per draw. Each user's draws come from its own random
stream (``SeedSequence(seed, spawn_key=(user, stream))``), so a user's estimate does not depend on
which other users are in the batch.

References:
    Casella & Robert, "Rao-Blackwellisation of Sampling Schemes", Biometrika 1996.
    Kool, van Hoof, Welling, "Estimating Gradients for Discrete Random Variables by Sampling
    without Replacement", ICLR 2020 (conditional Plackett–Luce probabilities).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DRAW_BATCH",
    "MAX_DRAWS",
    "TARGET_RELATIVE_SE",
    "PositionEstimate",
    "ValueEstimate",
    "estimate_position_marginals",
    "estimate_slate_value",
    "remaining_mass",
    "sample_prefixes",
    "user_rng",
]

#: Default target for the largest relative standard error of an estimated marginal.
TARGET_RELATIVE_SE = 0.01
#: Prefixes drawn per user between two checks of the error.
DRAW_BATCH = 2_000
#: Most prefixes drawn per user (and per targeted item).
MAX_DRAWS = 128_000
#: An item in more than this share of the sampled prefixes gets targeted draws of its own.
TARGETED_INCLUSION = 0.5
#: Below this, 1 − mass loses too many digits and the remaining mass is summed directly.
CANCELLATION_GUARD = 1e-6


def user_rng(seed: int | None, user: int, stream: int = 0) -> np.random.Generator:
    """The random stream of one user's estimates (independent of the other users).

    ``stream`` 0 is for marginals, 1 for slate values.
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(int(user), stream)))


def sample_prefixes(
    p: np.ndarray,
    depth: int,
    n_draws: int,
    rng: np.random.Generator,
    *,
    exclude: int | None = None,
) -> np.ndarray:
    """Draw Plackett–Luce prefixes of one user by inverse CDF with the drawn items skipped.

    Position j draws u uniformly on the mass left after the first j items and maps it onto the
    item CDF with the intervals of those items cut out (walking them in item order), then finds
    the item by binary search: O(j + log n) per draw, with no rejection. Draws whose remaining
    mass is too small for that mapping to resolve are made from the masked distribution directly.

    Args:
        p: Item probabilities, shape (n_items,), summing to one.
        depth: Prefix length (items drawn without replacement).
        n_draws: Number of prefixes.
        rng: Source of randomness.
        exclude: An item that never appears (the prefix is drawn from the law without it).

    Returns:
        Item ids, shape (n_draws, depth), distinct within a row, in draw order.
    """
    n = len(p)
    cdf = np.cumsum(p)
    starts = cdf - p
    total = cdf[-1]
    out = np.full((n_draws, depth + (exclude is not None)), -1, dtype=np.int64)
    first = 0
    if exclude is not None:
        out[:, 0], first = exclude, 1
    for j in range(first, out.shape[1]):
        taken = np.sort(out[:, :j], axis=1)
        remaining = total - p[taken].sum(axis=1)
        point = rng.random(n_draws) * remaining
        for column in range(j):
            item = taken[:, column]
            point = np.where(starts[item] <= point, point + p[item], point)
        drawn = np.minimum(np.searchsorted(cdf, point, side="right"), n - 1)
        out[:, j] = drawn
        redo = (taken == drawn[:, None]).any(axis=1) | (remaining < CANCELLATION_GUARD * total)
        # Prefixes that hold almost all the mass: draw from the masked distribution directly.
        for begin in range(0, int(redo.sum()), 1024):
            rows = np.flatnonzero(redo)[begin : begin + 1024]
            masked = np.tile(p, (len(rows), 1))
            np.put_along_axis(masked, out[rows, :j], 0.0, axis=1)
            masked_cdf = np.cumsum(masked, axis=1)
            u = rng.random(len(rows)) * masked_cdf[:, -1]
            out[rows, j] = np.minimum((masked_cdf <= u[:, None]).sum(axis=1), n - 1)
    return out[:, first:]


def remaining_mass(p: np.ndarray, prefixes: np.ndarray, exclude: int | None = None) -> np.ndarray:
    """Mass outside each prefix (and ``exclude``) before each position, shape (m, depth + 1).

    Column j is the mass left after the first j items; cancellation-prone entries are summed
    directly over the remaining items.
    """
    chosen = p[prefixes]
    start = 1.0 - (p[exclude] if exclude is not None else 0.0)
    remaining = start - np.concatenate(
        [np.zeros((len(prefixes), 1)), np.cumsum(chosen, axis=1)], axis=1
    )
    rows, cols = np.nonzero(remaining < CANCELLATION_GUARD)
    for start in range(0, len(rows), 1024):  # sum the items left directly, 1,024 entries at once
        row, col = rows[start : start + 1024], cols[start : start + 1024]
        masked = np.tile(np.append(p, 0.0), (len(row), 1))  # column n: "no item"
        before = np.arange(prefixes.shape[1])[None, :] < col[:, None]
        np.put_along_axis(masked, np.where(before, prefixes[row], len(p)), 0.0, axis=1)
        if exclude is not None:
            masked[:, exclude] = 0.0
        remaining[row, col] = masked.sum(axis=1)
    return np.maximum(remaining, np.finfo(float).tiny)


@dataclass(frozen=True)
class PositionEstimate:
    """Rao–Blackwellised marginals of one user at the positions that cannot be enumerated.

    Attributes:
        marginal: ``P(item at position)``, shape (n_items, n_positions) — or, when specific items
            were asked for, shape (n_positions,).
        relative_se: Estimated relative standard error of each entry, same shape.
        draws: Prefixes drawn for the shared estimate.
    """

    marginal: np.ndarray
    relative_se: np.ndarray
    draws: int


class _SharedSums:
    """Running sums of the shared (untargeted) estimator over batches of drawn prefixes."""

    def __init__(self, n_items: int, positions: list[int]):
        shape = (n_items, len(positions))
        self.positions, self.draws = positions, 0
        self.s1, self.s2 = np.zeros(len(positions)), np.zeros(len(positions))
        self.in1, self.in2, self.count = np.zeros(shape), np.zeros(shape), np.zeros(shape)

    def add(self, p: np.ndarray, prefixes: np.ndarray) -> None:
        inverse = 1.0 / remaining_mass(p, prefixes)  # (m, depth + 1)
        n = len(p)
        for column, k in enumerate(self.positions):
            weight = inverse[:, k]
            self.s1[column] += weight.sum()
            self.s2[column] += weight @ weight
            items = prefixes[:, :k].ravel()
            repeated = np.repeat(weight, k)
            self.in1[:, column] += np.bincount(items, weights=repeated, minlength=n)
            self.in2[:, column] += np.bincount(items, weights=repeated**2, minlength=n)
            self.count[:, column] += np.bincount(items, minlength=n)
        self.draws += len(prefixes)

    def estimate(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Marginals and relative standard errors, shape (n_items, n_positions)."""
        m = self.draws
        mean = p[:, None] * (self.s1[None, :] - self.in1) / m
        second = p[:, None] ** 2 * (self.s2[None, :] - self.in2) / m
        variance = np.maximum(second - mean**2, 0.0) / max(m - 1, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            rse = np.where(mean > 0, np.sqrt(variance) / mean, np.inf)
        rse[p == 0] = 0.0  # an item of probability zero is never shown: its marginal is 0
        # A negative or non-finite mean, or an error that is NaN: s1 - in1 cancelled (or the sums
        # overflowed) because the law is too peaked for float64. More draws scale both sums
        # alike and cannot mend it.
        broken = ~np.isfinite(mean) | (mean < 0) | np.isnan(rse)
        mean[broken] = rse[broken] = np.nan
        return mean, rse

    def targeted(self) -> np.ndarray:
        """Which (item, position) entries need their own draws, shape (n_items, n_positions)."""
        return self.count > TARGETED_INCLUSION * self.draws


#: Deepest position whose targeted draws are weighed over every order of the drawn set (k!).
_ORDER_AVERAGED_DEPTH = 5
_PERMUTATIONS = {
    k: np.array(list(itertools.permutations(range(k))), dtype=np.int64)
    for k in range(1, _ORDER_AVERAGED_DEPTH + 1)
}


def _order_probabilities(p: np.ndarray, orders: np.ndarray, exclude: int | None) -> np.ndarray:
    """Plackett–Luce probability of each ordered prefix, shape (m,), optionally without an item.

    With ``exclude`` the law is the one without that item (its mass removed from every
    normaliser).
    """
    remaining = remaining_mass(p, orders, exclude=exclude)[:, :-1]
    return np.prod(p[orders] / remaining, axis=1)


def _targeted_marginal(
    p: np.ndarray,
    item: int,
    k: int,
    rng: np.random.Generator,
    target_relative_se: float,
    max_draws: int,
) -> tuple[float, float]:
    """P(item at 0-based position k) from prefixes drawn without ``item``; (estimate, rse)."""
    s1 = s2 = 0.0
    draws = 0
    while True:
        prefixes = sample_prefixes(p, k, DRAW_BATCH, rng, exclude=item)
        if k <= _ORDER_AVERAGED_DEPTH:
            # Weigh the drawn *set* by its probability over every order, under both laws: the
            # ordered ratio swings by orders of magnitude with which item came first when p_i is
            # near 1, and a rare order could carry most of the marginal.
            orders = prefixes[:, _PERMUTATIONS[k]]  # (m, k!, k)
            flat = orders.reshape(-1, k)
            full = _order_probabilities(p, flat, None).reshape(len(prefixes), -1).sum(axis=1)
            proposal = _order_probabilities(p, flat, item).reshape(len(prefixes), -1).sum(axis=1)
            ratio = full / proposal
            left = remaining_mass(p, prefixes)[:, k]
        else:
            with_item = remaining_mass(p, prefixes)  # 1 - m_{<j}, j = 0..k
            without_item = remaining_mass(p, prefixes, exclude=item)  # 1 - p_i - m_{<j}
            ratio = np.prod(without_item[:, :k] / with_item[:, :k], axis=1)
            left = with_item[:, k]
        values = p[item] * ratio / left
        s1 += values.sum()
        s2 += values @ values
        draws += DRAW_BATCH
        mean = s1 / draws
        if not (np.isfinite(s1) and np.isfinite(s2)):
            return np.nan, np.nan  # the ratios overflowed: no number of draws mends that
        variance = max(s2 / draws - mean**2, 0.0) / (draws - 1)
        rse = float(np.sqrt(variance) / mean) if mean > 0 else np.inf
        if rse <= target_relative_se or draws >= max_draws:
            return float(mean), rse


def estimate_position_marginals(
    p: np.ndarray,
    positions: list[int],
    rng: np.random.Generator,
    *,
    items: np.ndarray | None = None,
    target_relative_se: float = TARGET_RELATIVE_SE,
    max_draws: int = MAX_DRAWS,
) -> PositionEstimate:
    """Rao–Blackwellised ``P(item at position)`` for one user (see the module docstring).

    Args:
        p: Item probabilities, shape (n_items,), summing to one.
        positions: 0-based positions to estimate (each >= 1; position 0 is ``p`` itself).
        rng: The user's random stream.
        items: If given, only ``P(items[j] at positions[j])`` is estimated (shape
            (len(positions),)); the error target then applies to these entries only.
        target_relative_se: Draws are added until the largest relative standard error of the
            estimated entries is at most this.
        max_draws: Most prefixes drawn.

    Returns:
        The estimates and their relative standard errors; both NaN for entries that float64
        cannot estimate (a law so peaked that the sums cancel or overflow), found after one
        batch of draws rather than after ``max_draws``.
    """
    depth = max(positions)
    sums = _SharedSums(len(p), positions)
    columns = np.arange(len(positions))
    while True:
        sums.add(p, sample_prefixes(p, depth, DRAW_BATCH, rng))
        mean, rse = sums.estimate(p)
        shared = ~sums.targeted()
        considered = rse[shared] if items is None else rse[items, columns][shared[items, columns]]
        if np.isnan(considered).any():
            break  # broken beyond repair (see _SharedSums.estimate): returned as NaN
        if considered.max(initial=0.0) <= target_relative_se or sums.draws >= max_draws:
            break
    wanted = np.zeros_like(shared) if items is not None else ~shared
    if items is not None:
        wanted[items, columns] = ~shared[items, columns]
    for item, column in zip(*np.nonzero(wanted), strict=True):
        mean[item, column], rse[item, column] = _targeted_marginal(
            p, int(item), positions[column], rng, target_relative_se, max_draws
        )
    if items is not None:
        return PositionEstimate(mean[items, columns], rse[items, columns], sums.draws)
    return PositionEstimate(mean, rse, sums.draws)


@dataclass(frozen=True)
class ValueEstimate:
    """Rao–Blackwellised Σ_k e_k E[r(a_k)] over the estimated positions of one user.

    Attributes:
        value: The estimate.
        variance: Its sampling variance (of the mean over draws).
        draws: Prefixes drawn.
    """

    value: float
    variance: float
    draws: int


def estimate_slate_value(
    p: np.ndarray,
    reward: np.ndarray,
    weights: dict[int, float],
    rng: np.random.Generator,
    *,
    target_relative_se: float = TARGET_RELATIVE_SE,
    max_draws: int = MAX_DRAWS,
) -> ValueEstimate:
    """Σ_k w_k E[reward of the item at position k] for one user's Plackett–Luce slates.

    Each draw contributes Σ_k w_k Σ_{i ∉ prefix_k} p_i r_i / (1 − mass(prefix_k)): the exact
    conditional expectation given the sampled prefix.

    Args:
        p: Item probabilities, shape (n_items,).
        reward: Expected reward of each item (if shown and examined), shape (n_items,).
        weights: Position weight w_k (e.g. examination e_k) by 0-based position (each >= 1).
        rng: The user's random stream.
        target_relative_se: Draws are added until the relative standard error is at most this.
        max_draws: Most prefixes drawn.
    """
    depth = max(weights)
    total_reward = float(np.sort(p * reward).sum())
    s1 = s2 = 0.0
    draws = 0
    while True:
        prefixes = sample_prefixes(p, depth, DRAW_BATCH, rng)
        remaining = remaining_mass(p, prefixes)
        taken = np.concatenate(
            [np.zeros((len(prefixes), 1)), np.cumsum(p[prefixes] * reward[prefixes], axis=1)],
            axis=1,
        )
        values = np.zeros(len(prefixes))
        for k, weight in weights.items():
            left = np.maximum(total_reward - taken[:, k], 0.0)
            # Where the prefix holds almost all the mass, sum the remaining items directly.
            for row in np.flatnonzero(remaining[:, k] < 1e-4):
                keep = np.ones(len(p), dtype=bool)
                keep[prefixes[row, :k]] = False
                left[row] = float(np.sort(p[keep] * reward[keep]).sum())
            values += weight * left / remaining[:, k]
        s1 += values.sum()
        s2 += values @ values
        draws += len(values)
        mean = s1 / draws
        variance = max(s2 / draws - mean**2, 0.0) / (draws - 1)
        if draws >= max_draws or (mean > 0 and np.sqrt(variance) <= target_relative_se * mean):
            return ValueEstimate(float(mean), float(variance), draws)
