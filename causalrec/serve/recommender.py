"""The recommender deployment: loads the exported model once per replica, scores in batches.

Concurrent ``/recommend`` requests are scored together (``@serve.batch``: one ``model.score`` call
for the users of up to ``max_batch_size`` requests); each request's slate is then drawn from its
own policy — deterministic top-k, ε-greedy or Plackett–Luce softmax — through the platform's
policy classes, so the reported propensities are the same exact probabilities OPE uses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from causalrec.methods.artifact import SavedModel
from causalrec.platform.errors import DataError
from causalrec.platform.policy import Exploration, Policy, SoftmaxPolicy, make_policy

__all__ = [
    "RecommenderCore",
    "RowScorer",
    "propensity_kinds",
    "request_exploration",
    "request_problem",
    "served_policy",
]


@dataclass(frozen=True)
class RowScorer:
    """Scores already computed for a request's users, as a policy-protocol scorer.

    The request's users become local ids ``0..n-1``, so a policy built on it sees exactly
    these rows (and never scores the whole user base).

    Attributes:
        rows: Scores, shape (n, n_items).
    """

    rows: np.ndarray

    @property
    def n_users(self) -> int:
        """Users of the request."""
        return len(self.rows)

    @property
    def n_items(self) -> int:
        """Catalogue size."""
        return self.rows.shape[1]

    def scores(self, users: np.ndarray) -> np.ndarray:
        """Rows of the local users ``users``, shape (len(users), n_items)."""
        return self.rows[users]


def served_policy(scorer, k: int, exploration: Exploration) -> Policy:
    """The policy the server samples from: the model's own, without cached marginals."""
    # A request's users are drawn once: only the shown items' marginals are computed.
    return make_policy(
        scorer, k, exploration, name=f"served:{exploration.kind}", cache_marginals=False
    )


def request_exploration(request: dict[str, Any]) -> Exploration:
    """The :class:`Exploration` of a ``/recommend`` or ``/evaluate`` request body."""
    return Exploration(
        request["exploration"], epsilon=request["epsilon"], temperature=request["temperature"]
    )


def propensity_kinds(policy: Policy) -> list[str]:
    """``"exact"`` or ``"estimated"`` for the marginal propensity at each position, (k,)."""
    if isinstance(policy, SoftmaxPolicy):
        return ["exact" if e else "estimated" for e in policy.exact_positions]
    return ["exact"] * policy.slate_size


def request_problem(users: list[int] | None, k: int, n_users: int, n_items: int) -> str | None:
    """What makes a request unservable by a model of this catalogue (naming the field), if any."""
    unknown = [user for user in users or [] if user >= n_users]
    if unknown:
        return f"user_id: unknown user {unknown[0]} (the model knows 0..{n_users - 1})"
    if k > n_items:
        return f"k: {k} exceeds the catalogue size {n_items}"
    return None


class RecommenderCore:
    """What a recommender replica does, independent of Ray Serve (unit-testable).

    Args:
        model_dir: The saved model.
        seed: Seed of the replica's sampling stream (offset by the process id).
    """

    def __init__(self, model_dir: str, seed: int = 0):
        saved = SavedModel.open(model_dir)
        self.model_dir = str(saved.path)
        self.model = saved.load()
        self.version = saved.version
        self.manifest: dict[str, Any] = saved.describe()
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, os.getpid()]))

    @property
    def n_users(self) -> int:
        """Users the model knows."""
        return self.model.n_users_

    @property
    def n_items(self) -> int:
        """Catalogue size."""
        return self.model.n_items_

    def check_request(self, users: list[int], k: int) -> None:
        """Raise :class:`DataError` naming the field for users or k the model cannot serve."""
        problem = request_problem(users, k, self.n_users, self.n_items)
        if problem:
            raise DataError(problem)

    def score_batch(self, user_lists: list[np.ndarray]) -> list[np.ndarray]:
        """Scores of several requests' users in one model call; one (n_i, n_items) per request."""
        sizes = [len(users) for users in user_lists]
        scores = self.model.score(np.concatenate(user_lists).astype(np.int64))
        return np.split(scores, np.cumsum(sizes)[:-1])

    def draw(self, rows: np.ndarray, request: dict[str, Any]) -> dict[str, np.ndarray]:
        """Draw one slate per row of scores under the request's policy.

        Returns:
            ``items``, ``scores`` and ``propensities`` (marginal probability of each item at
            its position), each of shape (n, k), ``prefix`` (probability of each prefix, always
            exact) and ``propensity_kind`` (``exact`` or ``estimated`` per position: softmax
            slates of k >= 3 over large catalogues estimate later positions' marginals).
        """
        policy = served_policy(RowScorer(rows), request["k"], request_exploration(request))
        sample = policy.sample(np.arange(len(rows)), self.rng)
        return {
            "items": sample.actions,
            "scores": np.take_along_axis(rows, sample.actions, axis=1),
            "propensities": sample.marginal_pscore,
            "prefix": sample.pscore_prefix,
            "policy": policy.name,
            "propensity_kind": propensity_kinds(policy),
        }
