"""The policy protocol shared by every part of causalrec, and the generic policies.

A policy maps users to a distribution over slates of ``slate_size`` distinct items. Every policy
can (1) give the item–position marginals ``action_distribution(users)`` and (2) draw slates with
their exact probabilities ``sample(users, rng)``. The simulator, OPE, methods and Serve all talk
to policies through this protocol only.

Generic policies here: :class:`UniformPolicy`, :class:`SoftmaxPolicy` (Plackett–Luce over scores,
optionally mixed with ε-uniform) and :class:`TopKPolicy` (deterministic top-k, ε-greedy when
``epsilon > 0``). They rank items by a :class:`UserItemScorer`, which the simulator and fitted
recommenders provide.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Literal, Protocol, get_args, runtime_checkable

import numpy as np
from scipy.special import log_softmax
from typing_extensions import override

from causalrec.platform import pl_estimates, plackett_luce
from causalrec.platform.alias import AliasTable
from causalrec.platform.errors import ConfigError, DataError

__all__ = [
    "EXPLORATION_KINDS",
    "Exploration",
    "LogitScorer",
    "Policy",
    "RowScorer",
    "SlateSample",
    "SoftmaxPolicy",
    "TopKPolicy",
    "UniformPolicy",
    "UserItemScorer",
    "make_policy",
]

#: Largest (n_users x n_items) probability table a policy caches (float64 entries).
TABLE_BUDGET = 20_000_000


@runtime_checkable
class UserItemScorer(Protocol):
    """Anything that scores every item for a batch of users (higher = more preferred)."""

    n_users: int
    n_items: int

    def scores(self, users: np.ndarray) -> np.ndarray:
        """Scores of shape (len(users), n_items) for user ids ``users`` of shape (n,)."""
        ...


@dataclass(frozen=True)
class SlateSample:
    """Slates drawn by a policy with their exact probabilities.

    Attributes:
        actions: Item ids, shape (n, K), distinct within a row, in position order.
        pscore_prefix: ``P(a_1..a_k | user)`` for k = 1..K, shape (n, K).
        marginal_pscore: ``P(item a_k at position k | user)``, shape (n, K). For K = 1 both
            equal the probability of the chosen item.
    """

    actions: np.ndarray
    pscore_prefix: np.ndarray
    marginal_pscore: np.ndarray


class Policy(abc.ABC):
    """A distribution over slates given a user.

    Attributes:
        name: Short identifier written into logs.
        n_items: Size of the catalogue.
        slate_size: Number of distinct items per slate (K).
    """

    name: str
    n_items: int
    slate_size: int

    @abc.abstractmethod
    def action_distribution(self, users: np.ndarray) -> np.ndarray:
        """Item–position marginals.

        Args:
            users: User ids, shape (n,).

        Returns:
            ``P(item i at position k | user)``: shape (n, n_items) when K = 1, otherwise
            (n, n_items, K), as Open Bandit Pipeline's ``action_dist``.
        """

    @abc.abstractmethod
    def sample(self, users: np.ndarray, rng: np.random.Generator) -> SlateSample:
        """Draw one slate per user with its exact probabilities."""

    @abc.abstractmethod
    def prefix_probability(self, users: np.ndarray, slates: np.ndarray) -> np.ndarray:
        """Exact ``P(a_1..a_k | user)`` of given slates.

        Args:
            users: User ids, shape (n,).
            slates: Item ids, shape (n, k) with k <= slate_size, in position order.

        Returns:
            Shape (n, k): the probability that the policy's slate starts with ``slates[:, :j+1]``.
        """

    @property
    def exact_marginals(self) -> bool:
        """Whether :meth:`action_distribution` is exact (``False`` if any position uses MC)."""
        return True

    def deterministic_slates(self, users: np.ndarray) -> np.ndarray | None:
        """The slates a deterministic policy shows, shape (n, K); ``None`` for random policies.

        Lets evaluation skip the (n, n_items) distribution for deterministic policies.
        """
        return None

    def marginal_probability(self, users: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """``P(item actions[:, k] at position k | user)``, shape (n, K), for given slates."""
        dist = self._as_3d(self.action_distribution(users))
        rows = np.arange(len(users))[:, None]
        return dist[rows, actions, np.arange(actions.shape[1])[None, :]]

    def expected_slate_reward(
        self, users: np.ndarray, relevance: np.ndarray, examination: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Σ_k e_k Σ_i P(i at k | u) r_ui per user, and the variance of that number.

        The variance is 0 where the marginals are exact; policies whose marginals are Monte Carlo
        estimates return the estimate's sampling variance.

        Args:
            users: User ids, shape (n,).
            relevance: r_ui for every item, shape (n, n_items).
            examination: e_k per position, shape (>= K,) (the first K are used).

        Returns:
            ``(value, variance)``, both of shape (n,).
        """
        dist = self._as_3d(self.action_distribution(users))
        K = min(dist.shape[2], len(examination))
        value = np.einsum("nik,ni,k->n", dist[:, :, :K], relevance, examination[:K])
        return value, np.zeros(len(users))

    def _as_3d(self, dist: np.ndarray) -> np.ndarray:
        return dist[:, :, None] if dist.ndim == 2 else dist

    def _format(self, marginal: np.ndarray) -> np.ndarray:
        return marginal[:, :, 0] if self.slate_size == 1 else marginal


