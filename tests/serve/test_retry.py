"""The ingress's retry of a request whose scoring replica died, without Ray (a fake handle)."""

import asyncio
import time
from types import SimpleNamespace

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError

from causalrec.serve.app import CausalRecIngress, _error
from causalrec.serve.config import ServeAppArgs
from causalrec.serve.recommender import ReplicaLostError


class FakeHandle:
    """``recommend.remote`` raises the given errors in turn, then answers."""

    def __init__(self, errors):
        self.errors, self.timeouts = list(errors), []
        self.recommend = SimpleNamespace(remote=self._remote)

    async def _remote(self, request, timeout_s):
        self.timeouts.append(timeout_s)
        if self.errors:
            raise self.errors.pop(0)
        return {"items": [[1, 2]], "users": request["users"]}


def _ingress(handle, **args):
    """An object with the ingress's retry and what it reads (no replica, no ASGI app)."""
    ingress = SimpleNamespace(
        args=ServeAppArgs(model_dir="unused", scoring="replicas", **args),
        recommenders={"a": handle},
    )
    retry = CausalRecIngress.func_or_class._recommend_on
    ingress._recommend_on = lambda *call: retry(ingress, *call)
    return ingress


def test_a_request_whose_replica_died_is_sent_again():
    died = ActorDiedError()
    handle = FakeHandle([died, ActorUnavailableError("unavailable", None)])
    ingress = _ingress(handle, scoring_retries=2)
    deadline = time.monotonic() + 5
    served = asyncio.run(ingress._recommend_on("a", {"users": [3]}, deadline))
    assert served["users"] == [3] and len(handle.timeouts) == 3
    assert all(0 < t <= 5 for t in handle.timeouts)  # each try gets what is left of the deadline


def test_retries_are_bounded_and_end_in_a_503_with_retry_after():
    handle = FakeHandle([ActorDiedError()] * 5)
    ingress = _ingress(handle, scoring_retries=1)
    with pytest.raises(ReplicaLostError, match=r"2 tries; scoring_retries = 1") as caught:
        asyncio.run(ingress._recommend_on("a", {"users": [3]}, time.monotonic() + 5))
    assert len(handle.timeouts) == 2
    answer = _error(caught.value)
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"


def test_an_error_of_the_request_itself_is_not_retried():
    handle = FakeHandle([ValueError("k: 99 exceeds the catalogue")])
    with pytest.raises(ValueError):
        asyncio.run(_ingress(handle)._recommend_on("a", {"users": [3]}, time.monotonic() + 5))
    assert len(handle.timeouts) == 1
