"""The Ray Serve application: a FastAPI ingress over recommender, evaluator and feedback sink.

Run it with ``serve run causalrec.serve.app:build_app model_dir=runs/tune/best`` (typed
arguments: :class:`~causalrec.serve.config.ServeAppArgs`), ``serve deploy
configs/serve/default.yaml``, or ``causalrec serve --model runs/tune/best``.

Deployments (sub-deployments reach the ingress as handles):

* ``CausalRecIngress`` — FastAPI: ``POST /recommend``, ``POST /evaluate``, ``POST /feedback``,
  ``GET /model``, ``GET /healthz``; OpenAPI at ``/docs``. Bodies over ``max_body_bytes`` get 413.
* ``RecommenderDeployment`` — loads the model once per replica; scores concurrent requests
  together with ``@serve.batch``; ``check_health`` fails when no model is loaded.
* ``EvaluatorDeployment`` — off-policy evaluation of the served or a named policy.
* ``FeedbackSinkDeployment`` — one replica joining served slates with their clicks into Parquet.

Every deployment takes ``max_ongoing_requests`` and ``max_queued_requests`` from the arguments:
beyond them Serve answers 503 at once instead of queuing without bound.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations at runtime.

import asyncio
import contextlib
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from causalrec.methods.artifact import SavedModel, is_saved_model
from causalrec.platform.errors import CausalRecError, ConfigError, DataError
from causalrec.serve._loopback import bind_replica_grpc_to_loopback_node
from causalrec.serve.config import ServeAppArgs
from causalrec.serve.evaluator import EvaluatorCore, ForbiddenPathError, TooLargeError
from causalrec.serve.feedback import FeedbackLog, UnknownRequestError
from causalrec.serve.limits import BodySizeLimit
from causalrec.serve.recommender import RecommenderCore, request_problem
from causalrec.serve.routing import ARMS, ExperimentSplit
from causalrec.serve.schemas import (
    EvaluateRequest,
    EvaluateResponse,
    FeedbackRequest,
    FeedbackResponse,
    RecommendRequest,
    RecommendResponse,
    UserRecommendation,
)

__all__ = ["api", "build_app"]

api = FastAPI(
    title="causalrec",
    description=(
        "Recommendations with the exact propensity of every returned item, counterfactual "
        "(off-policy) evaluation, and feedback logging into the causalrec log format."
    ),
)


api.add_middleware(BodySizeLimit)


@api.exception_handler(RequestValidationError)
async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each offending field (values are not echoed: NaN is not valid JSON)."""
    errors = [
        {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]}
        for error in exc.errors()
    ]
    fields = "; ".join(
        f"{'.'.join(str(part) for part in e['loc'] if part != 'body')}: {e['msg']}" for e in errors
    )
    return JSONResponse({"detail": fields, "errors": errors}, status_code=422)


def _error(exc: Exception) -> JSONResponse:
    """The HTTP answer to a causalrec error raised in a deployment (its cause, without trace)."""
    cause = getattr(exc, "cause", None) or exc
    return JSONResponse({"detail": str(cause)}, status_code=_status(cause))


def _status(exc: Exception) -> int:
    if isinstance(exc, ForbiddenPathError):
        return 403
    if isinstance(exc, TooLargeError):
        return 413
    if isinstance(exc, UnknownRequestError):
        return 404
    return 422


@serve.deployment
class RecommenderDeployment:
    """Loads the exported model once per replica and serves slates with propensities."""

    def __init__(self, model_dir: str, seed: int, max_batch_size: int, batch_wait_timeout_s: float):
        self.core = RecommenderCore(model_dir, seed)
        self._score.set_max_batch_size(max_batch_size)
        self._score.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def check_health(self) -> None:
        """Serve's health check: fails when the model is not loaded."""
        if not hasattr(self.core.model, "n_items_"):
            raise RuntimeError("the recommender replica has no loaded model")
        bind_replica_grpc_to_loopback_node()

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def _score(self, user_lists: list[np.ndarray]) -> list[np.ndarray]:
        return self.core.score_batch(user_lists)

    async def recommend(self, request: dict[str, Any]) -> dict[str, Any]:
        """Slates, scores and exact propensities for one request's users (ids or features)."""
        users = request["users"]
        if users is None:  # users described by features: scored directly, not batched by id
            rows = self.core.model.score_features(np.asarray(request["user_features"]))
            return {**self.core.draw(rows, request), "users": None, "version": self.core.version}
        self.core.check_request(users, request["k"])
        rows = await self._score(np.asarray(users, dtype=np.int64))
        return {**self.core.draw(rows, request), "users": users, "version": self.core.version}

    def manifest(self) -> dict[str, Any]:
        """The model's manifest (method, parameters, schema, tuning record, version)."""
        return self.core.manifest


