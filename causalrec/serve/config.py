"""Arguments of the Serve application (the typed application builder's schema).

``serve run causalrec.serve.app:build_app model_dir=runs/tune/best`` and the ``args:`` of a
``serve deploy`` config (``configs/serve/default.yaml``) are validated into
:class:`ServeAppArgs`; ``causalrec serve`` builds one from its options.
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic

from causalrec.platform.config import StrictConfig

__all__ = ["ExperimentArgs", "ServeAppArgs"]


class ExperimentArgs(StrictConfig):
    """An A/B test run by the serving layer (see :mod:`causalrec.serve.routing`).

    Arm ``a`` (control) is the application's ``model_dir``; arm ``b`` (treatment) is
    ``model_dir`` here. Each user goes to the arm given by a salted hash of its id, so a user
    always sees the same arm.

    Attributes:
        model_dir: The treatment model (arm ``b``): a saved model directory.
        salt: Salt of the assignment hash (a new salt is a new experiment).
        share_b: Share of users in arm ``b``, in (0, 1).
    """

    model_dir: str
    salt: str = "causalrec-ab"
    share_b: float = pydantic.Field(default=0.5, gt=0, lt=1)


class ServeAppArgs(StrictConfig):
    """How the recommender application serves.

    Attributes:
        model_dir: A saved model directory (:mod:`causalrec.methods.artifact`), e.g.
            ``causalrec tune``'s ``best/``.
        data_root: Directory under which ``/evaluate`` may read Parquet logs (``None``: inline
            rows only). Paths outside it are refused with 403.
        feedback_dir: Log directory that ``/feedback`` appends to (causalrec log format).
        feedback_replicas: Feedback sinks writing ``feedback_dir`` (each one replica, each
            its own fsync per acknowledged feedback). 1: ``feedback_dir/logs`` and
            ``feedback_dir/journal``; N > 1: sink ``i`` writes ``feedback_dir/replica-{i:02d}/``
            (a whole log directory) and takes the requests whose id hashes to ``i``
            (:mod:`causalrec.serve.feedback`); ``read_logs(feedback_dir)`` reads them all.
        scoring: Where slates are scored when no experiment runs. ``ingress``: in the HTTP
            ingress's replicas (no hop between deployments: the lowest latency; a request in
            flight on a replica that dies gets 500). ``replicas``: in ``RecommenderDeployment``
            replicas behind a thin ingress, which retries a request whose replica died on
            another one within its deadline (one hop more per request). An A/B test always
            scores in its arms' replicas, with the same retry.
        num_replicas: Replicas of the deployment that scores: the HTTP ingress itself with
            ``scoring: ingress``, the recommender otherwise (each arm's, in an A/B test;
            ignored with ``autoscaling``).
        scoring_retries: With scoring replicas, how many times a request whose replica died
            is sent again (to another replica; Serve routes around the dead one). Scoring has
            no side effect: nothing is logged before the answer.
        autoscaling: Ray Serve ``autoscaling_config`` of the scoring deployment, e.g.
            ``{min_replicas: 1, max_replicas: 4, target_ongoing_requests: 8}``.
        max_ongoing_requests: Requests a replica works on at once.
        max_queued_requests: Requests that may wait per deployment; beyond it callers get 503.
        max_batch_size: Users scored together by one ``@serve.batch`` call.
        batch_wait_timeout_s: How long a batch waits to fill.
        max_users_per_request: Users per ``/recommend`` request; 413 above.
        max_slate_items: Users × k per ``/recommend`` request; 413 above.
        max_softmax_k: Largest k under softmax exploration (its Plackett–Luce marginals cost
            grows steeply with k); 413 above.
        request_timeout_s: Deadline of each request's work; past it the answer is 504 and the
            remaining work is dropped (scoring runs off the replica's event loop, so health
            checks and other requests go on meanwhile).
        evaluate_timeout_s: Deadline of an ``/evaluate`` request (504 past it).
        feedback_record_timeout_s: How long ``/recommend`` waits for the feedback sink to take
            its served slates; past it the slates are served with ``feedback_logged: false``.
        health_check_period_s: Seconds between Serve's health checks of each replica (each
            scores a canary user and fails on an exception or a non-finite score).
        health_check_timeout_s: Seconds a health check may take before it counts as failed.
        graceful_shutdown_timeout_s: Seconds a stopping replica (Ctrl-C, an update, a
            scale-down) waits for its in-flight requests before it is killed.
        max_body_bytes: Largest request body; larger bodies get 413.
        max_evaluate_rows: Largest log ``/evaluate`` accepts (inline or from Parquet); 413 above.
        feedback_flush_rows: Rows buffered before ``/feedback`` writes a Parquet file.
        pending_requests: Served requests remembered for ``/feedback`` (oldest dropped first).
        seed: Seed of the served policies' randomness (per replica, offset by the replica).
        recommender_cpus: CPUs reserved per recommender replica.
        evaluator_cpus: CPUs reserved by the evaluator replica.
        ingress_cpus: CPUs reserved by the HTTP ingress (and each feedback sink) replica.
        experiment: An A/B test: users split by a hash of their id between ``model_dir`` (arm
            ``a``) and ``experiment.model_dir`` (arm ``b``); ``None`` serves one model.
        internal_access_log: Also write Serve's access log for the internal deployments (each
            HTTP request is logged once by the ingress either way).
    """

    model_dir: str
    data_root: str | None = None
    feedback_dir: str | None = None
    feedback_replicas: int = pydantic.Field(default=1, ge=1)
    scoring: Literal["ingress", "replicas"] = "ingress"
    num_replicas: int = pydantic.Field(default=1, ge=1)
    scoring_retries: int = pydantic.Field(default=2, ge=0)
    autoscaling: dict[str, Any] | None = None
    max_ongoing_requests: int = pydantic.Field(default=32, ge=1)
    max_queued_requests: int = pydantic.Field(default=64, ge=1)
    max_batch_size: int = pydantic.Field(default=32, ge=1)
    batch_wait_timeout_s: float = pydantic.Field(default=0.0, ge=0)
    max_users_per_request: int = pydantic.Field(default=256, ge=1)
    max_slate_items: int = pydantic.Field(default=4096, ge=1)
    max_softmax_k: int = pydantic.Field(default=20, ge=1)
    request_timeout_s: float = pydantic.Field(default=10.0, gt=0)
    evaluate_timeout_s: float = pydantic.Field(default=120.0, gt=0)
    feedback_record_timeout_s: float = pydantic.Field(default=2.0, gt=0)
    health_check_period_s: float = pydantic.Field(default=10.0, gt=0)
    health_check_timeout_s: float = pydantic.Field(default=30.0, gt=0)
    graceful_shutdown_timeout_s: float = pydantic.Field(default=20.0, ge=0)
    max_body_bytes: int = pydantic.Field(default=4_000_000, ge=1024)
    max_evaluate_rows: int = pydantic.Field(default=200_000, ge=1)
    feedback_flush_rows: int = pydantic.Field(default=1024, ge=1)
    pending_requests: int = pydantic.Field(default=100_000, ge=1)
    seed: int = 0
    recommender_cpus: float = pydantic.Field(default=0.5, ge=0)
    evaluator_cpus: float = pydantic.Field(default=0.5, ge=0)
    ingress_cpus: float = pydantic.Field(default=0.1, ge=0)
    experiment: ExperimentArgs | None = None
    internal_access_log: bool = False