@dataclass(frozen=True)
class LogitScorer:
    """The log-odds of a scorer whose scores are probabilities (predicted click rates).

    A softmax over probabilities in (0, 1) is nearly uniform (their spread is at most 1), so
    softmax exploration of a click model runs on ``log(p / (1 - p))``; the ranking, and so any
    top-k policy, is unchanged. Probabilities are clipped to [1e-15, 1 - 1e-15].

    Attributes:
        scorer: Provides ``scores(users)`` in [0, 1], shape (n, n_items).
    """

    scorer: UserItemScorer

    @property
    def n_users(self) -> int:
        """Users of the wrapped scorer."""
        return self.scorer.n_users

    @property
    def n_items(self) -> int:
        """Items of the wrapped scorer."""
        return self.scorer.n_items

    def scores(self, users: np.ndarray) -> np.ndarray:
        """Log-odds of the wrapped probabilities, shape (len(users), n_items)."""
        p = np.clip(np.asarray(self.scorer.scores(users), dtype=np.float64), 1e-15, 1 - 1e-15)
        return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class RowScorer:
    """Scores already computed for a batch of users, as a :class:`UserItemScorer`.

    The batch's users become local ids ``0..n-1``, so a policy built on it sees exactly these
    rows (a server's request, or sessions whose scores depend on their histories).

    Attributes:
        rows: Scores, shape (n, n_items).
    """

    rows: np.ndarray

    @property
    def n_users(self) -> int:
        """Users of the batch."""
        return len(self.rows)

    @property
    def n_items(self) -> int:
        """Catalogue size."""
        return self.rows.shape[1]

    def scores(self, users: np.ndarray) -> np.ndarray:
        """Rows of the local users ``users``, shape (len(users), n_items)."""
        return self.rows[users]


def _check_slate_size(slate_size: int, n_items: int) -> None:
    if not 1 <= slate_size <= n_items:
        raise ConfigError(f"slate_size must be in [1, n_items={n_items}]; got {slate_size}")


def _check_epsilon(epsilon: float) -> None:
    if not 0.0 <= epsilon <= 1.0:
        raise ConfigError(f"epsilon must be in [0, 1]; got {epsilon}")


def _uniform_prefix(n_items: int, slate_size: int) -> np.ndarray:
    """P(a_1..a_k) of a uniform slate without replacement, shape (K,)."""
    return np.cumprod(1.0 / (n_items - np.arange(slate_size)))


def _check_users(users: np.ndarray) -> np.ndarray:
    users = np.asarray(users)
    if users.ndim != 1 or users.dtype.kind not in "iu":
        raise DataError(
            f"users must be a 1-d integer array; got shape {users.shape}, {users.dtype}"
        )
    return users