@serve.deployment
class EvaluatorDeployment:
    """Off-policy evaluation of the served model or a named policy on logged data."""

    def __init__(self, model_dir: str, data_root: str | None, max_rows: int):
        self.core = EvaluatorCore(model_dir, data_root, max_rows)

    def evaluate(self, request: dict[str, Any]) -> dict[str, Any]:
        """See :meth:`EvaluatorCore.evaluate`."""
        return self.core.evaluate(request)


@serve.deployment(num_replicas=1)
        bind_replica_grpc_to_loopback_node()
class FeedbackSinkDeployment:
    """Pending served requests joined with their clicks, written as causalrec logs."""

    def __init__(self, directory: str, model_dir: str, capacity: int, flush_rows: int):
        saved = SavedModel.open(model_dir)
        self.log = FeedbackLog(
            directory,
            n_items=saved.n_items,
            capacity=capacity,
            flush_rows=flush_rows,
            metadata={"model_version": saved.version, "model_dir": str(saved.path)},
            user_features=saved.user_features,
        bind_replica_grpc_to_loopback_node()
        )

    def record(self, request_id: str, served: dict[str, Any]) -> None:
        """Remember a served request until its feedback arrives."""
        self.log.record(request_id, served)

    def add_feedback(self, request_id: str, clicks: list[list[int]]) -> dict[str, int]:
        """Log a request's clicks; returns row and file counts."""
        rows = self.log.add_feedback(request_id, clicks)
        return {
            "rows": rows,
            "buffered_rows": self.log.buffered_rows,
            "written_files": self.log.written_files,
        }

    def flush(self) -> int:
        """Write what is buffered now; returns the number of files written so far."""
        self.log.flush()
        return self.log.written_files

    def __del__(self):
        with contextlib.suppress(Exception):  # best effort at shutdown; written rows stay
            self.log.flush()


