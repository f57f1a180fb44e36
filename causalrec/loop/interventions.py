"""Interventions on a deployed policy (推荐干预): boost, cap popularity, explore, remove.

Each intervention turns the policy an arm would serve into another policy with exact
propensities (:class:`~causalrec.loop.config.InterventionConfig` says what each kind does):

* ``boost`` adds log ``factor`` to the boosted items' scores on the logit scale, before the
  policy ranks or samples (:class:`ProbabilityOffsetScorer` for models, whose scores are click
  probabilities; the logger's logits directly);
* ``cap_popularity`` rebuilds the world's logger with popularity weight min(γ, ``weight``);
* ``explore`` mixes the policy with uniform slates (:class:`UniformMixture`);
* ``remove`` conditions the policy on not showing the items (:class:`ExcludeItems`; for a
  ranker, the items also leave the ranking, so the next item takes their place).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from causalrec.loop.arms import Deployment
from causalrec.loop.config import ArmConfig, InterventionConfig
from causalrec.loop.metrics import long_tail_items
from causalrec.methods.base import ModelScorer
from causalrec.platform.errors import ConfigError
from causalrec.platform.policy import (
    Exploration,
    LogitScorer,
    SlateSample,
    UniformPolicy,
    UserItemScorer,
    make_policy,
)
from causalrec.platform.session import SessionContext, SessionPolicy, as_session_policy
from causalrec.simulators.dynamics import PopularityFeedbackLogger
from causalrec.simulators.scm import ConfoundedRecSimulator

__all__ = [
    "ExcludeItems",
    "ProbabilityOffsetScorer",
    "SplitPolicy",
    "UniformMixture",
    "ab_assignment",
    "apply_intervention",
    "check_intervention",
    "intervention_items",
]


@dataclass(frozen=True)
class ProbabilityOffsetScorer:
    """Click probabilities with item offsets on the logit scale: expit(logit(p) + offset_i).

    Attributes:
        scorer: Scores in [0, 1], shape (n, n_items).
        offset: Per-item logit offset, shape (n_items,); ``-inf`` gives probability 0.
    """

    scorer: UserItemScorer
    offset: np.ndarray

    @property
    def n_users(self) -> int:
        """Users of the wrapped scorer."""
        return self.scorer.n_users

    @property
    def n_items(self) -> int:
        """Items of the wrapped scorer."""
        return self.scorer.n_items

    def scores(self, users: np.ndarray) -> np.ndarray:
        """The offset probabilities, shape (len(users), n_items)."""
        return expit(LogitScorer(self.scorer).scores(users) + self.offset)


class UniformMixture(SessionPolicy):
    """With probability ε a uniform slate, otherwise the wrapped policy's (exact propensities).

    Marginals (1 − ε)·π + ε/n_items; whole-slate probabilities (1 − ε)·P_π(slate) + ε·P_U(slate).

    Args:
        policy: The wrapped session policy.
        epsilon: The share of uniform slates, in (0, 1].
        name: Identifier written into logs.
    """

    def __init__(self, policy: SessionPolicy, epsilon: float, name: str):
        if not 0 < epsilon <= 1:
            raise ConfigError(f"epsilon must be in (0, 1]; got {epsilon}")
        self.policy, self.epsilon, self.name = policy, epsilon, name
        self.n_items, self.slate_size = policy.n_items, policy.slate_size
        self._uniform = UniformPolicy(self.n_items, self.slate_size)

    def sample_session(self, context: SessionContext, rng: np.random.Generator) -> SlateSample:
        """Draw the wrapped policy's slates, then replace a share ε by uniform ones."""
        base = self.policy.sample_session(context, rng)
        uniform = self._uniform.sample(context.users, rng)
        swap = rng.random(context.n) < self.epsilon
        actions = np.where(swap[:, None], uniform.actions, base.actions)
        # Exact probabilities of the shown slates under the mixture, whichever part drew them.
        marginal = (1 - self.epsilon) * _marginals_of(self.policy, context, actions) + (
            self.epsilon / self.n_items
        )
        prefix = np.stack(
            [self._prefix(context, actions[:, : k + 1]) for k in range(self.slate_size)],
            axis=1,
        )
        return SlateSample(actions.astype(np.int64), prefix, marginal)

    def _prefix(self, context: SessionContext, slates: np.ndarray) -> np.ndarray:
        base = self.policy.slate_probability(context, slates)
        uniform = self._uniform.prefix_probability(context.users, slates)[:, -1]
        return (1 - self.epsilon) * base + self.epsilon * uniform

    def session_action_distribution(self, context: SessionContext) -> np.ndarray:
        """(1 − ε)·π + ε/n_items."""
        dist = self.policy.session_action_distribution(context)
        return (1 - self.epsilon) * dist + self.epsilon / self.n_items

    def slate_probability(self, context: SessionContext, slates: np.ndarray) -> np.ndarray:
        """(1 − ε)·P_π(slate) + ε·P_U(slate), shape (n,)."""
        return self._prefix(context, np.asarray(slates))


