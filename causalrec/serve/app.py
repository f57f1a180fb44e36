"""The Ray Serve application: a FastAPI ingress over recommender, evaluator and feedback sink.

Run it with ``serve run causalrec.serve.app:build_app model_dir=runs/tune/best`` (typed
arguments: :class:`~causalrec.serve.config.ServeAppArgs`), ``serve deploy
configs/serve/default.yaml``, or ``causalrec serve --model runs/tune/best``.

Deployments (sub-deployments reach the ingress as handles):

* ``CausalRecIngress`` — FastAPI: ``POST /recommend``, ``POST /evaluate``, ``POST /feedback``,
  ``GET /model``, ``GET /healthz``; OpenAPI at ``/docs``. Bodies over ``max_body_bytes`` get 413.
  With ``scoring: ingress`` (the default, no experiment) it scores requests itself.
* ``RecommenderDeployment`` — with ``scoring: replicas``, and for each arm of an A/B test: loads
  the model once per replica and scores (:class:`~causalrec.serve.scoring.Scorer`); the
  ingress retries a request whose replica died on another; ``check_health`` scores a canary.
* ``EvaluatorDeployment`` — off-policy evaluation of the served or a named policy.
* ``FeedbackSinkDeployment`` — one replica joining served slates with their clicks into Parquet.
  With ``feedback_replicas`` = N > 1, N such deployments (``FeedbackSinkDeployment-00``, ...) of
  one replica each write ``feedback_dir/replica-00``, ...; the ingress sends a request's slates
  and clicks to the sink of a SHA-256 hash of its request id (see :mod:`causalrec.serve.feedback`).

Every deployment takes ``max_ongoing_requests`` and ``max_queued_requests`` from the arguments:
beyond them Serve answers 503 at once instead of queuing without bound.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations at runtime.

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError, RayError
from ray.serve import Application
from ray.serve.exceptions import RayServeException
from ray.serve.handle import DeploymentHandle

import causalrec
from causalrec.methods.artifact import SavedModel, is_saved_model
from causalrec.platform.errors import CausalRecError, ConfigError, DataError
from causalrec.serve._loopback import bind_replica_grpc_to_loopback_node
from causalrec.serve.config import ServeAppArgs
from causalrec.serve.evaluator import EvaluatorCore, ForbiddenPathError, TooLargeError
from causalrec.serve.feedback import (
    FeedbackConflictError,
    FeedbackLog,
    UnknownRequestError,
    replica_directory,
    sink_replica,
)
from causalrec.serve.limits import BodySizeLimit
from causalrec.serve.recommender import (
    DeadlineExceededError,
    ReplicaLostError,
    RequestLimits,
    UnhealthyModelError,
    history_length_of,
    request_problem,
)
from causalrec.serve.routing import ARMS, ExperimentSplit
from causalrec.serve.schemas import (
    ERROR_RESPONSES,
    ErrorResponse,
    EvaluateRequest,
    EvaluateResponse,
    FeedbackRequest,
    FeedbackResponse,
    RecommendRequest,
    RecommendResponse,
    UserRecommendation,
    ValidationErrorResponse,
)
from causalrec.serve.scoring import Scorer

__all__ = ["api", "build_app"]

_logger = logging.getLogger(__name__)
#: What a handle call raises when the replica running it died (a SIGKILL, a crash of the node).
_REPLICA_GONE = (RayActorError, ActorUnavailableError)

api = FastAPI(
    title="causalrec",
    description=(
        "Recommendations with the exact propensity of every returned item, counterfactual "
        "(off-policy) evaluation, and feedback logging into the causalrec log format."
    ),
    responses=ERROR_RESPONSES,  # every path's error answers, 422 included (FastAPI's replaced)
)


api.add_middleware(BodySizeLimit)


@api.exception_handler(RequestValidationError)
async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each offending field (values are not echoed: NaN is not valid JSON).

    The body is a :class:`ValidationErrorResponse`, as the OpenAPI documents for 422.
    """
    errors = [
        {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]}
        for error in exc.errors()
    ]
    fields = "; ".join(
        f"{'.'.join(str(part) for part in e['loc'] if part != 'body')}: {e['msg']}" for e in errors
    )
    body = ValidationErrorResponse(detail=fields, errors=errors)
    return JSONResponse(body.model_dump(), status_code=422)