@serve.deployment
@serve.ingress(api)
class CausalRecIngress:
    """HTTP front: validates requests and routes them to the deployments.

    With an experiment, each user's slate comes from the recommender of its arm
    (:class:`~causalrec.serve.routing.ExperimentSplit`); without one, every user's from arm ``a``.
    """

    def __init__(
        self,
        recommenders: dict[str, DeploymentHandle],
        evaluator: DeploymentHandle,
        sink: DeploymentHandle | None,
        max_users_per_request: int,
        max_body_bytes: int,
        split: ExperimentSplit | None = None,
    ):
        self.recommenders, self.evaluator, self.sink = recommenders, evaluator, sink
        self.recommender = recommenders["a"]
        self.split = split
        self.max_users = max_users_per_request
        self._manifest: dict[str, Any] | None = None
        # Imported here, at run time in the replica: the module's state is what the middleware
        # reads (the class and its app arrive by value).
        from causalrec.serve import limits
        bind_replica_grpc_to_loopback_node()

        limits.BODY_LIMIT["bytes"] = max_body_bytes

    async def _catalogue(self) -> tuple[int, int]:
        """(n_users, n_items) of the served model, fetched once."""
        if self._manifest is None:
            self._manifest = await self.recommender.manifest.remote()
        return self._manifest["n_users"], self._manifest["n_items"]

    async def _serve_arms(self, request: dict[str, Any]) -> tuple[dict[str, Any], list]:
        """Slates for the request's users from their arms' recommenders, in request order.

        Returns:
            The served slates (as :meth:`RecommenderDeployment.recommend`; in an experiment
            ``policy`` and ``version`` hold one value per user) and each user's arm.
        """
        users = request["users"]
        if self.split is None or users is None:
            served = await self.recommender.recommend.remote(request)
            return served, [None] * len(served["items"])
        arms = self.split.arms(np.asarray(users))
        rows = {arm: np.flatnonzero(arms == arm) for arm in ARMS if (arms == arm).any()}
        parts = await asyncio.gather(
            *(
                self.recommenders[arm].recommend.remote(
                    {**request, "users": [users[i] for i in index]}
                )
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

    @api.post("/recommend", response_model=RecommendResponse)
    async def recommend(self, body: RecommendRequest):
        """Recommend ``k`` items per user with each item's exact propensity."""
        users = body.users
        count, field = (
            (len(users), "user_id") if users else (len(body.user_features), "user_features")
        )
        if count > self.max_users:
            return JSONResponse(
                {"detail": f"{field}: {count} users; at most {self.max_users} per request"},
                status_code=413,
            )
        problem = request_problem(users, body.k, *await self._catalogue())
        if problem:
            return JSONResponse({"detail": problem}, status_code=422)
        request = {**body.model_dump(exclude={"user_id"}), "users": users}
        try:
            served, arms = await self._serve_arms(request)
        except CausalRecError as exc:
            return _error(exc)
        request_id = uuid.uuid4().hex
        if self.sink is not None and users is not None:
            await self.sink.record.remote(request_id, served)
        versions, policies = served["version"], served["policy"]
        per_user = isinstance(versions, list)
        return RecommendResponse(
            request_id=request_id,
            model_version=",".join(dict.fromkeys(versions)) if per_user else versions,
            policy=",".join(dict.fromkeys(policies)) if per_user else policies,
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
        try:
            return await self.evaluator.evaluate.remote(request)
        except CausalRecError as exc:
            return _error(exc)

    @api.post("/feedback", response_model=FeedbackResponse)
    async def feedback(self, body: FeedbackRequest):
        """Clicks on a served request; appended to the Parquet log sink."""
        if self.sink is None:
            return JSONResponse(
                {"detail": "no feedback sink is configured (feedback_dir)"}, status_code=409
            )
        try:
            counts = await self.sink.add_feedback.remote(body.request_id, body.clicks)
        except CausalRecError as exc:
            return _error(exc)
        return FeedbackResponse(request_id=body.request_id, **counts)

    @api.get("/model")
    async def model(self) -> dict[str, Any]:
        """The served model's manifest."""
        return await self.recommender.manifest.remote()

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        """Liveness: the recommender answers with its model version (every arm's, in a test)."""
        if self.split is None:
            manifest = await self.recommender.manifest.remote()
            return {"status": "ok", "model_version": manifest["model_version"]}
        manifests = await asyncio.gather(
            *(handle.manifest.remote() for handle in self.recommenders.values())
        )
        return {"status": "ok", "model_version": ",".join(m["model_version"] for m in manifests)}


def build_app(args: ServeAppArgs) -> Application:
    """The application (typed builder for ``serve run`` and ``serve deploy``).

    Relative paths are resolved against the current directory here, in the process that
    builds the application, so replicas find them wherever they run on this machine.
    """
    if isinstance(args, dict):  # called from Python with a plain mapping
        args = ServeAppArgs.from_dict(args, source="serve args")
    model_dir = str(_saved_model("model_dir", args.model_dir).path)
    limits = {
        "max_ongoing_requests": args.max_ongoing_requests,
        "max_queued_requests": args.max_queued_requests,
    }
    scaling = (
        {"autoscaling_config": args.autoscaling}
        if args.autoscaling
        else {"num_replicas": args.num_replicas}
    )

    def cpus(n: float) -> dict[str, Any]:
        return {"ray_actor_options": {"num_cpus": n}}

    # Internal hops (ingress → recommender, evaluator, sink) are not HTTP requests: the ingress
    # logs each request once; a second access-log line per hop costs a write on the hot path.
    internal = {"logging_config": {"enable_access_log": args.internal_access_log}}

    recommender = RecommenderDeployment.options(
        **limits, **scaling, **cpus(args.recommender_cpus), **internal
    ).bind(model_dir, args.seed, args.max_batch_size, args.batch_wait_timeout_s)
    recommenders, split = {"a": recommender}, None
    if args.experiment is not None:
        treatment_dir = _treatment_model(args.experiment.model_dir, model_dir)
        recommenders["b"] = RecommenderDeployment.options(
            name="RecommenderDeploymentB",
            **limits,
            **scaling,
            **cpus(args.recommender_cpus),
            **internal,
        ).bind(treatment_dir, args.seed + 1, args.max_batch_size, args.batch_wait_timeout_s)
        split = ExperimentSplit(args.experiment.salt, args.experiment.share_b)
    data_root = str(Path(args.data_root).absolute()) if args.data_root else None
    evaluator = EvaluatorDeployment.options(**limits, **cpus(args.evaluator_cpus), **internal).bind(
        model_dir, data_root, args.max_evaluate_rows
    )
    sink = None
    if args.feedback_dir:
        sink = FeedbackSinkDeployment.options(**limits, **cpus(args.ingress_cpus), **internal).bind(
            str(Path(args.feedback_dir).absolute()),
            model_dir,
            args.pending_requests,
            args.feedback_flush_rows,
        )
    return CausalRecIngress.options(**limits, **cpus(args.ingress_cpus)).bind(
        recommenders, evaluator, sink, args.max_users_per_request, args.max_body_bytes, split
    )


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