class ExcludeItems(SessionPolicy):
    """The wrapped policy conditioned on not showing ``items`` (slates of one item).

    π'(i | context) = π(i | context)·1[i ∉ R] / (1 − π(R | context)): exact, drawn from the
    renormalised distribution. Users whose policy puts all its mass on R have no such
    conditional: build the wrapped policy without R in its ranking (as :func:`apply_intervention`
    does), so they get the next item.

    Args:
        policy: The wrapped session policy (K = 1).
        items: The removed item ids.
        name: Identifier written into logs.

    Raises:
        ConfigError: For slates of more than one item.
    """

    def __init__(self, policy: SessionPolicy, items: np.ndarray, name: str):
        if policy.slate_size != 1:
            raise ConfigError(
                f"remove: supported for slates of one item; the policy shows {policy.slate_size}"
            )
        self.policy, self.name = policy, name
        self.n_items, self.slate_size = policy.n_items, 1
        self.removed = np.zeros(self.n_items, dtype=bool)
        self.removed[np.asarray(items, dtype=np.int64)] = True

    def session_action_distribution(self, context: SessionContext) -> np.ndarray:
        """The renormalised marginals, shape (n, n_items)."""
        dist = np.where(self.removed, 0.0, self.policy.session_action_distribution(context))
        total = dist.sum(axis=1, keepdims=True)
        if (total <= 0).any():
            user = int(context.users[np.flatnonzero(total[:, 0] <= 0)[0]])
            raise ConfigError(f"remove: the policy shows only removed items to user {user}")
        return dist / total

    def sample_session(self, context: SessionContext, rng: np.random.Generator) -> SlateSample:
        """One categorical draw per session from the renormalised marginals."""
        dist = self.session_action_distribution(context)
        cumulative = np.cumsum(dist, axis=1)
        u = rng.random(context.n) * cumulative[:, -1]
        actions = np.minimum((cumulative < u[:, None]).sum(axis=1), self.n_items - 1)
        p = dist[np.arange(context.n), actions][:, None]
        return SlateSample(actions[:, None].astype(np.int64), p.copy(), p.copy())


def _marginals_of(policy: SessionPolicy, context: SessionContext, actions: np.ndarray):
    dist = policy.session_action_distribution(context)
    dist = dist[:, :, None] if dist.ndim == 2 else dist
    rows = np.arange(context.n)[:, None]
    return dist[rows, actions, np.arange(actions.shape[1])[None, :]]


def intervention_items(
    intervention: InterventionConfig, simulator: ConfoundedRecSimulator, head_share: float
) -> np.ndarray:
    """The item ids an intervention names (``tail``: by base popularity).

    Raises:
        ConfigError: For an item id outside the catalogue (naming the intervention).
    """
    if intervention.items == "tail":
        return np.flatnonzero(long_tail_items(simulator.popularity, head_share))
    items = np.asarray(intervention.items, dtype=np.int64)
    if items.max() >= simulator.n_items:
        raise ConfigError(
            f"interventions.{intervention.name}.items: {int(items.max())} is not an item of the "
            f"world's {simulator.n_items}"
        )
    return items


def _offset(n_items: int, items: np.ndarray, value: float) -> np.ndarray:
    offset = np.zeros(n_items)
    offset[items] = value
    return offset


def _rescored(
    deployment: Deployment,
    simulator: ConfoundedRecSimulator,
    offset: np.ndarray,
    exploration: Exploration,
    name: str,
) -> SessionPolicy:
    """The deployment's policy with ``offset`` added to its logits."""
    if deployment.model is not None:
        scorer = ProbabilityOffsetScorer(ModelScorer(deployment.model), offset)
        return as_session_policy(make_policy(scorer, simulator.slate_size, exploration, name=name))
    if deployment.version == "logging":
        return PopularityFeedbackLogger(simulator, item_offset=offset, name=name)
    raise ConfigError(
        f"intervention {name!r}: the fixed policy {deployment.version!r} has no scores to change"
    )


