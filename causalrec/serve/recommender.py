"""The recommender deployment: loads the exported model once per replica, scores in batches.

Concurrent ``/recommend`` requests are scored together (``@serve.batch``: one ``model.score`` call
for the users of up to ``max_batch_size`` requests); each request's slate is then drawn from its
own policy — deterministic top-k, ε-greedy or Plackett–Luce softmax — through the platform's
policy classes, so the reported propensities are the same exact probabilities OPE uses.

Work per request is bounded twice: before any work, by :func:`request_problem` (users × k and the
softmax slate size, whose Plackett–Luce marginals cost grows steeply with k: measured here about
0.01, 13, 26 and 83 ms per user for k = 1, 3, 10 and 20 over 300 items, 51 s for k = 100); and
while drawing, by a deadline checked between chunks of users (:class:`DeadlineExceededError`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from causalrec.methods.artifact import SavedModel
from causalrec.platform.errors import CausalRecError, DataError
from causalrec.platform.policy import (
    Exploration,
    Policy,
    RowScorer,
    SoftmaxPolicy,
    make_policy,
)
from causalrec.platform.session import NO_ITEM

__all__ = [
    "DRAW_CHUNK_USERS",
    "DeadlineExceededError",
    "RecommenderCore",
    "ReplicaLostError",
    "RequestLimits",
    "RowScorer",
    "UnhealthyModelError",
    "history_arrays",
    "history_length_of",
    "propensity_kinds",
    "request_exploration",
    "request_problem",
    "served_policy",
]


#: Users drawn between two deadline checks.
DRAW_CHUNK_USERS = 16


class DeadlineExceededError(CausalRecError):
    """A request's work passed its deadline (answered 504; the rest of the work is dropped)."""


class UnhealthyModelError(CausalRecError):
    """The loaded model fails its canary: scoring raises or gives non-finite scores."""


class ReplicaLostError(CausalRecError):
    """Every scoring replica tried for a request died under it (answered 503, Retry-After)."""


def history_length_of(params: dict[str, Any]) -> int | None:
    """The history length a model with these parameters reads (``None``: it reads none)."""
    if params.get("backbone") != "transformer":
        return None
    return int(params["history_length"])


@dataclass(frozen=True)
class RequestLimits:
    """What one ``/recommend`` request may ask for (see :class:`ServeAppArgs` for each field).

    Attributes:
        max_users: Users per request.
        max_slate_items: Users × k per request.
        max_softmax_k: Largest k under softmax exploration.
    """

    max_users: int = 256
    max_slate_items: int = 4096
    max_softmax_k: int = 20


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


def request_problem(
    users: list[int] | None,
    k: int,
    n_users: int,
    n_items: int,
    *,
    n_rows: int | None = None,
    exploration: str = "none",
    limits: RequestLimits | None = None,
    history: list[dict[str, list[int]]] | None = None,
    history_length: int | None = None,
    backbone: str = "mf",
) -> tuple[int, str] | None:
    """What makes a request unservable (HTTP status and a message naming the field), if any.

    Args:
        users: The request's user ids (``None`` when users come as feature rows).
        k: Slate size asked for.
        n_users: Users the model knows.
        n_items: Catalogue size.
        n_rows: Users in the request (defaults to ``len(users)``).
        exploration: The request's exploration kind.
        limits: Work limits (``None``: only the catalogue is checked).
        history: Each user's ``{"items": [...], "clicks": [...]}``, aligned with ``users``.
        history_length: Impressions the model reads (``None``: it reads no history).
        backbone: The model's backbone (named when a history is refused).

    Returns:
        ``(413, message)`` for work beyond ``limits``, ``(422, message)`` for ids or k the model
        cannot serve, ``None`` for a servable request.
    """
    n = len(users or []) if n_rows is None else n_rows
    if limits is not None:
        field = "user_id" if users is not None else "user_features"
        if n > limits.max_users:
            return 413, f"{field}: {n} users; at most {limits.max_users} per request"
        if n * k > limits.max_slate_items:
            return 413, (
                f"{field}, k: {n} users x k = {k} asks for {n * k} items; at most "
                f"{limits.max_slate_items} per request (split it into smaller requests)"
            )
        if exploration == "softmax" and k > limits.max_softmax_k:
            return 413, (
                f"k: {k} under softmax exploration; at most {limits.max_softmax_k} (the "
                "Plackett-Luce marginals' cost grows steeply with k)"
            )
    if history is not None:
        problem = _history_problem(history, n_items, history_length, backbone)
        if problem is not None:
            return 422, problem
    # A history names the user's state: the model need not have seen the id.
    unknown = [user for user in users or [] if user >= n_users] if history is None else []
    if unknown:
        return 422, f"user_id: unknown user {unknown[0]} (the model knows 0..{n_users - 1})"
    if k > n_items:
        return 422, f"k: {k} exceeds the catalogue size {n_items}"
    return None


def _history_problem(
    history: list[dict[str, list[int]]], n_items: int, history_length: int | None, backbone: str
) -> str | None:
    """Why the model cannot read the request's histories (a message naming the field), if so."""
    if history_length is None:
        return (
            f"history: only backbone='transformer' models read histories; this model uses "
            f"{backbone!r} (send user_id alone)"
        )
    for position, user_history in enumerate(history):
        items = user_history["items"]
        if len(items) > history_length:
            return (
                f"history[{position}]: {len(items)} impressions; this model reads at most "
                f"history_length = {history_length} (send the latest {history_length})"
            )
        outside = [item for item in items if item >= n_items]
        if outside:
            return (
                f"history[{position}]: item {outside[0]} is not in the catalogue (0..{n_items - 1})"
            )
    return None