class UniformPolicy(Policy):
    """Uniform random slates without replacement."""

    def __init__(self, n_items: int, slate_size: int = 1, name: str = "uniform"):
        _check_slate_size(slate_size, n_items)
        self.n_items, self.slate_size, self.name = n_items, slate_size, name

    @override
    def action_distribution(self, users: np.ndarray) -> np.ndarray:
        users = _check_users(users)
        return self._format(np.full((len(users), self.n_items, self.slate_size), 1 / self.n_items))

    @override
    def sample(self, users: np.ndarray, rng: np.random.Generator) -> SlateSample:
        users = _check_users(users)
        n = len(users)
        if self.slate_size == 1:
            actions = rng.integers(self.n_items, size=(n, 1))
        else:
            actions = plackett_luce.gumbel_top_k(np.zeros((n, self.n_items)), self.slate_size, rng)
        marginal = np.full((n, self.slate_size), 1.0 / self.n_items)
        return SlateSample(actions, self.prefix_probability(users, actions), marginal)

    @override
    def prefix_probability(self, users: np.ndarray, slates: np.ndarray) -> np.ndarray:
        shape = np.shape(slates)
        return np.broadcast_to(_uniform_prefix(self.n_items, shape[1]), shape).copy()


class SoftmaxPolicy(Policy):
    """Plackett–Luce slates from ``softmax(scores / temperature)``, mixed with ε-uniform.

    With probability ``epsilon`` the whole slate is uniform without replacement; otherwise it is
    drawn position by position without replacement from the softmax. Probabilities per user are
    cached (as a table) when ``n_users * n_items`` is small enough.

    Args:
        scorer: Provides ``scores(users)`` of shape (n, n_items).
        temperature: Softmax temperature (> 0).
        epsilon: Share of uniform slates in [0, 1].
        slate_size: K.
        name: Identifier written into logs.
        target_relative_se: Largest relative standard error aimed at for marginals at positions
            too large to enumerate (Rao–Blackwellised Monte Carlo, see
            :mod:`causalrec.platform.pl_estimates`).
        max_draws: Most prefixes drawn per user for those marginals.
        seed: Seed of those draws; each user has its own stream, so a user's estimated
            marginals do not depend on the other users of a batch.
        cache_marginals: Keep each user's item–position marginals once computed (for logging
            policies that see a user many times). Without it, drawing a slate computes the
            marginals of the shown items only (what a server needs per request).
        cache_table: Keep a table of every user's probabilities when it fits the budget; off
            for a policy built for one batch (e.g. a logger whose scores change every step).
    """

    def __init__(
        self,
        scorer: UserItemScorer,
        *,
        temperature: float = 1.0,
        epsilon: float = 0.0,
        slate_size: int = 1,
        name: str = "softmax",
        target_relative_se: float = pl_estimates.TARGET_RELATIVE_SE,
        max_draws: int = pl_estimates.MAX_DRAWS,
        seed: int | None = 0,
        cache_marginals: bool = True,
        cache_table: bool = True,
    ):
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0; got {temperature}")
        _check_epsilon(epsilon)
        _check_slate_size(slate_size, scorer.n_items)
        self.scorer, self.temperature, self.epsilon = scorer, temperature, epsilon
        self.n_items, self.slate_size, self.name = scorer.n_items, slate_size, name
        if not target_relative_se > 0:
            raise ConfigError(f"target_relative_se must be > 0; got {target_relative_se}")
        if max_draws < pl_estimates.DRAW_BATCH:
            raise ConfigError(f"max_draws must be >= {pl_estimates.DRAW_BATCH}; got {max_draws}")
        self.target_relative_se, self.max_draws, self.seed = target_relative_se, max_draws, seed
        self._table: np.ndarray | None = None
        self._alias: AliasTable | None = None
        self._marginal_cache: dict[int, np.ndarray] = {}
        self._exact = plackett_luce.exact_positions(self.n_items, slate_size)
        #: Largest relative standard error of any estimated marginal computed so far.
        self.max_relative_se = 0.0
        self._use_table = cache_table and scorer.n_users * scorer.n_items <= TABLE_BUDGET
        self._cache_marginals = cache_marginals and self._use_table

    # -- probabilities ------------------------------------------------------------------------
    def softmax_probabilities(self, users: np.ndarray) -> np.ndarray:
        """Plackett–Luce base probabilities (before ε mixing), shape (n, n_items)."""
        users = _check_users(users)
        if self._use_table:
            return self._probability_table()[users]
        return self._compute(users)

    def _compute(self, users: np.ndarray) -> np.ndarray:
        scores = np.asarray(self.scorer.scores(users), dtype=np.float64)
        # Shifted before dividing: a tiny temperature then sends the others to -inf, never
        # the best item to inf (inf - inf would make every probability NaN).
        with np.errstate(over="ignore"):
            logits = (scores - scores.max(axis=1, keepdims=True)) / self.temperature
        probabilities = np.exp(log_softmax(logits, axis=1))
        self._check_slate_mass(probabilities, users)
        return probabilities

    def _check_slate_mass(self, probabilities: np.ndarray, users: np.ndarray) -> None:
        """Refuse probabilities whose Plackett–Luce slate of K is undefined in float64.

        When the softmax puts all its mass on fewer than K items, the mass left for the last
        position is exactly 0: its marginals are 0 / 0, and estimating them would spend every
        allowed draw on the cancellation-prone sums.

        Raises:
            DataError: Naming ``temperature`` and the first such user.
        """
        K = self.slate_size
        if K == 1:
            return
        # Mass outside each user's K - 1 most probable items, shape (n,).
        top = -np.partition(-probabilities, K - 2, axis=1)[:, : K - 1]
        left = 1.0 - top.sum(axis=1)
        suspect = np.flatnonzero(left < pl_estimates.CANCELLATION_GUARD)
        if len(suspect) == 0:
            return
        # Cancellation-prone: the mass left is summed directly over the n - K + 1 smallest.
        left = np.sort(probabilities[suspect], axis=1)[:, : self.n_items - K + 1].sum(axis=1)
        empty = suspect[~(left > 0)]
        if len(empty):
            raise DataError(
                f"temperature: {self.temperature} is too low for these scores: user "
                f"{int(users[empty[0]])}'s softmax puts all its mass on fewer than K = {K} "
                f"items ({len(empty)} of {len(users)} users), so Plackett-Luce slates of {K} "
                "are undefined; raise it, or use exploration 'none' or 'epsilon'"
            )

    def _probability_table(self) -> np.ndarray:
        if self._table is None:
            users = np.arange(self.scorer.n_users)
            self._table = np.concatenate(
                [self._compute(users[i : i + 4096]) for i in range(0, len(users), 4096)]
            )
        return self._table

    def first_position_probabilities(self, users: np.ndarray) -> np.ndarray:
        """``P(item at position 1 | user)`` including ε mixing, shape (n, n_items)."""
        base = self.softmax_probabilities(users)
        return (1 - self.epsilon) * base + self.epsilon / self.n_items

    @property
    @override
    def exact_marginals(self) -> bool:
        """``False`` when some positions' marginals are Monte Carlo estimates (K >= 3, large n)."""
        return bool(self._exact.all())

    @property
    def exact_positions(self) -> np.ndarray:
        """Which 0-based positions have exact marginals, shape (K,)."""
        return self._exact.copy()

    def _user_marginals(self, p: np.ndarray, user: int) -> np.ndarray:
        estimate = plackett_luce.marginals(
            p,
            self.slate_size,
            pl_estimates.user_rng(self.seed, user),
            target_relative_se=self.target_relative_se,
            max_draws=self.max_draws,
        )
        self.max_relative_se = max(self.max_relative_se, float(estimate.relative_se.max()))
        return estimate.marginal

    @override
    def action_distribution(self, users: np.ndarray) -> np.ndarray:
        users = _check_users(users)
        if self.slate_size == 1:
            return self.first_position_probabilities(users)
        base = self.softmax_probabilities(users)
        out = np.empty((len(users), self.n_items, self.slate_size))
        for row, user in enumerate(users):
            cached = self._marginal_cache.get(int(user))
            if cached is None:
                cached = self._user_marginals(base[row], int(user))
                if self._cache_marginals:
                    self._marginal_cache[int(user)] = cached
            out[row] = cached
        return (1 - self.epsilon) * out + self.epsilon / self.n_items

    @override
    def marginal_probability(self, users: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """``P(item actions[:, k] at position k | user)``, shape (n, K), for given slates.

        Uncached users get only the entries asked for: exact positions are enumerated, the
        others estimated for the shown items alone, so serving a slate never computes the
        marginals of the whole catalogue.
        """
        users = _check_users(users)
        actions = np.asarray(actions)
        if self.slate_size == 1 or self._exact.all():
            return super().marginal_probability(users, actions)
        base = self.softmax_probabilities(users)
        K = actions.shape[1]
        out = np.empty((len(users), K))
        estimated = [k for k in range(K) if not self._exact[k]]
        for row, user in enumerate(users):
            cached = self._marginal_cache.get(int(user))
            if cached is None and self._cache_marginals:
                cached = self._marginal_cache[int(user)] = self._user_marginals(
                    base[row], int(user)
                )
            if cached is not None:
                out[row] = cached[actions[row], np.arange(K)]
                continue
            for k in range(K):
                if self._exact[k]:
                    out[row, k] = plackett_luce.exact_marginal(base[row], k)[actions[row, k]]
            if estimated:
                estimate = pl_estimates.estimate_position_marginals(
                    base[row],
                    estimated,
                    pl_estimates.user_rng(self.seed, int(user)),
                    items=actions[row, estimated],
                    target_relative_se=self.target_relative_se,
                    max_draws=self.max_draws,
                )
                out[row, estimated] = estimate.marginal
                self.max_relative_se = max(self.max_relative_se, float(estimate.relative_se.max()))
        return (1 - self.epsilon) * out + self.epsilon / self.n_items

    @override
    def expected_slate_reward(
        self, users: np.ndarray, relevance: np.ndarray, examination: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        users = _check_users(users)
        if self.slate_size == 1 or self._exact.all():
            return super().expected_slate_reward(users, relevance, examination)
        base = self.softmax_probabilities(users)
        K = min(self.slate_size, len(examination))
        values, variances = np.zeros(len(users)), np.zeros(len(users))
        weights = {k: float(examination[k]) for k in range(K) if not self._exact[k]}
        for row, user in enumerate(users):
            p, r = base[row], relevance[row]
            cached = self._marginal_cache.get(int(user))  # its exact columns are enumerated too
            exact = sum(
                examination[k]
                * float(
                    (cached[:, k] if cached is not None else plackett_luce.exact_marginal(p, k)) @ r
                )
                for k in range(K)
                if self._exact[k]
            )
            estimate = pl_estimates.estimate_slate_value(
                p,
                r,
                weights,
                pl_estimates.user_rng(self.seed, int(user), stream=1),
                target_relative_se=self.target_relative_se,
                max_draws=self.max_draws,
            )
            values[row] = exact + estimate.value
            variances[row] = estimate.variance
        uniform = relevance.mean(axis=1) * float(np.sum(examination[:K]))
        values = (1 - self.epsilon) * values + self.epsilon * uniform
        return values, (1 - self.epsilon) ** 2 * variances

    # -- sampling -----------------------------------------------------------------------------
    @override
    def sample(self, users: np.ndarray, rng: np.random.Generator) -> SlateSample:
        users = _check_users(users)
        if self.slate_size == 1:
            return self._sample_single(users, rng)
        n, K = len(users), self.slate_size
        base = self.softmax_probabilities(users)
        uniform_rows = rng.random(n) < self.epsilon
        logits = np.log(np.clip(base, np.finfo(float).tiny, None))
        logits[uniform_rows] = 0.0
        actions = plackett_luce.gumbel_top_k(logits, K, rng)
        prefix = self._mixed_prefix(base, actions)
        marginal = self.marginal_probability(users, actions)
        return SlateSample(actions, prefix, marginal)

    @override
    def prefix_probability(self, users: np.ndarray, slates: np.ndarray) -> np.ndarray:
        return self._mixed_prefix(self.softmax_probabilities(users), np.asarray(slates))

    def _mixed_prefix(self, base: np.ndarray, slates: np.ndarray) -> np.ndarray:
        prefix = (1 - self.epsilon) * plackett_luce.prefix_probabilities(base, slates)
        return prefix + self.epsilon * _uniform_prefix(self.n_items, slates.shape[1])

    def _sample_single(self, users: np.ndarray, rng: np.random.Generator) -> SlateSample:
        if self._use_table:
            # Alias tables make each draw O(1): one uniform, two look-ups.
            if self._alias is None:
                self._alias = AliasTable.build(
                    (1 - self.epsilon) * self._probability_table() + self.epsilon / self.n_items
                )
            actions = self._alias.sample(users, rng)
            flat = users * self.n_items + actions
            pscore = (1 - self.epsilon) * self._probability_table().ravel()[flat]
            pscore += self.epsilon / self.n_items
        else:
            u = rng.random(len(users))
            probs = self.first_position_probabilities(users)
            cdf = np.cumsum(probs, axis=1)
            actions = (cdf < (u * cdf[:, -1])[:, None]).sum(axis=1)
            actions = np.minimum(actions, self.n_items - 1)
            pscore = probs[np.arange(len(users)), actions]
        actions = actions[:, None].astype(np.int64)
        return SlateSample(actions, pscore[:, None], pscore[:, None].copy())


def _top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores per row, largest first; ties go to the lower index."""
    n_items = scores.shape[1]
    if k < n_items:
        candidates = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        # Items tied with the k-th score may sit outside the partition: widen to all of them.
        kth = np.take_along_axis(scores, candidates, axis=1).min(axis=1, keepdims=True)
        if (
            (scores == kth).sum(axis=1)
            > (np.take_along_axis(scores, candidates, 1) == kth).sum(axis=1)
        ).any():
            return np.argsort(-scores, axis=1, kind="stable")[:, :k]
    else:
        candidates = np.broadcast_to(np.arange(n_items), scores.shape)
    chosen = np.take_along_axis(scores, candidates, axis=1)
    order = np.lexsort((candidates, -chosen), axis=1)
    return np.take_along_axis(candidates, order, axis=1)


class TopKPolicy(Policy):
    """Deterministic top-k by score; with ``epsilon > 0`` the ε-greedy policy.

    With probability ``epsilon`` the slate is uniform without replacement, otherwise the K
    highest-scoring items in score order. Ties are broken by the lower item id.

    Args:
        scorer: Provides ``scores(users)`` of shape (n, n_items).
        slate_size: K.
        epsilon: Share of uniform slates in [0, 1].
        name: Identifier written into logs.
    """

    def __init__(
        self,
        scorer: UserItemScorer,
        *,
        slate_size: int = 1,
        epsilon: float = 0.0,
        name: str = "top_k",
    ):
        _check_epsilon(epsilon)
        _check_slate_size(slate_size, scorer.n_items)
        self.scorer, self.epsilon = scorer, epsilon
        self.n_items, self.slate_size, self.name = scorer.n_items, slate_size, name

    def top_k(self, users: np.ndarray) -> np.ndarray:
        """The greedy slates, shape (n, K), computed once per distinct user."""
        unique, inverse = np.unique(_check_users(users), return_inverse=True)
        slates = np.empty((len(unique), self.slate_size), dtype=np.int64)
        for start in range(0, len(unique), 4096):
            scores = np.asarray(self.scorer.scores(unique[start : start + 4096]), dtype=np.float64)
            slates[start : start + 4096] = _top_k_rows(scores, self.slate_size)
        return slates[inverse]

    @override
    def deterministic_slates(self, users: np.ndarray) -> np.ndarray | None:
        return self.top_k(users) if self.epsilon == 0 else None

    @override
    def action_distribution(self, users: np.ndarray) -> np.ndarray:
        greedy = self.top_k(users)
        n = len(users)
        out = np.full((n, self.n_items, self.slate_size), self.epsilon / self.n_items)
        rows = np.arange(n)[:, None]
        out[rows, greedy, np.arange(self.slate_size)[None, :]] += 1.0 - self.epsilon
        return self._format(out)

    @override
    def sample(self, users: np.ndarray, rng: np.random.Generator) -> SlateSample:
        greedy = self.top_k(users)
        n, K = greedy.shape
        uniform_rows = rng.random(n) < self.epsilon
        actions = greedy.copy()
        if uniform_rows.any():
            actions[uniform_rows] = (
                UniformPolicy(self.n_items, K).sample(users[uniform_rows], rng).actions
            )
        marginal = (1 - self.epsilon) * (actions == greedy) + self.epsilon / self.n_items
        prefix = self._prefix(greedy, actions)
        return SlateSample(actions.astype(np.int64), prefix, marginal)

    @override
    def prefix_probability(self, users: np.ndarray, slates: np.ndarray) -> np.ndarray:
        slates = np.asarray(slates)
        return self._prefix(self.top_k(users)[:, : slates.shape[1]], slates)

    def _prefix(self, greedy: np.ndarray, slates: np.ndarray) -> np.ndarray:
        matches = np.cumprod(slates == greedy, axis=1)
        uniform = _uniform_prefix(self.n_items, slates.shape[1])
        return (1 - self.epsilon) * matches + self.epsilon * uniform


#: How a model's scores become a policy.
ExplorationKind = Literal["none", "epsilon", "softmax"]
EXPLORATION_KINDS: tuple[str, ...] = get_args(ExplorationKind)


@dataclass(frozen=True)
class Exploration:
    """How a model explores when it serves: the one home of the exploration switch.

    Attributes:
        kind: ``none`` (deterministic top-k), ``epsilon`` (ε-greedy: a uniform slate with
            probability ``epsilon``) or ``softmax`` (Plackett–Luce over the log-odds of the
            predicted click probabilities at ``temperature``: softmax(logit(score) / T)).
        epsilon: ε of ``epsilon``, in [0, 1].
        temperature: Temperature of ``softmax`` (> 0).
    """

    kind: ExplorationKind = "none"
    epsilon: float = 0.1
    temperature: float = 1.0

    def __post_init__(self):
        if self.kind not in EXPLORATION_KINDS:
            raise ConfigError(
                f"exploration must be one of {list(EXPLORATION_KINDS)}; got {self.kind!r}"
            )
        _check_epsilon(self.epsilon)
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0; got {self.temperature}")


def make_policy(
    scorer: UserItemScorer,
    k: int,
    exploration: Exploration | str = "none",
    *,
    name: str,
    cache_marginals: bool = True,
) -> Policy:
    """The policy that serves a model's click probabilities with ``exploration``.

    Every exploration has exact propensities (for softmax slates of k >= 3 over large
    catalogues, later positions' marginals are estimated; see :class:`SoftmaxPolicy`).

    Args:
        scorer: Scores are predicted click probabilities in (0, 1), shape (n, n_items).
        k: Slate size.
        exploration: An :class:`Exploration`, or its kind with default ε and temperature.
        name: Identifier written into logs and tables.
        cache_marginals: Keep each user's softmax marginals (see :class:`SoftmaxPolicy`);
            a server that sees each request's users once turns it off.
    """
    if isinstance(exploration, str):
        exploration = Exploration(exploration)
    if exploration.kind == "none":
        return TopKPolicy(scorer, slate_size=k, name=name)
    if exploration.kind == "epsilon":
        return TopKPolicy(scorer, slate_size=k, epsilon=exploration.epsilon, name=name)
    return SoftmaxPolicy(
        LogitScorer(scorer),
        temperature=exploration.temperature,
        slate_size=k,
        name=name,
        cache_marginals=cache_marginals,
    )