def _error(exc: Exception) -> JSONResponse:
    """The HTTP answer to a causalrec error raised in a deployment (its cause, without trace)."""
    cause = getattr(exc, "cause", None) or exc
    status = _status(cause)
    headers = {"Retry-After": "1"} if isinstance(cause, ReplicaLostError) else None
    return JSONResponse(
        ErrorResponse(detail=str(cause)).model_dump(), status_code=status, headers=headers
    )


def _status(exc: Exception) -> int:
    if isinstance(exc, DeadlineExceededError):
        return 504
    if isinstance(exc, (UnhealthyModelError, ReplicaLostError)):
        return 503
    if isinstance(exc, ForbiddenPathError):
        return 403
    if isinstance(exc, TooLargeError):
        return 413
    if isinstance(exc, UnknownRequestError):
        return 404
    if isinstance(exc, FeedbackConflictError):
        return 409
    return 422


# Module-level helpers the deployments use are defined above them: Serve pickles a deployment
# class (by value) when it is decorated.
def _model_config(args: ServeAppArgs) -> dict[str, Any]:
    """The deployments' ``user_config``: the served model directories.

    They are all that a model update changes; Serve applies a new one in place, through each
    deployment's ``reconfigure``.
    """
    return {
        "model_dir": args.model_dir,
        "experiment_model_dir": args.experiment.model_dir if args.experiment else None,
    }


def _with_models(args: ServeAppArgs, config: dict[str, Any]) -> ServeAppArgs:
    """``args`` serving the model directories of a :func:`_model_config` ``config``."""
    experiment = args.experiment
    if experiment is not None:
        experiment = experiment.model_copy(update={"model_dir": config["experiment_model_dir"]})
    return args.model_copy(update={"model_dir": config["model_dir"], "experiment": experiment})


def _deployment_version(args: ServeAppArgs) -> str:
    """The version Serve compares between deployments of the application.

    It covers everything but the model directories (the ``user_config``) and the code of
    causalrec itself: deploying again with only another model is an in-place update (no
    replica restarts), any other change of arguments or code restarts the replicas.
    """
    digest = hashlib.sha256()
    without_models = _with_models(args, {"model_dir": "", "experiment_model_dir": ""})
    digest.update(json.dumps(without_models.model_dump(), sort_keys=True).encode())
    package = Path(causalrec.__file__).parent
    for source in sorted(package.rglob("*.py")):
        digest.update(source.relative_to(package).as_posix().encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:20]


def _limits(args: ServeAppArgs) -> RequestLimits:
    """The per-request work limits of the application's arguments."""
    return RequestLimits(
        max_users=args.max_users_per_request,
        max_slate_items=args.max_slate_items,
        max_softmax_k=args.max_softmax_k,
    )


def _rows_of(request: dict[str, Any], index: np.ndarray) -> dict[str, Any]:
    """The part of a ``/recommend`` request for its users at ``index`` (one arm's users)."""
    part = {**request, "users": [request["users"][i] for i in index]}
    if request.get("history") is not None:
        part["history"] = [request["history"][i] for i in index]
    return part


def _scorer(model_dir: str, seed: int, args: ServeAppArgs) -> Scorer:
    """A replica's :class:`Scorer` of ``model_dir``."""
    return Scorer(
        model_dir,
        seed,
        max_batch_size=args.max_batch_size,
        batch_wait_timeout_s=args.batch_wait_timeout_s,
    )