def apply_intervention(
    intervention: InterventionConfig,
    deployment: Deployment,
    simulator: ConfoundedRecSimulator,
    *,
    exploration: Exploration,
    head_share: float,
) -> Deployment:
    """The deployment an arm serves under ``intervention``.

    Args:
        intervention: The intervention.
        deployment: What the arm would serve without it.
        simulator: The world.
        exploration: How the arm's model serves (for rescored models).
        head_share: The head's share of the catalogue (for ``items: tail``).

    Returns:
        The intervened deployment (version ``<version>+<intervention name>``).

    Raises:
        ConfigError: For an intervention the deployment cannot take (named).
    """
    name = intervention.name
    if intervention.kind == "explore":
        policy: SessionPolicy = UniformMixture(deployment.policy, intervention.epsilon, name)
    elif intervention.kind == "cap_popularity":
        gamma = min(simulator.config.logging_gamma, intervention.weight)
        policy = PopularityFeedbackLogger(simulator, gamma=gamma, name=name)
    else:
        items = intervention_items(intervention, simulator, head_share)
        if intervention.kind == "boost":
            offset = _offset(simulator.n_items, items, float(np.log(intervention.factor)))
            policy = _rescored(deployment, simulator, offset, exploration, name)
        else:
            if deployment.model is not None or deployment.version == "logging":
                offset = _offset(simulator.n_items, items, -np.inf)
                base = _rescored(deployment, simulator, offset, exploration, name)
            else:
                base = deployment.policy
            policy = ExcludeItems(base, items, name)
    return Deployment(policy, f"{deployment.version}+{name}", deployment.model)


class SplitPolicy(SessionPolicy):
    """An A/B split within one world: treated users get ``treatment``, the others ``control``.

    Assignment is fixed per user, so each shown slate's propensity is its own arm's.

    Args:
        control: The policy of untreated users.
        treatment: The policy of treated users.
        treated: Whether each user of the world is treated, shape (n_users,).
        name: Identifier written into logs.
    """

    def __init__(
        self, control: SessionPolicy, treatment: SessionPolicy, treated: np.ndarray, name: str
    ):
        self.control, self.treatment, self.name = control, treatment, name
        self.n_items, self.slate_size = control.n_items, control.slate_size
        self.treated = np.asarray(treated, dtype=bool)

    def sample_session(self, context: SessionContext, rng: np.random.Generator) -> SlateSample:
        """Both arms draw for every session; each session keeps its own arm's slate."""
        a, b = (
            self.control.sample_session(context, rng),
            self.treatment.sample_session(context, rng),
        )
        rows = self.treated[context.users][:, None]
        return SlateSample(
            np.where(rows, b.actions, a.actions),
            np.where(rows, b.pscore_prefix, a.pscore_prefix),
            np.where(rows, b.marginal_pscore, a.marginal_pscore),
        )

    def session_action_distribution(self, context: SessionContext) -> np.ndarray:
        """Each session's own arm's marginals."""
        a = self.control.session_action_distribution(context)
        b = self.treatment.session_action_distribution(context)
        rows = self.treated[context.users].reshape((-1,) + (1,) * (a.ndim - 1))
        return np.where(rows, b, a)

    def slate_probability(self, context: SessionContext, slates: np.ndarray) -> np.ndarray:
        """Each session's own arm's probability of the whole slate, shape (n,)."""
        a = self.control.slate_probability(context, slates)
        b = self.treatment.slate_probability(context, slates)
        return np.where(self.treated[context.users], b, a)


def ab_assignment(n_users: int, share: float, seed: int, generation: int) -> np.ndarray:
    """A random split with exactly round(share · n_users) treated users, shape (n_users,).

    Drawn from ``[seed, generation, 7]``, apart from every stream of the loop's draws.
    """
    treated = np.zeros(n_users, dtype=bool)
    order = np.random.default_rng([seed, generation, 7]).permutation(n_users)
    treated[order[: round(share * n_users)]] = True
    return treated


def check_intervention(
    intervention: InterventionConfig, arm: ArmConfig, simulator: ConfoundedRecSimulator
) -> None:
    """Refuse, before any work, an intervention its arm or world cannot take.

    Raises:
        ConfigError: Naming ``interventions.NAME`` and the reason.
    """
    where = f"interventions.{intervention.name}"
    if intervention.kind in ("boost", "remove") and isinstance(intervention.items, list):
        intervention_items(intervention, simulator, 0.2)  # ids inside the catalogue
    if intervention.kind == "boost" and arm.policy in ("uniform", "oracle"):
        raise ConfigError(f"{where}: arm {arm.name!r} serves {arm.policy!r}: no scores to boost")
    if intervention.kind == "remove" and simulator.slate_size != 1:
        raise ConfigError(
            f"{where}: remove is supported for slates of one item; the world shows "
            f"{simulator.slate_size}"
        )
