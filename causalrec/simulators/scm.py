"""The confounded recommender world: an explicit structural causal model with exact ground truth.

Structural equations (u a user, i an item, k a 1-based position; see :meth:`causal_graph`):

* θ_u ~ N(0, I_d): latent preference; φ_i ~ N(0, I_d / d): latent item traits.
* x_u = [θ_u[:m] A + σ ε_u, η_u]: observed user features; only the first ``m`` latent dimensions
  are visible, ``η_u ~ N(0, I)`` are nuisance features independent of preference.
* z_i = [√d φ_i B + σ ε_i, ξ_i]: observed item features, with nuisance ``ξ_i`` of norm √q.
* pop_i ∝ rank_i^(-α): Zipf popularity over a random permutation of ranks.
* r_ui = sigmoid(scale·θ_u·φ_i + b_i + b_0 + c·(log pop_i - mean log pop)): relevance,
  P(click | examined).
* e_k = k^(-η): examination probability (position-based model).
* s_ui = ρ[(1-h)·ŝ_ui + h·s^hid_ui] + (1-ρ)·s^nuis_ui: the logger's belief, each part
  standardised. ŝ uses only observed features (θ decoded from x_u, φ from z_i, plus b_i);
  s^hid uses the latent dimensions of θ_u that x_u does not reveal; s^nuis = η_u R ξ_i / √q
  with a random rotation R, a relevance-independent view of the nuisance features. ρ is
  ``confounding`` and h is ``hidden_confounding``.
* exposure ~ (1-ε)·PL(softmax(β·s_ui + γ·log pop_i)) + ε·uniform: the logging policy.
* click_uik ~ Bernoulli(e_k · r_ui).

With ρ = 0 exposure is independent of relevance (unconfounded); with h = 0 the propensity is a
function of observed features (ignorability holds); with h > 0 it is not.

With the dynamics fields on (``interest_drift``, ``satiation``, ``popularity_feedback``,
``leave_base``) the model gains time: θ_u drifts towards clicked items, clicked clusters tire,
popularity follows clicks, and users leave; :mod:`causalrec.simulators.dynamics` has the
transition and :meth:`ConfoundedRecSimulator.long_term_value` the truth over sessions.

References:
    Craswell, Zoeter, Taylor, Ramsey, "An Experimental Comparison of Click Position-Bias
    Models", WSDM 2008 (the position-based model).
    Schnabel, Swaminathan, Singh, Chandak, Joachims, "Recommendations as Treatments: Debiasing
    Learning and Evaluation", ICML 2016 (exposure as a treatment, propensities).
    Wang, Liang, Charlin, Blei, "Causal Inference for Recommender Systems", RecSys 2020
    (confounded exposure, substitute confounders).
    Pearl, "Causality", 2009 (structural causal models and do-interventions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from causalrec.platform.errors import ConfigError
from causalrec.platform.policy import Policy, SoftmaxPolicy, TopKPolicy, UniformPolicy
from causalrec.platform.session import PolicyOnSessions, SessionPolicy
from causalrec.platform.units import LongTermValue, PairedLongTermValue, PolicyValue
from causalrec.simulators.config import SimulatorConfig
from causalrec.simulators.graph import CausalGraph, Edge, Node

__all__ = ["BilinearScorer", "ConfoundedRecSimulator"]

_USER_BATCH = 2048
#: Largest (n_users x n_items) relevance table the simulator caches for fast look-ups.
_TABLE_BUDGET = 20_000_000


@dataclass(frozen=True)
class BilinearScorer:
    """Scores ``user_factors[u] · item_factors[i] + item_offset[i]`` (true relevance logits).

    Attributes:
        user_factors: Shape (n_users, r).
        item_factors: Shape (n_items, r).
        item_offset: Shape (n_items,).
    """

    user_factors: np.ndarray
    item_factors: np.ndarray
    item_offset: np.ndarray

    @property
    def n_users(self) -> int:
        """Number of users."""
        return self.user_factors.shape[0]

    @property
    def n_items(self) -> int:
        """Number of items."""
        return self.item_factors.shape[0]

    def scores(self, users: np.ndarray) -> np.ndarray:
        """Scores of shape (len(users), n_items)."""
        return self.user_factors[users] @ self.item_factors.T + self.item_offset

    def pair_scores(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores of given pairs; ``items`` has shape (n,) or (n, K), the result the same."""
        items = np.asarray(items)
        user_rows = self.user_factors[users]
        if items.ndim == 1:
            return (
                np.einsum("nd,nd->n", user_rows, self.item_factors[items]) + self.item_offset[items]
            )
        return (
            np.einsum("nd,nkd->nk", user_rows, self.item_factors[items]) + self.item_offset[items]
        )