@serve.deployment
class RecommenderDeployment:
    """One arm's model in an A/B test: slates with propensities (:class:`Scorer`)."""

    def __init__(self, seed: int, args: ServeAppArgs):
        bind_replica_grpc_to_loopback_node()
        self.seed, self.args = seed, args
        self.scorer: Scorer | None = None

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Load the model of ``config["model_dir"]`` (user_config), then swap it in."""
        self.scorer = await asyncio.to_thread(_scorer, config["model_dir"], self.seed, self.args)

    def check_health(self) -> None:
        """Serve's health check: the canary user must score finitely."""
        self.scorer.check_health()

    async def recommend(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """See :meth:`Scorer.recommend`."""
        return await self.scorer.recommend(request, timeout_s)

    def manifest(self) -> dict[str, Any]:
        """The model's manifest (method, parameters, schema, tuning record, version)."""
        return self.scorer.core.manifest

    def health(self) -> str:
        """The canary's verdict for ``/healthz``: the model version, or the error."""
        self.scorer.check_health()
        return self.scorer.core.version


@serve.deployment
class EvaluatorDeployment:
    """Off-policy evaluation of the served model or a named policy on logged data."""

    def __init__(self, data_root: str | None, max_rows: int):
        bind_replica_grpc_to_loopback_node()
        self.data_root, self.max_rows = data_root, max_rows
        self.core: EvaluatorCore | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="causalrec-ope")

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Evaluate the served model of ``config["model_dir"]`` from now on (user_config)."""
        self.core = await asyncio.to_thread(
            EvaluatorCore, config["model_dir"], self.data_root, self.max_rows
        )

    async def evaluate(self, request: dict[str, Any]) -> dict[str, Any]:
        """See :meth:`EvaluatorCore.evaluate` (run off the event loop: health checks go on)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, self.core.evaluate, request)


@serve.deployment(num_replicas=1)
class FeedbackSinkDeployment:
    """Pending served requests joined with their clicks, written as causalrec logs.

    ``replica``: this sink's index when several sinks write sub-directories of the feedback
    directory (``None``: the only sink); see :class:`FeedbackLog`.
    """

    def __init__(self, directory: str, capacity: int, flush_rows: int, replica: int | None = None):
        bind_replica_grpc_to_loopback_node()
        self.directory, self.capacity, self.flush_rows = directory, capacity, flush_rows
        self.replica = replica
        self.log: FeedbackLog | None = None

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Log for the served model of ``config["model_dir"]`` (user_config).

        After a model update the buffered rows of the previous model are written first, so each
        Parquet part names the model version that served it. The catalogue must stay the same
        (``causalrec serve update`` checks it before it deploys).
        """
        saved = SavedModel.open(config["model_dir"])
        metadata = {"model_version": saved.version, "model_dir": str(saved.path)}
        if self.log is None:
            self.log = FeedbackLog(
                self.directory,
                n_items=saved.n_items,
                capacity=self.capacity,
                flush_rows=self.flush_rows,
                metadata=metadata,
                user_features=saved.user_features,
                replica=self.replica,
            )
            return
        self.log.flush()
        self.log.metadata.update(metadata)

    def record(self, request_id: str, served: dict[str, Any]) -> None:
        """Remember a served request until its feedback arrives."""
        self.log.record(request_id, served)

    def add_feedback(self, request_id: str, clicks: list[list[int]]) -> dict[str, Any]:
        """Log a request's clicks (once: a retry is answered, not logged again)."""
        receipt = self.log.add_feedback(request_id, clicks)
        return {
            "rows": receipt.rows,
            "repeated": receipt.repeated,
            "buffered_rows": self.log.buffered_rows,
            "written_files": self.log.written_files,
        }

    def flush(self) -> int:
        """Write what is buffered now; returns the number of files written so far."""
        self.log.flush()
        return self.log.written_files

    def __del__(self):
        with contextlib.suppress(Exception):  # Serve calls it at a graceful stop
            self.log.flush()


