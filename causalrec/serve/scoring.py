"""What a replica that scores does: one model, batched scoring off the event loop, deadlines.

:class:`Scorer` is shared by the two places a slate is drawn: the HTTP ingress itself when no
experiment runs (no hop between deployments on the hot path), and each arm's
``RecommenderDeployment`` in an A/B test. A request whose work is bounded small (at most
:data:`INLINE_MAX_SCORES` user x item scores, and no softmax over more than one position: well
under a millisecond) is scored and drawn where it arrives: a hop to a thread would cost as much
as the work. Every other request is scored and drawn on one worker thread of the replica, never
on its event loop: a slow request cannot stall ``/healthz``, Serve's health checks or the other
requests' I/O. Every request has a deadline (:class:`DeadlineExceededError`, 504).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
from ray import serve

from causalrec.serve.recommender import RecommenderCore

__all__ = ["INLINE_MAX_SCORES", "Scorer"]

#: Requests with at most this many user x item scores (and no softmax beyond position 1) are
#: served on the event loop: scoring and a top-k or epsilon-greedy draw of 1 x 4,096 takes
#: about 0.3 ms here, less than the hops to the scoring thread.
INLINE_MAX_SCORES = 4096

T = TypeVar("T")


class Scorer:
    """A loaded model serving slates for one replica.

    Args:
        model_dir: The saved model.
        seed: Seed of the replica's sampling stream.
        max_batch_size: Requests whose users are scored by one model call (``@serve.batch``).
        batch_wait_timeout_s: How long a batch waits to fill.
    """

    def __init__(
        self,
        model_dir: str,
        seed: int,
        *,
        max_batch_size: int,
        batch_wait_timeout_s: float,
    ):
        self.core = RecommenderCore(model_dir, seed)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="causalrec-scoring")
        self._score_ids.set_max_batch_size(max_batch_size)
        self._score_ids.set_batch_wait_timeout_s(batch_wait_timeout_s)

    async def _off_loop(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` on the replica's scoring thread."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, function, *args)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def _score_ids(self, user_lists: list[np.ndarray]) -> list[np.ndarray]:
        return await self._off_loop(self.core.score_batch, user_lists)

    async def recommend(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Slates, scores and exact propensities for one request's users (ids or features).

        The model is read once at the start: a request is served wholly by one model version.

        Args:
            request: The request body, with ``users`` (ids, or ``None`` with
                ``user_features``) and ``history`` (``None``, or one history per user).
            timeout_s: Seconds the drawing may still take
                (:class:`~causalrec.serve.recommender.DeadlineExceededError` after them).

        Returns:
            :meth:`RecommenderCore.draw`'s arrays with ``users`` and the model ``version``.
        """
        deadline = time.monotonic() + timeout_s
        core, users = self.core, request["users"]
        history = request.get("history")
        if history is not None:  # scored from the given histories, not batched by id
            core.check_request(users, request["k"], history)
            rows = await self._off_loop(core.score_histories, users, history)
            served = await self._off_loop(core.draw, rows, request, deadline)
            return {**served, "users": users, "version": core.version}
        if self._inline(request):
            core.check_request(users, request["k"])
            rows = core.score_batch([np.asarray(users, dtype=np.int64)])[0]
            served = core.draw(rows, request, deadline)
            return {**served, "users": users, "version": core.version}
        if users is None:  # users described by features: scored directly, not batched by id
            features = np.asarray(request["user_features"])
            rows = await self._off_loop(core.model.score_features, features)
        else:
            core.check_request(users, request["k"])
            rows = await self._score_ids(np.asarray(users, dtype=np.int64))
        served = await self._off_loop(core.draw, rows, request, deadline)
        return {**served, "users": users, "version": core.version}

    def _inline(self, request: dict[str, Any]) -> bool:
        """Whether the request's work is small enough to do on the event loop."""
        users = request["users"]
        return (
            users is not None
            and len(users) * self.core.n_items <= INLINE_MAX_SCORES
            and (request["exploration"] != "softmax" or request["k"] == 1)
        )

    def check_health(self) -> None:
        """The canary (:meth:`RecommenderCore.probe`): raises when the model cannot score."""
        self.core.probe()
