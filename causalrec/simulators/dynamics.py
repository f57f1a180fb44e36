"""Time in the structural causal model: users who drift, tire and leave; popularity feeds back.

A batch of sessions advances in lock-step. Session b has user u_b; at its step t the state is

* θ_b(t): the user's latent preference, starting at θ_u. After a click on item i it moves towards
  the item: θ ← θ + α (√d φ_i − θ), α = ``interest_drift`` (√d puts φ_i on θ's scale).
* f_b(t, c): satiation of latent cluster c (an item's cluster is the latent dimension where φ_i
  is largest). Each step it decays by the factor (1 − ``satiation_recovery``); each click on an
  item of cluster c adds ``satiation``. It is subtracted from the relevance logit.
* pop_g(t): the item popularity of the session's cohort g (``concurrent_sessions`` sessions that
  share the world clock). Each step, pop ← (1 − λ) pop + λ · (the cohort's click share of that
  step), λ = ``popularity_feedback`` (a step without clicks leaves it unchanged). It enters the
  relevance logit through ``conformity`` and the logger's softmax through γ·log pop.
* the last L = ``history_window`` slates and their clicks (what a session policy sees).

Relevance at step t: r = sigmoid(scale·θ_b(t)·φ_i + b_i + b_0 + c·(log pop_g(t)_i − mean)
− f_b(t, cluster(i))). Clicks ~ Bernoulli(e_k · r). After the step the user leaves with
probability ``leave_base`` · exp(−``leave_sensitivity`` · s), s the mean clicks per step over
the last L steps: a policy that bores users loses them.

Every session starts from its user's base state (θ_u, no satiation) and every cohort from the
world's initial popularity, so sessions (and, with popularity feedback, cohorts) are independent
draws: the unit of the long-term value is clicks per session.

References:
    Chaney, Stewart, Engelhardt, "How Algorithmic Confounding in Recommendation Systems Increases
    Homogeneity and Decreases Utility", RecSys 2018 (feedback loops through popularity).
    Ie, Hsu, Mladenov et al., "RecSim: A Configurable Simulation Platform for Recommender
    Systems", 2019 (interest drift, satiation and leaving as user dynamics).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from causalrec.platform.policy import SlateSample, SoftmaxPolicy
from causalrec.platform.session import NO_ITEM, SessionContext, SessionPolicy

__all__ = ["PopularityFeedbackLogger", "SessionState", "UserDynamics"]


@dataclass
class SessionState:
    """The mutable state of a batch of sessions (B sessions, G cohorts).

    Attributes:
        users: User of each session, shape (B,), int64.
        cohort: Cohort of each session, shape (B,), int64 in [0, G).
        step: Steps taken, shape (B,), int64.
        alive: Whether the user is still in the session, shape (B,), bool.
        theta: Current scaled preference scale·θ_b(t), shape (B, d), or ``None`` without drift.
        satiation: Per-cluster satiation f_b(t, ·), shape (B, C), or ``None`` without it.
        history_items: Last L slates, oldest first, shape (B, L, K); ``NO_ITEM`` when empty.
        history_clicks: Their clicks, shape (B, L, K), int8.
        popularity: Per-cohort popularity, shape (G, n_items), or ``None`` without feedback.
    """

    users: np.ndarray
    cohort: np.ndarray
    step: np.ndarray
    alive: np.ndarray
    theta: np.ndarray | None
    satiation: np.ndarray | None
    history_items: np.ndarray
    history_clicks: np.ndarray
    popularity: np.ndarray | None

    def log_popularity(self) -> np.ndarray | None:
        """The log popularity per cohort, shape (G, n_items), or ``None``."""
        return None if self.popularity is None else np.log(self.popularity)

    def context(self) -> SessionContext:
        """What a session policy sees now."""
        log_pop = self.log_popularity()
        return SessionContext(
            users=self.users,
            step=self.step,
            history_items=self.history_items,
            history_clicks=self.history_clicks,
            log_popularity=log_pop,
            cohort=None if log_pop is None else self.cohort,
        )


class UserDynamics:
    """The transition of a dynamic world (see the module docstring).

    Args:
        simulator: The world (a :class:`~causalrec.simulators.scm.ConfoundedRecSimulator`).
    """

    def __init__(self, simulator):
        self.simulator = simulator
        c = simulator.config
        self.config = c
        scorer = simulator.relevance_scorer
        self._theta = scorer.user_factors  # scale·θ_u, (n_users, d)
        self._phi = scorer.item_factors  # φ_i, (n_items, d)
        self._offset = scorer.item_offset  # b_i + b_0 + c·centred log pop_0, (n_items,)
        #: Item clusters for satiation: the latent dimension where φ_i is largest, (n_items,).
        self.item_cluster = np.argmax(self._phi, axis=1).astype(np.int64)
        self._drift_target = c.relevance_scale * np.sqrt(c.latent_dim) * self._phi
        log_pop = np.log(simulator.popularity)
        self._centred_log_pop0 = log_pop - log_pop.mean()

    # -- state --------------------------------------------------------------------------------
    def start(self, users: np.ndarray, cohort: np.ndarray | None = None) -> SessionState:
        """Fresh sessions of ``users`` (shape (B,)); ``cohort`` (shape (B,)) groups them."""
        c, sim = self.config, self.simulator
        users = np.asarray(users, dtype=np.int64)
        n = len(users)
        cohort = np.zeros(n, dtype=np.int64) if cohort is None else np.asarray(cohort, np.int64)
        n_cohorts = int(cohort.max()) + 1 if n else 1
        return SessionState(
            users=users,
            cohort=cohort,
            step=np.zeros(n, dtype=np.int64),
            alive=np.ones(n, dtype=bool),
            theta=self._theta[users].copy() if c.interest_drift > 0 else None,
            satiation=np.zeros((n, c.latent_dim)) if c.satiation > 0 else None,
            history_items=np.full((n, c.history_window, sim.slate_size), NO_ITEM, np.int64),
            history_clicks=np.zeros((n, c.history_window, sim.slate_size), np.int8),
            popularity=(
                np.tile(sim.popularity, (n_cohorts, 1)) if c.popularity_feedback > 0 else None
            ),
        )

    def restart(self, state: SessionState, rows: np.ndarray, users: np.ndarray) -> None:
        """Start new sessions of ``users`` in ``rows`` of ``state`` (cohort popularity is kept)."""
        state.users[rows] = users
        state.step[rows] = 0
        state.alive[rows] = True
        if state.theta is not None:
            state.theta[rows] = self._theta[users]
        if state.satiation is not None:
            state.satiation[rows] = 0.0
        state.history_items[rows] = NO_ITEM
        state.history_clicks[rows] = 0

    # -- outcome ------------------------------------------------------------------------------
    def relevance_logits(self, state: SessionState, slates: np.ndarray) -> np.ndarray:
        """True relevance logits of shown slates now, shape (B, K) as ``slates``."""
        theta = state.theta if state.theta is not None else self._theta[state.users]
        logits = np.einsum("bd,bkd->bk", theta, self._phi[slates]) + self._offset[slates]
        if state.popularity is not None and self.config.conformity > 0:
            log_pop = state.log_popularity()
            centred = log_pop - log_pop.mean(axis=1, keepdims=True)
            shift = centred[state.cohort[:, None], slates] - self._centred_log_pop0[slates]
            logits += self.config.conformity * shift
        if state.satiation is not None:
            rows = np.arange(len(slates))[:, None]
            logits -= state.satiation[rows, self.item_cluster[slates]]
        return logits

    def expected_reward(self, state: SessionState, slates: np.ndarray) -> np.ndarray:
        """Click probabilities e_k · r of shown slates now, shape (B, K).

        Without drift, satiation and popularity feedback this is the static world's
        :meth:`~causalrec.simulators.scm.ConfoundedRecSimulator.expected_reward`.
        """
        if state.theta is None and state.satiation is None and state.popularity is None:
            return self.simulator.expected_reward(state.users, slates)
        relevance = expit(self.relevance_logits(state, slates))
        return relevance * self.simulator.examination[: slates.shape[1]]

    # -- transition ---------------------------------------------------------------------------
    def advance(self, state: SessionState, slates: np.ndarray, clicks: np.ndarray) -> np.ndarray:
        """Apply one step's slates and clicks to ``state`` (in place).

        Sessions that are no longer alive keep their state; their clicks must be 0.

        Args:
            state: The batch's state.
            slates: Shown items, shape (B, K).
            clicks: Clicks, shape (B, K), 0/1.

        Returns:
            The probability that each user leaves after this step, shape (B,).
        """
        c = self.config
        clicked = clicks > 0
        rows = np.arange(len(slates))
        if state.satiation is not None:
            state.satiation *= 1.0 - c.satiation_recovery
        for k in range(slates.shape[1]):
            hit, items = rows[clicked[:, k]], slates[clicked[:, k], k]
            if state.theta is not None:
                target = self._drift_target[items]
                state.theta[hit] += c.interest_drift * (target - state.theta[hit])
            if state.satiation is not None:
                state.satiation[hit, self.item_cluster[items]] += c.satiation
        if state.popularity is not None:
            self._feed_popularity(state, slates, clicks)
        state.history_items[:, :-1] = state.history_items[:, 1:]
        state.history_clicks[:, :-1] = state.history_clicks[:, 1:]
        state.history_items[:, -1] = slates
        state.history_clicks[:, -1] = clicks
        state.step += 1
        if c.leave_base == 0:
            return np.zeros(len(slates))
        window = np.minimum(state.step, c.history_window)
        satisfaction = state.history_clicks.sum(axis=(1, 2)) / window
        return c.leave_base * np.exp(-c.leave_sensitivity * satisfaction)

    def _feed_popularity(self, state: SessionState, slates: np.ndarray, clicks: np.ndarray):
        n_cohorts, n_items = state.popularity.shape
        flat = (state.cohort[:, None] * n_items + slates).ravel()
        counts = np.bincount(
            flat, weights=clicks.ravel().astype(float), minlength=n_cohorts * n_items
        )
        counts = counts.reshape(n_cohorts, n_items)
        totals = counts.sum(axis=1, keepdims=True)
        rate = self.config.popularity_feedback
        share = counts / np.where(totals > 0, totals, 1.0)
        state.popularity[:] = np.where(
            totals > 0, (1 - rate) * state.popularity + rate * share, state.popularity
        )


class _RowScorer:
    """Scores already computed for one batch (the rows of ``logits`` are the batch's users)."""

    def __init__(self, users: np.ndarray, logits: np.ndarray, n_users: int):
        self._users, self._logits = users, logits
        self.n_users, self.n_items = n_users, logits.shape[1]

    def scores(self, users: np.ndarray) -> np.ndarray:
        if users is not self._users and not np.array_equal(users, self._users):
            raise RuntimeError("a batch scorer was asked for other users than its batch")
        return self._logits


class PopularityFeedbackLogger(SessionPolicy):
    """The world's logging policy when popularity feeds back: softmax(β·s_ui + γ·log pop(t)).

    It is the static logger (:meth:`ConfoundedRecSimulator.logging_policy`) with the
    popularity term read from the session's cohort at the current step, so what the logger
    showed earlier shapes what it shows next. Probabilities are exact as the static logger's.

    Interventions on the logger (:mod:`causalrec.loop.interventions`) change its popularity
    weight γ to ``gamma`` and add ``item_offset`` to its logits: softmax(β·s_ui + γ'·log pop(t)
    + offset_i), with pop(t) the base popularity when the context carries none.

    Args:
        simulator: The world.
        gamma: The popularity weight γ' (default: the world's ``logging_gamma``).
        item_offset: Added to every user's logits, shape (n_items,) (``-inf`` never shows an
            item); default none.
        name: Identifier written into logs.
    """

    def __init__(
        self,
        simulator,
        *,
        gamma: float | None = None,
        item_offset: np.ndarray | None = None,
        name: str = "logging",
    ):
        self.simulator = simulator
        c = simulator.config
        self.name, self.n_items, self.slate_size = name, simulator.n_items, c.slate_size
        self._gamma, self._epsilon, self._seed = c.logging_gamma, c.logging_epsilon, c.seed
        self._log_pop0 = np.log(simulator.popularity)
        # The static logits hold γ·log pop_0: a new weight γ' shifts them by (γ' − γ)·log pop_0.
        static_shift = (0.0 if gamma is None else gamma - self._gamma) * self._log_pop0
        if gamma is not None:
            self._gamma = gamma
        offset = static_shift + (0.0 if item_offset is None else np.asarray(item_offset, float))
        self._item_offset = offset if np.any(offset != 0) else None

    def _batch_policy(self, context: SessionContext) -> SoftmaxPolicy:
        logits = self.simulator.logging_scorer.scores(context.users)
        if context.log_popularity is not None:
            logits = logits + self._gamma * (
                context.log_popularity[context.cohort] - self._log_pop0
            )
        if self._item_offset is not None:
            logits = logits + self._item_offset
        return SoftmaxPolicy(
            _RowScorer(context.users, logits, self.simulator.n_users),
            epsilon=self._epsilon,
            slate_size=self.slate_size,
            name=self.name,
            seed=self._seed,
            cache_marginals=False,
            cache_table=False,
        )

    def sample_session(self, context: SessionContext, rng: np.random.Generator) -> SlateSample:
        """Draw slates from the logger at the cohorts' current popularity."""
        return self._batch_policy(context).sample(context.users, rng)

    def session_action_distribution(self, context: SessionContext) -> np.ndarray:
        """The logger's marginals at the cohorts' current popularity."""
        return self._batch_policy(context).action_distribution(context.users)

    def slate_probability(self, context: SessionContext, slates: np.ndarray) -> np.ndarray:
        """The logger's probability of whole slates at the current popularity, shape (n,)."""
        return self._batch_policy(context).prefix_probability(context.users, slates)[:, -1]