@serve.deployment
@serve.ingress(api)
class CausalRecIngress:
    """HTTP front: validates requests, serves slates and routes the rest to the deployments.

    With ``scoring: ingress`` and no experiment the ingress scores itself (:class:`Scorer`):
    scoring needs no hop between deployments, and the ingress's replicas are the ones that
    scale. With ``scoring: replicas``, recommender replicas score, and a request whose replica
    died is sent to another (:meth:`_recommend_on`). With a feedback
    sink, ``/recommend`` makes one bounded call to it (``feedback_record_timeout_s``); with
    several (``feedback_replicas``), to the sink of its request id (:meth:`_sink_of`), which
    ``/feedback`` then reaches too. With an experiment, each user's slate comes from the
    recommender of its arm (:class:`~causalrec.serve.routing.ExperimentSplit`).
    """

    def __init__(
        self,
        args: ServeAppArgs,
        recommenders: dict[str, DeploymentHandle] | None,
        evaluator: DeploymentHandle,
        sinks: list[DeploymentHandle] | DeploymentHandle | None,
        split: ExperimentSplit | None = None,
    ):
        bind_replica_grpc_to_loopback_node()
        self.args = args
        self.recommenders, self.evaluator, self.split = recommenders, evaluator, split
        if sinks is None:
            sinks = []
        self.sinks = list(sinks) if isinstance(sinks, (list, tuple)) else [sinks]
        self.scorer: Scorer | None = None
        self._manifest: dict[str, Any] | None = None
        # Imported here, at run time in the replica: the module's state is what the middleware
        # reads (the class and its app arrive by value).
        from causalrec.serve import limits

        limits.BODY_LIMIT["bytes"] = args.max_body_bytes

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Serve the models of ``config`` (user_config: :func:`_model_config`) from now on.

        The new model is loaded while requests go on with the old one, then swapped in: a
        request in flight finishes with the model it started with.
        """
        self.args = _with_models(self.args, config)
        if self.recommenders is None:
            self.scorer = await asyncio.to_thread(
                _scorer, self.args.model_dir, self.args.seed, self.args
            )
        self._manifest = None

    def check_health(self) -> None:
        """Serve's health check: the canary user must score finitely (when the ingress scores)."""
        if self.scorer is not None:
            self.scorer.check_health()

    def app_args(self) -> dict[str, Any]:
        """The application's arguments (what ``causalrec serve update`` starts from)."""
        return self.args.model_dump()

    def _sink_of(self, request_id: str) -> DeploymentHandle:
        """The feedback sink that records ``request_id`` and takes its feedback."""
        return self.sinks[sink_replica(request_id, len(self.sinks))]

    async def flush_feedback(self) -> int:
        """Have every feedback sink write what it buffers; the files written so far, summed.

        Called through the application's handle (``serve.get_app_handle(name)
        .flush_feedback.remote()``): with several sinks it is the one call that flushes all.
        """
        written = await asyncio.gather(*(sink.flush.remote() for sink in self.sinks))
        return int(sum(written))

    async def _manifest_of_a(self) -> dict[str, Any]:
        """The served (arm ``a``'s) model's manifest, fetched once."""
        if self.scorer is not None:
            return self.scorer.core.manifest
        if self._manifest is None:
            self._manifest = await self.recommenders["a"].manifest.remote()
        return self._manifest

    async def _serve_arms(self, request: dict[str, Any]) -> tuple[dict[str, Any], list]:
        """Slates for the request's users from their arms' recommenders, in request order.

        Returns:
            The served slates (as :meth:`Scorer.recommend`; in an experiment ``policy`` and
            ``version`` hold one value per user) and each user's arm.
        """
        users, timeout_s = request["users"], self.args.request_timeout_s
        if self.scorer is not None:
            served = await self.scorer.recommend(request, timeout_s)
            return served, [None] * len(served["items"])
        deadline = time.monotonic() + timeout_s
        if self.split is None or users is None:
            served = await self._recommend_on("a", request, deadline)
            return served, [None] * len(served["items"])
        arms = self.split.arms(np.asarray(users))
        rows = {arm: np.flatnonzero(arms == arm) for arm in ARMS if (arms == arm).any()}
        parts = await asyncio.gather(
            *(
                self._recommend_on(arm, _rows_of(request, index), deadline)
                for arm, index in rows.items()
            )
        )
        merged: dict[str, Any] = {"users": users}
        order = np.concatenate(list(rows.values()))
        for key in ("items", "scores", "propensities", "prefix"):
            merged[key] = np.empty((len(users), request["k"]), dtype=parts[0][key].dtype)
            merged[key][order] = np.concatenate([part[key] for part in parts])
        policy, version = [""] * len(users), [""] * len(users)
        for (arm, index), part in zip(rows.items(), parts, strict=True):
            for i in index:
                policy[i], version[i] = f"{arm}/{part['policy']}", part["version"]
        merged.update(policy=policy, version=version, propensity_kind=parts[0]["propensity_kind"])
        return merged, arms.tolist()

    async def _recommend_on(
        self, arm: str, request: dict[str, Any], deadline: float
    ) -> dict[str, Any]:
        """``arm``'s slates for ``request``, sent again when the replica running it dies.

        At most ``scoring_retries`` times, to another replica (Serve routes around a dead one).
        Safe to repeat: a recommender replica logs nothing (the ingress hands the answer to
        the feedback sink). Raises :class:`ReplicaLostError` (503) when every try died.
        """
        handle = self.recommenders[arm]
        for attempt in range(self.args.scoring_retries + 1):
            try:
                return await handle.recommend.remote(request, deadline - time.monotonic())
            except _REPLICA_GONE as exc:
                _logger.warning(
                    "a %s replica died during a request (try %d): %s", arm, attempt + 1, exc
                )
                lost = exc
            if time.monotonic() >= deadline:
                break
        raise ReplicaLostError(
            f"recommend: the scoring replica died during the request "
            f"({attempt + 1} tries; scoring_retries = {self.args.scoring_retries}): {lost}"
        )

    def _problem(self, request: dict[str, Any], manifest: dict[str, Any]) -> JSONResponse | None:
        """The 413/422 answer to a request beyond the limits or the catalogue, if any."""
        users = request["users"]
        problem = request_problem(
            users,
            request["k"],
            manifest["n_users"],
            manifest["n_items"],
            n_rows=len(users) if users is not None else len(request["user_features"]),
            exploration=request["exploration"],
            limits=_limits(self.args),
            history=request.get("history"),
            history_length=history_length_of(manifest["params"]),
            backbone=str(manifest["params"].get("backbone", manifest["method"])),
        )
        if problem is None:
            return None
        status, detail = problem
        return JSONResponse(ErrorResponse(detail=detail).model_dump(), status_code=status)

    async def _within_deadline(self, work, what: str):
        """``await work`` within the request deadline (504 naming ``what`` past it)."""
        timeout_s = self.args.request_timeout_s
        try:
            return await asyncio.wait_for(work, timeout=timeout_s)
        except TimeoutError:
            raise DeadlineExceededError(
                f"{what}: not answered within request_timeout_s = {timeout_s} s"
            ) from None

    async def _record(self, request_id: str, served: dict[str, Any]) -> bool:
        """Hand served slates to the feedback sink; whether it took them.

        Bounded by ``feedback_record_timeout_s``: a sink that is restarting or stopping (the
        server draining on Ctrl-C) does not hold the answer back: the slates are served, and
        ``feedback_logged: false`` tells the client that this request's feedback cannot be
        logged.
        """
        if not self.sinks:
            return False
        try:
            await asyncio.wait_for(
                self._sink_of(request_id).record.remote(request_id, served),
                timeout=self.args.feedback_record_timeout_s,
            )
        except (TimeoutError, RayError, RayServeException):
            return False
        return True

    @api.post("/recommend", response_model=RecommendResponse)
    async def recommend(self, body: RecommendRequest):
        """Recommend ``k`` items per user with each item's exact propensity."""
        users = body.users
        request = {**body.model_dump(exclude={"user_id"}), "users": users}
        request["history"] = body.histories
        manifest = await self._manifest_of_a()
        refusal = self._problem(request, manifest)
        if refusal is not None:
            return refusal
        try:
            served, arms = await self._within_deadline(self._serve_arms(request), "recommend")
        except CausalRecError as exc:
            return _error(exc)
        request_id = uuid.uuid4().hex
        # The log stores rows of users the model knows (their features come from its table).
        loggable = users is not None and max(users) < manifest["n_users"]
        logged = await self._record(request_id, served) if loggable else False
        versions, policies = served["version"], served["policy"]
        per_user = isinstance(versions, list)
        return RecommendResponse(
            request_id=request_id,
            model_version=",".join(dict.fromkeys(versions)) if per_user else versions,
            policy=",".join(dict.fromkeys(policies)) if per_user else policies,
            feedback_logged=logged,
            recommendations=[
                UserRecommendation(
                    user_id=None if users is None else users[i],
                    items=served["items"][i].tolist(),
                    scores=served["scores"][i].tolist(),
                    propensities=served["propensities"][i].tolist(),
                    prefix_propensities=served["prefix"][i].tolist(),
                    propensity_kind=served["propensity_kind"],
                    arm=arms[i],
                    model_version=versions[i] if per_user else versions,
                )
                for i in range(len(served["items"]))
            ],
        )

    @api.get("/experiment")
    async def experiment(self):
        """The A/B split and each arm's model version (404 when no experiment runs)."""
        if self.split is None:
            return JSONResponse({"detail": "no experiment is configured"}, status_code=404)
        manifests = await asyncio.gather(
            *(self.recommenders[arm].manifest.remote() for arm in ARMS)
        )
        return {
            "salt": self.split.salt,
            "share_b": self.split.share_b,
            "arms": {
                arm: {"method": m["method"], "model_version": m["model_version"]}
                for arm, m in zip(ARMS, manifests, strict=True)
            },
        }

    @api.post("/evaluate", response_model=EvaluateResponse)
    async def evaluate(self, body: EvaluateRequest):
        """Off-policy estimates (with intervals and diagnostics) of a policy's value."""
        request = body.model_dump()
        timeout_s = self.args.evaluate_timeout_s
        try:
            return await asyncio.wait_for(
                self.evaluator.evaluate.remote(request), timeout=timeout_s
            )
        except TimeoutError:
            return _error(
                DeadlineExceededError(
                    f"evaluate: not answered within evaluate_timeout_s = {timeout_s} s"
                )
            )
        except CausalRecError as exc:
            return _error(exc)

    @api.post("/feedback", response_model=FeedbackResponse)
    async def feedback(self, body: FeedbackRequest):
        """Clicks on a served request; on disk (fsync) before the 200 (see FeedbackLog)."""
        if not self.sinks:
            return JSONResponse(
                {"detail": "no feedback sink is configured (feedback_dir)"}, status_code=409
            )
        sink = self._sink_of(body.request_id)
        try:
            counts = await self._within_deadline(
                sink.add_feedback.remote(body.request_id, body.clicks), "feedback"
            )
        except CausalRecError as exc:
            return _error(exc)
        except (RayError, RayServeException):  # the sink died during the call
            detail = (
                "request_id: the feedback sink is restarting; the feedback may or may not have "
                "been logged: retry it (it is logged once; repeated: true says it was already)"
            )
            return JSONResponse(
                ErrorResponse(detail=detail).model_dump(),
                status_code=503,
                headers={"Retry-After": "1"},
            )
        return FeedbackResponse(request_id=body.request_id, **counts)

    @api.get("/model")
    async def model(self) -> dict[str, Any]:
        """The served model's manifest."""
        return await self._manifest_of_a()

    @api.get("/healthz")
    async def healthz(self):
        """Readiness: every served model scores its canary user (503 naming the problem if not).

        Answers with the model version (every arm's, in a test).
        """
        try:
            if self.scorer is not None:
                self.scorer.check_health()
                versions = [self.scorer.core.version]
            else:
                arms = self.recommenders.values()
                versions = await self._within_deadline(
                    asyncio.gather(*(handle.health.remote() for handle in arms)), "healthz"
                )
        except CausalRecError as exc:
            return _error(exc)
        return {"status": "ok", "model_version": ",".join(versions)}


