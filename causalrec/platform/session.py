"""Policies that act on a user's session, not just on the user: the context and the protocol.

In a dynamic world (:mod:`causalrec.simulators.dynamics`) the request at step t of a session
carries more than the user id: the items shown and clicked in the last L steps, the step within
the session and the world's current item popularity. A :class:`SessionPolicy` draws slates from
that :class:`SessionContext`; every plain :class:`~causalrec.platform.policy.Policy` (simulator
policies, saved models) acts on sessions through :class:`PolicyOnSessions`, which ignores the
history. :func:`as_session_policy` is the one place that makes that choice.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from causalrec.platform.errors import ConfigError, DataError
from causalrec.platform.policy import Policy, SlateSample

__all__ = [
    "NO_ITEM",
    "PolicyOnSessions",
    "SessionContext",
    "SessionPolicy",
    "as_session_policy",
]

#: Item id of an empty history slot (before the session's first steps).
NO_ITEM = -1


@dataclass(frozen=True)
class SessionContext:
    """What a policy sees at one step of a batch of sessions.

    Attributes:
        users: User ids, shape (n,), int64.
        step: 0-based step within each session, shape (n,), int64.
        history_items: Items shown in the last L steps, oldest first, shape (n, L, K), int64;
            :data:`NO_ITEM` where the session is shorter than L steps.
        history_clicks: Clicks on those items, shape (n, L, K), int8 (0 in empty slots).
        log_popularity: The world's log item popularity, shape (G, n_items), one row per cohort
            of concurrent sessions, or ``None`` when popularity never changes.
        cohort: Row of ``log_popularity`` for each session, shape (n,), int64, or ``None``.
    """

    users: np.ndarray
    step: np.ndarray
    history_items: np.ndarray
    history_clicks: np.ndarray
    log_popularity: np.ndarray | None = None
    cohort: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.users)
        for name in ("step", "history_items", "history_clicks"):
            if np.shape(getattr(self, name))[:1] != (n,):
                shape = np.shape(getattr(self, name))
                raise DataError(f"{name} must have {n} rows (as users); got shape {shape}")
        if self.history_items.shape != self.history_clicks.shape:
            raise DataError(
                f"history_clicks must have the shape of history_items {self.history_items.shape}; "
                f"got {self.history_clicks.shape}"
            )
        if (self.log_popularity is None) != (self.cohort is None):
            raise DataError("log_popularity and cohort are given together or not at all")

    @property
    def n(self) -> int:
        """Number of sessions in the batch."""
        return len(self.users)


class SessionPolicy(abc.ABC):
    """A distribution over slates given a session's context.

    Attributes:
        name: Short identifier written into logs.
        n_items: Size of the catalogue.
        slate_size: Number of distinct items per slate (K).
    """

    name: str
    n_items: int
    slate_size: int

    @abc.abstractmethod
    def sample_session(self, context: SessionContext, rng: np.random.Generator) -> SlateSample:
        """Draw one slate per session with its exact probabilities under this context."""

    @abc.abstractmethod
    def session_action_distribution(self, context: SessionContext) -> np.ndarray:
        """Item–position marginals given the context.

        Returns:
            Shape (n, n_items) when K = 1, otherwise (n, n_items, K), as
            :meth:`Policy.action_distribution`.
        """

    def slate_probability(self, context: SessionContext, slates: np.ndarray) -> np.ndarray:
        """``P(slate | context)`` of given whole slates, shape (n,) (for per-decision weights).

        The default covers K = 1 from the marginals; slate policies override it.
        """
        slates = np.asarray(slates)
        if slates.shape[1] != 1:
            raise ConfigError(
                f"policy {self.name!r} gives slate probabilities for K = 1 only; got K = "
                f"{slates.shape[1]}"
            )
        dist = self.session_action_distribution(context)
        return dist[np.arange(context.n), slates[:, 0]]


class PolicyOnSessions(SessionPolicy):
    """A plain :class:`Policy` acting on sessions: it sees the user and ignores the history.

    Args:
        policy: The wrapped policy.
    """

    def __init__(self, policy: Policy):
        self.policy = policy
        self.name, self.n_items, self.slate_size = policy.name, policy.n_items, policy.slate_size

    def sample_session(self, context: SessionContext, rng: np.random.Generator) -> SlateSample:
        """Draw slates for the sessions' users."""
        return self.policy.sample(context.users, rng)

    def session_action_distribution(self, context: SessionContext) -> np.ndarray:
        """The wrapped policy's marginals for the sessions' users."""
        return self.policy.action_distribution(context.users)

    def slate_probability(self, context: SessionContext, slates: np.ndarray) -> np.ndarray:
        """The wrapped policy's probability of the whole slate."""
        slates = np.asarray(slates)
        return self.policy.prefix_probability(context.users, slates)[:, -1]


def as_session_policy(policy: object) -> SessionPolicy:
    """``policy`` as a :class:`SessionPolicy` (a plain :class:`Policy` is wrapped).

    Raises:
        ConfigError: If ``policy`` can act neither on users nor on sessions (names its type).
    """
    if isinstance(policy, SessionPolicy):
        return policy
    if isinstance(policy, Policy):
        return PolicyOnSessions(policy)
    raise ConfigError(
        f"policy must be a Policy (acts on user ids) or a SessionPolicy (acts on a session's "
        f"history); got {type(policy).__name__}, which cannot score a history"
    )