def _random_rotation(dim: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random orthogonal matrix of shape (dim, dim) (QR with sign correction)."""
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    return q * np.sign(np.diag(r)) if dim else q


def _standard_deviation(scorer: BilinearScorer, rng: np.random.Generator, n_pairs: int) -> float:
    users = rng.integers(scorer.n_users, size=n_pairs)
    items = rng.integers(scorer.n_items, size=n_pairs)
    std = float(np.std(scorer.pair_scores(users, items)))
    return std if std > 1e-12 else 1.0


class ConfoundedRecSimulator:
    """A recommender world with confounded exposure that knows the exact value of any policy.

    Args:
        config: The structural parameters; see :class:`SimulatorConfig`.

    Attributes:
        config: The configuration.
        user_features: Observed user features x_u, shape (n_users, user_feature_dim +
            nuisance_feature_dim).
        item_features: Observed item features z_i, shape (n_items, item_feature_dim +
            nuisance_feature_dim).
        popularity: Item popularity, shape (n_items,), summing to one.
        examination: Examination probability per position e_k, shape (slate_size,).
        relevance_scorer: Scorer of the true relevance logits.
        logging_scorer: Scorer of the logging softmax's logits β·s_ui + γ·log pop_i.

    Example:
        >>> from causalrec.simulators import ConfoundedRecSimulator, SimulatorConfig
        >>> sim = ConfoundedRecSimulator(SimulatorConfig(n_users=50, n_items=20))
        >>> 0.0 < sim.policy_value(sim.logging_policy()) <= sim.oracle_value() <= 1.0
        True
    """

    def __init__(self, config: SimulatorConfig):
        self.config = config
        self._relevance_table: np.ndarray | None = None
        self._logging_policy: SoftmaxPolicy | None = None
        if config.hidden_confounding > 0 and config.n_visible_latent >= config.latent_dim:
            raise ConfigError(
                f"hidden_confounding={config.hidden_confounding} needs latent dimensions hidden "
                f"from the features: observed_latent_fraction must be < 1; got "
                f"{config.observed_latent_fraction} with latent_dim={config.latent_dim}"
            )
        if config.confounding < 1 and config.nuisance_feature_dim == 0 and config.logging_beta > 0:
            raise ConfigError(
                f"confounding={config.confounding} < 1 needs nuisance features for the "
                "relevance-independent part of the logger's belief: nuisance_feature_dim must be "
                ">= 1; got 0"
            )
        self._build_world()

    # -- construction ---------------------------------------------------------------------------
    def _build_world(self) -> None:
        c = self.config
        streams = [np.random.default_rng(s) for s in np.random.SeedSequence(c.seed).spawn(8)]
        d, m, q = c.latent_dim, c.n_visible_latent, c.nuisance_feature_dim
        theta = streams[0].normal(size=(c.n_users, d))
        phi = streams[1].normal(size=(c.n_items, d)) / np.sqrt(d)

        user_map = streams[2].normal(size=(m, c.user_feature_dim)) / np.sqrt(m)
        item_map = streams[2].normal(size=(d, c.item_feature_dim)) / np.sqrt(d)
        user_signal = theta[:, :m] @ user_map + c.feature_noise * streams[3].normal(
            size=(c.n_users, c.user_feature_dim)
        )
        item_signal = np.sqrt(d) * phi @ item_map + c.feature_noise * streams[3].normal(
            size=(c.n_items, c.item_feature_dim)
        )
        user_nuisance = streams[4].normal(size=(c.n_users, q))
        # Item nuisance directions all have norm √q, so that (with a rotation below and isotropic
        # η_u) every item has the same distribution of nuisance exposure over users: without
        # confounding no item is favoured on average, not even by chance.
        item_nuisance = streams[4].normal(size=(c.n_items, q))
        norms = np.linalg.norm(item_nuisance, axis=1, keepdims=True)
        item_nuisance *= np.sqrt(q) / np.where(norms > 0, norms, 1.0)
        self.user_features = np.hstack([user_signal, user_nuisance])
        self.item_features = np.hstack([item_signal, item_nuisance])
        self.user_features_f32 = self.user_features.astype(np.float32)

        ranks = streams[5].permutation(c.n_items) + 1.0
        popularity = ranks ** (-c.zipf_exponent)
        self.popularity = popularity / popularity.sum()
        log_pop = np.log(self.popularity)
        centred_log_pop = log_pop - log_pop.mean()
        self.item_bias = c.item_bias_std * streams[6].normal(size=c.n_items)
        self.examination = np.arange(1, c.slate_size + 1, dtype=float) ** (-c.position_bias)

        self.relevance_scorer = BilinearScorer(
            c.relevance_scale * theta,
            phi,
            self.item_bias + c.global_bias + c.conformity * centred_log_pop,
        )

        # The logger's belief: observed part decoded from features, hidden and nuisance parts.
        theta_hat = user_signal @ np.linalg.pinv(user_map)  # (n_users, m)
        phi_hat = item_signal @ np.linalg.pinv(item_map) / np.sqrt(d)  # (n_items, d)
        parts = [
            BilinearScorer(c.relevance_scale * theta_hat, phi_hat[:, :m], self.item_bias),
            BilinearScorer(c.relevance_scale * theta[:, m:], phi[:, m:], np.zeros(c.n_items)),
            BilinearScorer(
                user_nuisance @ _random_rotation(q, streams[7]) / np.sqrt(max(q, 1)),
                item_nuisance,
                np.zeros(c.n_items),
            ),
        ]
        weights = [
            c.confounding * (1 - c.hidden_confounding),
            c.confounding * c.hidden_confounding,
            1 - c.confounding,
        ]
        std_rng = np.random.default_rng(np.random.SeedSequence([c.seed, 1]))
        user_blocks, item_blocks, offset = [], [], np.zeros(c.n_items)
        # The logging scorer's columns from θ_u[m:] and what multiplies θ_u[m:] there: the
        # hidden confounder, which true_sensitivity_gamma integrates out.
        self._hidden_columns, self._hidden_scale, column = slice(0, 0), 0.0, 0
        for index, (part, weight) in enumerate(zip(parts, weights, strict=True)):
            if weight == 0 or part.user_factors.shape[1] == 0:
                continue
            scale = c.logging_beta * weight / _standard_deviation(part, std_rng, 100_000)
            width = part.user_factors.shape[1]
            if index == 1 and scale > 0:
                self._hidden_columns = slice(column, column + width)
                self._hidden_scale = scale * c.relevance_scale
            column += width
            user_blocks.append(scale * part.user_factors)
            item_blocks.append(part.item_factors)
            offset = offset + scale * part.item_offset
        if not user_blocks:  # β = 0 or all weights zero: no belief
            user_blocks, item_blocks = [np.zeros((c.n_users, 1))], [np.zeros((c.n_items, 1))]
        self.logging_scorer = BilinearScorer(
            np.hstack(user_blocks), np.hstack(item_blocks), offset + c.logging_gamma * log_pop
        )

    # -- properties -------------------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        """Number of users."""
        return self.config.n_users

    @property
    def n_items(self) -> int:
        """Number of items."""
        return self.config.n_items

    @property
    def slate_size(self) -> int:
        """Slate size K."""
        return self.config.slate_size

    # -- structural equations ---------------------------------------------------------------------
    def relevance(self, users: np.ndarray) -> np.ndarray:
        """True relevance r_ui = P(click | examined) for every item, shape (len(users), n_items)."""
        return expit(self.relevance_scorer.scores(users))

    def expected_reward(self, users: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Exact click probability e_k · r_{u, a_k} of shown slates.

        Args:
            users: User ids, shape (n,).
            actions: Item ids, shape (n, K) with K <= slate_size, in position order.

        Returns:
            Shape (n, K).
        """
        if self._relevance_table is None and self.n_users * self.n_items <= _TABLE_BUDGET:
            self._relevance_table = np.concatenate(
                [
                    self.relevance(np.arange(s, min(s + _USER_BATCH, self.n_users)))
                    for s in range(0, self.n_users, _USER_BATCH)
                ]
            ).ravel()
        if self._relevance_table is not None:
            relevance = self._relevance_table[users[:, None] * self.n_items + actions]
        else:
            relevance = expit(self.relevance_scorer.pair_scores(users, actions))
        return relevance * self.examination[: actions.shape[1]]

    def sample_users(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` users uniformly at random, shape (n,)."""
        return rng.integers(self.n_users, size=n, dtype=np.int64)

    def sample_clicks(
        self, users: np.ndarray, actions: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw clicks for shown slates.

        Returns:
            ``(clicks, expected_reward)``, both of shape (n, K); clicks are 0/1 ``int8``.
        """
        expected = self.expected_reward(users, actions)
        clicks = (rng.random(expected.shape) < expected).astype(np.int8)
        return clicks, expected

    # -- policies ---------------------------------------------------------------------------------
    def logging_policy(self) -> SoftmaxPolicy:
        """The confounded logging policy: PL(softmax(β·s + γ·log pop)) mixed with ε-uniform.

        The same instance is returned on every call, so its probability tables are built once.
        """
        if self._logging_policy is None:
            self._logging_policy = self._make_logging_policy()
        return self._logging_policy

    def _make_logging_policy(self) -> SoftmaxPolicy:
        return SoftmaxPolicy(
            self.logging_scorer,
            epsilon=self.config.logging_epsilon,
            slate_size=self.slate_size,
            name="logging",
            seed=self.config.seed,
        )

    def session_logging_policy(self) -> SessionPolicy:
        """The logging policy acting on sessions.

        With popularity feedback its popularity term follows the session's cohort
        (:class:`~causalrec.simulators.dynamics.PopularityFeedbackLogger`); otherwise it is
        :meth:`logging_policy`, which ignores histories.
        """
        if self.config.popularity_feedback > 0:
            from causalrec.simulators.dynamics import PopularityFeedbackLogger

            return PopularityFeedbackLogger(self)
        return PolicyOnSessions(self.logging_policy())

    def uniform_policy(self) -> UniformPolicy:
        """Uniform random slates without replacement."""
        return UniformPolicy(self.n_items, self.slate_size)

    def oracle_policy(self) -> TopKPolicy:
        """The best top-K policy: the K most relevant items, most relevant first."""
        return TopKPolicy(self.relevance_scorer, slate_size=self.slate_size, name="oracle")

    def check_policy(self, policy: Policy | SessionPolicy) -> None:
        """Refuse a policy of another catalogue or slate size (naming both).

        Raises:
            ConfigError: If ``policy.n_items`` or ``policy.slate_size`` differ from the world's.
        """
        if policy.n_items != self.n_items or policy.slate_size != self.slate_size:
            raise ConfigError(
                f"policy {policy.name!r} has n_items={policy.n_items}, slate_size="
                f"{policy.slate_size}; the simulator has n_items={self.n_items}, slate_size="
                f"{self.slate_size}"
            )

    # -- ground truth -----------------------------------------------------------------------------
    def policy_value(self, policy: Policy) -> PolicyValue:
        """Expected clicks per round under ``policy`` (the intervention do(exposure := π)).

        An expectation over uniformly drawn users and the policy's own randomness using the true
        relevance and examination probabilities: Σ_k e_k Σ_i P_π(i at k | u) r_ui averaged over
        users. It is exact (no sampling noise) wherever the policy's marginals are. For
        Plackett–Luce slates whose later positions cannot be enumerated, those positions are
        Σ_k e_k E[r(a_k) | prefix] averaged over sampled prefixes (Rao–Blackwellised); the
        result then says ``exact=False`` and carries its standard error.

        Returns:
            A :class:`~causalrec.platform.units.PolicyValue` (a float in clicks per round).
        """
        if policy.n_items != self.n_items or policy.slate_size > self.slate_size:
            raise ConfigError(
                f"policy {policy.name!r} has n_items={policy.n_items}, slate_size="
                f"{policy.slate_size}; the simulator has n_items={self.n_items}, "
                f"slate_size={self.slate_size}"
            )
        total = variance = 0.0
        for start in range(0, self.n_users, _USER_BATCH):
            users = np.arange(start, min(start + _USER_BATCH, self.n_users))
            values, variances = policy.expected_slate_reward(
                users, self.relevance(users), self.examination
            )
            total += float(values.sum())
            variance += float(variances.sum())
        # Exact marginals give zero variance, so an exact value has standard error 0.
        return PolicyValue(
            total / self.n_users,
            standard_error=float(np.sqrt(variance)) / self.n_users,
            exact=policy.exact_marginals,
        )

    def long_term_value(
        self,
        policy: Policy | SessionPolicy,
        horizon: int | None = None,
        n_sessions: int = 20_000,
        seed: int | None = 0,
    ) -> LongTermValue:
        """Expected clicks per session of ``policy`` over ``horizon`` steps, by rollouts.

        Sessions are rolled out in vectorised batches under the world's dynamics (see
        :mod:`causalrec.simulators.rollout`); each session's return is the sum over the steps
        the user stayed of the expected clicks of the shown slate given the state. With
        dynamics off and ``horizon=1`` it estimates :meth:`policy_value`.

        Args:
            policy: Any policy: a plain :class:`Policy` (simulator policies, saved models) or a
                :class:`SessionPolicy` that reads the session's history.
            horizon: Steps per session; defaults to ``session_length``.
            n_sessions: Sessions to roll out (rounded up to whole cohorts of
                ``concurrent_sessions`` when popularity feeds back).
            seed: Seed of the rollouts; the same seed gives common random numbers.

        Returns:
            A :class:`~causalrec.platform.units.LongTermValue` in clicks per session, with its
            standard error (over sessions; over cohorts when popularity feeds back).

        Raises:
            ConfigError: For a horizon < 1, n_sessions < 1 or a policy that cannot act here.
        """
        from causalrec.simulators.rollout import long_term_value

        horizon = self.config.session_length if horizon is None else horizon
        return long_term_value(self, policy, horizon=horizon, n_sessions=n_sessions, seed=seed)

    def paired_long_term_value(
        self,
        policy: Policy | SessionPolicy,
        baseline: Policy | SessionPolicy,
        horizon: int | None = None,
        n_sessions: int = 20_000,
        seed: int | None = 0,
    ) -> PairedLongTermValue:
        """Long-term values of two policies and their difference, on common random numbers.

        Both are rolled out on the same users with the same click and leave draws, so the
        difference's standard error is that of the paired per-session differences.

        Args:
            policy: The policy.
            baseline: The policy it is compared with.
            horizon: Steps per session; defaults to ``session_length``.
            n_sessions: Sessions per policy.
            seed: Seed shared by both rollouts.
        """
        from causalrec.simulators.rollout import paired_long_term_value

        horizon = self.config.session_length if horizon is None else horizon
        return paired_long_term_value(
            self, policy, baseline, horizon=horizon, n_sessions=n_sessions, seed=seed
        )

    def observed_feature_propensity(
        self, users: np.ndarray, *, n_draws: int = 4096, seed: int | None = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """The logger's propensity given the observed features, and its standard error.

        See :func:`causalrec.simulators.hidden_confounding.observed_feature_propensity`.
        """
        from causalrec.simulators import hidden_confounding

        return hidden_confounding.observed_feature_propensity(
            self, users, n_draws=n_draws, seed=seed
        )

    def true_sensitivity_gamma(self, *, n_draws: int = 4096, seed: int | None = 0):
        """The world's Γ of the marginal sensitivity model (a ``SensitivityGamma``).

        See :func:`causalrec.simulators.hidden_confounding.true_sensitivity_gamma`.
        """
        from causalrec.simulators import hidden_confounding

        return hidden_confounding.true_sensitivity_gamma(self, n_draws=n_draws, seed=seed)

    def oracle_value(self) -> float:
        """Exact value of the best top-K policy (an upper bound on every policy's value).

        By the rearrangement inequality the best slate puts the K most relevant items in
        decreasing order of relevance onto positions of decreasing examination.
        """
        K = self.slate_size
        total = 0.0
        for start in range(0, self.n_users, _USER_BATCH):
            relevance = self.relevance(np.arange(start, min(start + _USER_BATCH, self.n_users)))
            top = -np.sort(-np.partition(relevance, self.n_items - K, axis=1)[:, -K:], axis=1)
            total += float((top @ self.examination).sum())
        return total / self.n_users

    def causal_graph(self) -> CausalGraph:
        """The structural causal model as nodes and edges (see the module docstring)."""
        c = self.config
        nodes = [
            Node("user_latent", "θ_u latent preference", observed=False),
            Node("user_features", "x_u user features", observed=True),
            Node("item_latent", "φ_i latent item traits", observed=False),
            Node("item_features", "z_i item features", observed=True),
            Node("popularity", "pop_i popularity", observed=True),
            Node("relevance", "r_ui relevance", observed=False),
            Node("exposure", "exposure (logging policy)", observed=True),
            Node("position", "position k", observed=True),
            Node("examination", "e_k examination", observed=False),
            Node("click", "click", observed=True),
        ]
        edges = [
            Edge("user_latent", "user_features"),
            Edge("user_latent", "relevance"),
            Edge("item_latent", "item_features"),
            Edge("item_latent", "relevance"),
            Edge("user_features", "exposure"),
            Edge("item_features", "exposure"),
        ]
        if c.confounding > 0 and c.hidden_confounding > 0 and c.logging_beta > 0:
            edges.append(Edge("user_latent", "exposure"))
        if c.logging_gamma > 0:
            edges.append(Edge("popularity", "exposure"))
        if c.conformity > 0:
            edges.append(Edge("popularity", "relevance"))
        edges += [
            Edge("exposure", "click"),
            Edge("position", "examination"),
            Edge("examination", "click"),
            Edge("relevance", "click"),
        ]
        if c.dynamic:
            self._add_next_step(nodes, edges)
        return CausalGraph(tuple(nodes), tuple(edges))

    def _add_next_step(self, nodes: list[Node], edges: list[Edge]) -> None:
        """Time-indexed nodes of step t+1: what this step's exposure and clicks change."""
        c = self.config
        nodes += [
            Node("user_latent_next", "θ_u(t+1) preference", observed=False),
            Node("relevance_next", "r_ui(t+1) relevance", observed=False),
            Node("exposure_next", "exposure(t+1)", observed=True),
            Node("click_next", "click(t+1)", observed=True),
        ]
        edges += [
            Edge("user_latent", "user_latent_next"),
            Edge("user_latent_next", "relevance_next"),
            Edge("item_latent", "relevance_next"),
            Edge("user_features", "exposure_next"),
            Edge("item_features", "exposure_next"),
            Edge("relevance_next", "click_next"),
            Edge("exposure_next", "click_next"),
            Edge("examination", "click_next"),
        ]
        if c.interest_drift > 0:
            edges += [Edge("exposure", "user_latent_next"), Edge("click", "user_latent_next")]
        if c.satiation > 0:
            nodes.append(Node("satiation_next", "f(t+1) satiation", observed=False))
            edges += [
                Edge("exposure", "satiation_next"),
                Edge("click", "satiation_next"),
                Edge("satiation_next", "relevance_next"),
            ]
        popularity = "popularity"
        if c.popularity_feedback > 0:
            popularity = "popularity_next"
            nodes.append(Node(popularity, "pop_i(t+1) popularity", observed=True))
            edges += [
                Edge("popularity", popularity),
                Edge("exposure", popularity),
                Edge("click", popularity),
            ]
        if c.logging_gamma > 0:
            edges.append(Edge(popularity, "exposure_next"))
        if c.conformity > 0:
            edges.append(Edge(popularity, "relevance_next"))
        if c.leave_base > 0:
            nodes.append(Node("leave", "user leaves (session ends)", observed=True))
            edges += [Edge("click", "leave"), Edge("leave", "exposure_next")]