def build_app(args: ServeAppArgs) -> Application:
    """The application (typed builder for ``serve run`` and ``serve deploy``).

    Relative paths are resolved against the current directory here, in the process that
    builds the application, so replicas find them wherever they run on this machine.
    Deploying it again under the same name with other model directories (``causalrec serve
    update``) is an in-place update: the deployments' version ignores the model directories,
    which travel as ``user_config``, so Serve calls ``reconfigure`` on the running replicas
    instead of replacing them; each loads the new model while it serves with the old one and
    then swaps it in. No replica restarts, no request is dropped.
    """
    if isinstance(args, dict):  # called from Python with a plain mapping
        args = ServeAppArgs.from_dict(args, source="serve args")
    model_dir = str(_saved_model("model_dir", args.model_dir).path)
    data_root = str(Path(args.data_root).absolute()) if args.data_root else None
    feedback_dir = str(Path(args.feedback_dir).absolute()) if args.feedback_dir else None
    args = args.model_copy(
        update={"model_dir": model_dir, "data_root": data_root, "feedback_dir": feedback_dir}
    )
    treatment_dir = None
    if args.experiment is not None:
        treatment_dir = _treatment_model(args.experiment.model_dir, model_dir)
        args = _with_models(args, {"model_dir": model_dir, "experiment_model_dir": treatment_dir})
    # The model directories travel as user_config only, under a version that ignores them.
    models, bound_args = (
        _model_config(args),
        _with_models(args, {"model_dir": "", "experiment_model_dir": ""}),
    )
    common = {
        "max_ongoing_requests": args.max_ongoing_requests,
        "max_queued_requests": args.max_queued_requests,
        "health_check_period_s": args.health_check_period_s,
        "health_check_timeout_s": args.health_check_timeout_s,
        "graceful_shutdown_timeout_s": args.graceful_shutdown_timeout_s,
        # Ray 2.60 sets a deployment's version only through this private flag; a version kept
        # across deployments is what makes a new user_config an in-place update.
        "version": _deployment_version(args),
        "_internal": True,
    }
    scaling = (
        {"autoscaling_config": args.autoscaling}
        if args.autoscaling
        else {"num_replicas": args.num_replicas}
    )

    def cpus(n: float) -> dict[str, Any]:
        return {"ray_actor_options": {"num_cpus": n}}

    def model(model_dir: str) -> dict[str, Any]:
        return {"user_config": {**models, "model_dir": model_dir}}

    # Internal hops (ingress → recommender, evaluator, sink) are not HTTP requests: the ingress
    # logs each request once; a second access-log line per hop costs a write on the hot path.
    internal = {"logging_config": {"enable_access_log": args.internal_access_log}, **common}

    recommenders, split = None, None
    if treatment_dir is not None or args.scoring == "replicas":
        arm = RecommenderDeployment.options(**scaling, **cpus(args.recommender_cpus), **internal)
        recommenders = {
            "a": arm.options(**model(model_dir), _internal=True).bind(args.seed, bound_args)
        }
    if treatment_dir is not None:
        recommenders["b"] = arm.options(
            name="RecommenderDeploymentB", **model(treatment_dir), _internal=True
        ).bind(args.seed + 1, bound_args)
        split = ExperimentSplit(args.experiment.salt, args.experiment.share_b)
    evaluator = EvaluatorDeployment.options(
        **cpus(args.evaluator_cpus), **internal, **model(model_dir)
    ).bind(data_root, args.max_evaluate_rows)
    sinks = None
    if feedback_dir:
        options = {**cpus(args.ingress_cpus), **internal, **model(model_dir)}
        sinks = _feedback_sinks(args, feedback_dir, options)
    if recommenders is None:  # the ingress scores: it is the deployment that scales
        ingress = CausalRecIngress.options(
            **scaling, **cpus(args.recommender_cpus), **common, user_config=models
        )
    else:
        ingress = CausalRecIngress.options(**cpus(args.ingress_cpus), **common, user_config=models)
    return ingress.bind(bound_args, recommenders, evaluator, sinks, split)