def history_arrays(history: list[dict[str, list[int]]]) -> tuple[np.ndarray, np.ndarray]:
    """Requests' histories as the model's ``(items, clicks)``, shape (n, m) each.

    Oldest first and right-aligned: a shorter history is left-padded with
    :data:`~causalrec.platform.session.NO_ITEM` (-1), m is the longest one (at least 1).
    """
    width = max([1, *(len(h["items"]) for h in history)])
    items = np.full((len(history), width), NO_ITEM, dtype=np.int64)
    clicks = np.zeros((len(history), width), dtype=np.int8)
    for row, user_history in enumerate(history):
        m = len(user_history["items"])
        if m:
            items[row, width - m :] = user_history["items"]
            clicks[row, width - m :] = user_history["clicks"]
    return items, clicks


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
        params = self.model.get_params()
        #: Impressions of history the model reads (``None`` unless it is a transformer).
        self.history_length = history_length_of(params)
        self.backbone = str(params.get("backbone", self.model.name))

    @property
    def n_users(self) -> int:
        """Users the model knows."""
        return self.model.n_users_

    @property
    def n_items(self) -> int:
        """Catalogue size."""
        return self.model.n_items_

    def check_request(
        self, users: list[int], k: int, history: list[dict[str, list[int]]] | None = None
    ) -> None:
        """Raise :class:`DataError` naming the field the model cannot serve (ids, k, history)."""
        problem = request_problem(
            users,
            k,
            self.n_users,
            self.n_items,
            history=history,
            history_length=self.history_length,
            backbone=self.backbone,
        )
        if problem:
            raise DataError(problem[1])

    def score_histories(self, users: list[int], history: list[dict[str, list[int]]]) -> np.ndarray:
        """Scores of users from the given histories, shape (n, n_items) (transformer models)."""
        return self.model.score(np.asarray(users, dtype=np.int64), history=history_arrays(history))

    def probe(self) -> None:
        """The canary: score user 0 (every fitted model knows it) and check the scores are finite.

        Raises:
            UnhealthyModelError: If scoring raises or returns NaN or infinite scores.
        """
        try:
            scores = np.asarray(self.model.score(np.zeros(1, dtype=np.int64)), dtype=np.float64)
        except Exception as exc:
            raise UnhealthyModelError(f"the canary user's scoring raised {exc!r}") from exc
        if scores.shape != (1, self.n_items) or not np.isfinite(scores).all():
            raise UnhealthyModelError(
                f"the canary user's scores are not {self.n_items} finite numbers "
                f"(shape {scores.shape}, {int((~np.isfinite(scores)).sum())} non-finite)"
            )

    def score_batch(self, user_lists: list[np.ndarray]) -> list[np.ndarray]:
        """Scores of several requests' users in one model call; one (n_i, n_items) per request."""
        sizes = [len(users) for users in user_lists]
        scores = self.model.score(np.concatenate(user_lists).astype(np.int64))
        return np.split(scores, np.cumsum(sizes)[:-1])

    def draw(
        self, rows: np.ndarray, request: dict[str, Any], deadline: float | None = None
    ) -> dict[str, np.ndarray]:
        """Draw one slate per row of scores under the request's policy.

        Args:
            rows: Scores of the request's users, shape (n, n_items).
            request: The request body (``k``, ``exploration``, ``epsilon``, ``temperature``).
            deadline: ``time.monotonic()`` after which the drawing stops, checked between chunks
                of :data:`DRAW_CHUNK_USERS` users (``None``: no deadline).

        Returns:
            ``items``, ``scores`` and ``propensities`` (marginal probability of each item at
            its position), each of shape (n, k), ``prefix`` (probability of each prefix, always
            exact) and ``propensity_kind`` (``exact`` or ``estimated`` per position: softmax
            slates of k >= 3 over large catalogues estimate later positions' marginals).

        Raises:
            DeadlineExceededError: If ``deadline`` passes before every user is drawn.
        """
        policy = served_policy(RowScorer(rows), request["k"], request_exploration(request))
        samples = []
        for start in range(0, len(rows), DRAW_CHUNK_USERS):
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceededError(
                    f"the request passed its deadline after {start} of {len(rows)} users"
                )
            users = np.arange(start, min(start + DRAW_CHUNK_USERS, len(rows)))
            with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
                samples.append(policy.sample(users, self.rng))  # checked below
        actions = np.concatenate([sample.actions for sample in samples])
        propensities = np.concatenate([sample.marginal_pscore for sample in samples])
        prefix = np.concatenate([sample.pscore_prefix for sample in samples])
        shown = np.concatenate([propensities, prefix], axis=1)
        if not (np.isfinite(shown) & (shown > 0)).all():
            # A softmax so peaked that float64 loses the mass of the items left after the first
            # positions: Plackett-Luce marginals of later positions come out 0 or NaN.
            raise DataError(
                f"temperature: {request['temperature']} is too low for this model's scores "
                f"(k = {request['k']}): {int((~(np.isfinite(shown) & (shown > 0))).sum())} "
                "propensities underflow to 0 or NaN; raise it or use exploration 'none'"
            )
        return {
            "items": actions,
            "scores": np.take_along_axis(rows, actions, axis=1),
            "propensities": propensities,
            "prefix": prefix,
            "policy": policy.name,
            "propensity_kind": propensity_kinds(policy),
        }
