"""The closed loop over HTTP: each retrained model on Ray Serve, the users' traffic through it.

With ``serving: {mode: http}`` (:class:`~causalrec.loop.config.LoopServingConfig`) a generation
that serves a retrained model runs as it would in production:

1. the model is deployed on Ray Serve (:mod:`causalrec.serve.app`). The loop runs one
   application, ``causalrec-loop``; each new model updates it in place (the model directory
   travels as ``user_config``, so the running replicas load it and swap it in: no replica
   restarts, no request is dropped);
2. at every step of the generation the users still in their sessions ask ``POST /recommend``
   for their slates (batches of ``users_per_request``), and their clicks go to ``POST
   /feedback``, which logs them with the served propensities (:class:`HttpTraffic`);
3. after the generation the feedback sink is flushed and the Parquet parts it wrote for the
   generation are checked, row by row, against the generation's own log: the same users, items,
   positions, clicks and propensities, in the same order, from the model version deployed. A
   mismatch fails the generation.

The world (clicks, leaving, drift, popularity) stays in the loop's process: the server never
sees it. The loop then retrains on the generation's session log (the same rows, with the session
columns the server's log format does not carry).

Identical to in-process serving for deterministic arms: the world draws its click and leave
uniforms from its own streams, and :class:`HttpTraffic` draws the in-process slates too (so the
policy's random stream advances exactly as in-process) before it replaces the rows of the users
who asked the server. Users who have left ask nothing; their rows are never logged and change
nothing in the world.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from causalrec.loop.arms import Deployment
from causalrec.loop.config import LoopServingConfig
from causalrec.loop.world import GenerationRun, LoopWorld
from causalrec.methods.session_policy import HistoryPolicy
from causalrec.platform import storage
from causalrec.platform.errors import CausalRecError, ConfigError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.policy import Exploration, SlateSample
from causalrec.platform.session import SessionContext, SessionPolicy
from causalrec.simulators.dynamics import SessionState
from causalrec.simulators.rollout import SessionStep

__all__ = ["APP_NAME", "HttpTraffic", "LoopServer", "ServingError"]

#: The loop's Serve application (and its route prefix).
APP_NAME = "causalrec-loop"
_FEEDBACK_LOGS = "logs"
_CHECKED_COLUMNS = ("user_id", "item_id", "position", "click", "pscore", "pscore_prefix")


class ServingError(CausalRecError):
    """The server answered with an error, served another model, or logged other rows."""


class HttpTraffic(SessionPolicy):
    """A generation's slates asked of a live ``/recommend``, its clicks posted to ``/feedback``.

    It is both the generation's policy and its :class:`~causalrec.loop.world.GenerationTraffic`
    (see :meth:`LoopWorld.run_generation`).

    Args:
        client: An ``httpx.Client`` whose base URL is the application's.
        local: The deployed policy in this process: it draws the slates first (the policy's
            random stream advances as in-process), and gives the marginals
            (:meth:`session_action_distribution`) that off-policy estimates need.
        exploration: What the server is asked to serve (the arm's exploration).
        version: The model version the server must answer with.
        users_per_request: Users per ``/recommend`` request.
    """

    def __init__(
        self,
        client: Any,
        local: SessionPolicy,
        exploration: Exploration,
        version: str,
        users_per_request: int,
    ):
        self.client, self.local, self.version = client, local, version
        self.name, self.n_items, self.slate_size = local.name, local.n_items, local.slate_size
        self.request = {
            "k": local.slate_size,
            "exploration": exploration.kind,
            "epsilon": exploration.epsilon,
            "temperature": exploration.temperature,
        }
        self.users_per_request = users_per_request
        self.sessions: SessionState | None = None
        self.pending: list[tuple[str, np.ndarray]] = []
        self.requests = self.feedback_rows = 0

    def begin(self, sessions: SessionState) -> None:
        """The generation's sessions (whose ``alive`` flags say who still asks)."""
        self.sessions = sessions

    def sample_session(self, context: SessionContext, rng: np.random.Generator) -> SlateSample:
        """The served slates of the users still in their sessions (others: the local draw)."""
        if self.pending:
            raise ServingError("slates asked for before the previous step's clicks were posted")
        sample = self.local.sample_session(context, rng)
        actions = sample.actions.copy()
        marginal, prefix = sample.marginal_pscore.copy(), sample.pscore_prefix.copy()
        asking = np.flatnonzero(self.sessions.alive)
        # A model that reads histories is sent each session's, as it reads them in-process.
        histories = (
            self.local.request_histories(context) if isinstance(self.local, HistoryPolicy) else None
        )
        for start in range(0, len(asking), self.users_per_request):
            rows = asking[start : start + self.users_per_request]
            request = {"user_id": context.users[rows].tolist(), **self.request}
            if histories is not None:
                request["history"] = [histories[row] for row in rows]
            body = self._post("/recommend", request)
            if body["model_version"] != self.version:
                raise ServingError(
                    f"/recommend answered from model version {body['model_version']}; the loop "
                    f"deployed {self.version}"
                )
            answers = body["recommendations"]
            actions[rows] = [answer["items"] for answer in answers]
            marginal[rows] = [answer["propensities"] for answer in answers]
            prefix[rows] = [answer["prefix_propensities"] for answer in answers]
            self.pending.append((body["request_id"], rows))
            self.requests += 1
        return SlateSample(actions=actions, pscore_prefix=prefix, marginal_pscore=marginal)

    def after_step(self, step: SessionStep) -> None:
        """Post each request's clicks of this step to ``/feedback``."""
        for request_id, rows in self.pending:
            clicks = step.clicks[rows].astype(int).tolist()
            body = self._post("/feedback", {"request_id": request_id, "clicks": clicks})
            self.feedback_rows += int(body["rows"])
        self.pending = []

    def session_action_distribution(self, context: SessionContext) -> np.ndarray:
        """The deployed policy's marginals (the server serves the same policy)."""
        return self.local.session_action_distribution(context)

    def slate_probability(self, context: SessionContext, slates: np.ndarray) -> np.ndarray:
        """The deployed policy's probability of whole slates."""
        return self.local.slate_probability(context, slates)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.client.post(path, json=body)
        if answer.status_code != 200:
            raise ServingError(
                f"POST {path} answered HTTP {answer.status_code}: {answer.text[:300]}"
            )
        return answer.json()


class LoopServer:
    """Ray Serve running the loop's application; each new model is an in-place update.

    Starts Serve on the Ray this process has (or starts: :func:`init_ray`, so ``RAY_ADDRESS``
    joins a cluster) unless it already runs there; in that case its proxy's port must be given.

    Args:
        serving: Host, port and request size.
        feedback_dir: The directory ``/feedback`` appends to (the server's own log of all the
            loop's served traffic, in the causalrec log format).
        seed: Seed of the server's random stream (exploring arms draw from it).
    """

    def __init__(self, serving: LoopServingConfig, feedback_dir: str | Path, *, seed: int = 0):
        self.serving, self.feedback_dir, self.seed = serving, Path(feedback_dir), seed
        self.url: str | None = None
        self._started_serve = False
        self._deployed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._owns_ray = False

    def start(self) -> None:
        """Start (or find) Serve; the application is deployed by the first :meth:`serve`."""
        import ray
        from ray import serve

        from causalrec.platform.runtime import free_port, init_ray

        self._owns_ray = not ray.is_initialized()
        init_ray()
        running = bool(serve.status().proxies)
        port = self.serving.port
        if running and port is None:
            raise ConfigError(
                "serving.port: Serve already runs on this Ray; give the port of its HTTP proxy "
                "(the loop adds its application there)"
            )
        if not running:
            port = port or free_port(self.serving.host)
            serve.start(http_options={"host": self.serving.host, "port": port})
            self._started_serve = True
        self.url = f"http://{self.serving.host}:{port}/{APP_NAME}"

    def close(self) -> None:
        """Delete the application; shut Serve down if this server started it (and its Ray).

        A local Ray that this server started goes down with Serve in it: ``serve.shutdown()``
        would end with the controller's death, which Ray reports as an error on every
        successful shutdown (the pipeline shuts down the same way).
        """
        import ray
        from ray import serve

        try:
            if self._deployed:
                serve.delete(APP_NAME)
            if self._owns_ray and ray.is_initialized():
                ray.shutdown()
            elif self._started_serve:
                serve.shutdown()
        except Exception as exc:  # the loop's outputs are written; say so and go on
            print(
                f"warning: could not take the loop's Serve application down: {exc}", file=sys.stderr
            )
        self._deployed = self._started_serve = self._owns_ray = False

    def __enter__(self) -> LoopServer:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def deploy(self, model_dir: str | Path, slate_size: int) -> None:
        """Serve the saved model in ``model_dir`` (the first call deploys, later ones update)."""
        from ray import serve

        from causalrec.serve.app import build_app
        from causalrec.serve.config import ServeAppArgs

        if self.url is None:
            self.start()
        users = self.serving.users_per_request
        args = ServeAppArgs(
            model_dir=str(Path(model_dir).absolute()),
            feedback_dir=str(self.feedback_dir.absolute()),
            max_users_per_request=users,
            max_slate_items=users * slate_size,
            max_batch_size=users,
            seed=self.seed,
            # The evaluator is not used by the loop: it must not hold a CPU the loop needs.
            evaluator_cpus=0,
        )
        serve.run(build_app(args), name=APP_NAME, route_prefix=f"/{APP_NAME}")
        self._deployed = True

    def serve_generation(
        self,
        world: LoopWorld,
        deployment: Deployment,
        model_dir: str | Path,
        exploration: Exploration,
        *,
        seed: int,
        name: str,
    ) -> tuple[GenerationRun, dict[str, Any]]:
        """Deploy ``deployment``'s model and run one generation of ``world`` through it.

        Args:
            world: The arm's world.
            deployment: The model's in-process deployment (its policy and version).
            model_dir: Its saved directory.
            exploration: How it serves.
            seed: The loop's seed.
            name: The log's policy name.

        Returns:
            The generation, and ``served_via``, ``requests``, ``served_rows`` and
            ``served_parts`` (the server's Parquet parts of this generation) for its record.

        Raises:
            ServingError: If the server fails a request, answers from another model version, or
                logged rows other than the generation's.
        """
        import httpx

        self.deploy(model_dir, world.simulator.slate_size)
        before = set(self._parts())
        with httpx.Client(base_url=self.url, timeout=120) as client:
            traffic = HttpTraffic(
                client,
                deployment.policy,
                exploration,
                deployment.version,
                self.serving.users_per_request,
            )
            outcome = world.run_generation(traffic, seed=seed, name=name, traffic=traffic)
        self._flush()
        parts = sorted(set(self._parts()) - before)
        _check_served(parts, outcome.log)
        return outcome, {
            "served_via": "http",
            "requests": traffic.requests,
            "served_rows": traffic.feedback_rows,
            "served_parts": " ".join(part.name for part in parts),
        }

    def _parts(self) -> list[Path]:
        return sorted((self.feedback_dir / _FEEDBACK_LOGS).glob("part-*.parquet"))

    def _flush(self) -> None:
        """Have the feedback sink write what it buffers (through a deployment handle)."""
        from ray import serve

        async def flush() -> int:
            sink = serve.get_deployment_handle("FeedbackSinkDeployment", app_name=APP_NAME)
            return await sink.flush.remote()

        # With Serve's latency settings (RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0) a handle's
        # router binds to the event loop it is first used in and must keep it running for the
        # rest of the process: one loop, on a daemon thread, serves every call.
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            threading.Thread(target=self._loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(flush(), self._loop).result(timeout=120)


def _check_served(parts: list[Path], log: LoggedFeedback) -> None:
    """The server's rows of a generation must be the generation's rows, in order.

    Raises:
        ServingError: Naming the first column that differs.
    """
    if not parts:
        if log.n_rows:
            raise ServingError(f"the server logged no rows; the generation has {log.n_rows}")
        return
    served = LoggedFeedback.concat([storage.read_logs(part) for part in parts])
    if served.n_rows != log.n_rows:
        raise ServingError(
            f"the server logged {served.n_rows} rows; the generation has {log.n_rows}"
        )
    for column in _CHECKED_COLUMNS:
        if not np.array_equal(getattr(served, column), getattr(log, column)):
            row = int(np.flatnonzero(getattr(served, column) != getattr(log, column))[0])
            raise ServingError(
                f"the server's log differs from the generation's in {column!r} from row {row}"
            )