def _feedback_sinks(
    args: ServeAppArgs, feedback_dir: str, options: dict[str, Any]
) -> list[Application]:
    """The feedback sink deployments, bound.

    One sink writes ``feedback_dir`` itself; with ``feedback_replicas`` > 1, one deployment per
    sink (``FeedbackSinkDeployment-00``, ...; one replica each, so the name fixes the
    sub-directory a sink writes and a restarted sink replays) writes its ``replica-NN``
    sub-directory (:func:`~causalrec.serve.feedback.replica_directory`).
    """
    n = args.feedback_replicas
    common = (args.pending_requests, args.feedback_flush_rows)
    if n == 1:
        return [FeedbackSinkDeployment.options(**options).bind(feedback_dir, *common)]
    return [
        FeedbackSinkDeployment.options(name=f"FeedbackSinkDeployment-{i:02d}", **options).bind(
            str(replica_directory(feedback_dir, i, n)), *common, i
        )
        for i in range(n)
    ]


def _saved_model(field: str, path: str) -> SavedModel:
    """The saved model at ``path`` (errors name ``field``)."""
    if not is_saved_model(path):
        raise DataError(f"{field}: {path!r} holds no saved model (manifest.json)")
    return SavedModel.open(path)


def _treatment_model(path: str, control_dir: str) -> str:
    """The absolute treatment model directory, checked to serve the control's catalogue."""
    control, treatment = SavedModel.open(control_dir), _saved_model("experiment.model_dir", path)
    try:
        treatment.check_catalogue(
            "experiment.model_dir",
            n_users=control.n_users,
            n_items=control.n_items,
            other="the control model (model_dir)",
        )
    except ConfigError as exc:
        raise DataError(f"{exc}: both arms must serve the same catalogue") from None
    return str(treatment.path)
