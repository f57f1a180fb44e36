"""Request and response bodies of the HTTP API (pydantic; they make the OpenAPI at ``/docs``).

Numbers must be finite (NaN and infinity are refused with 422, naming the field) and types are
strict: an integer field refuses ``true``, ``"3"`` and ``3.0``. Ids fit in int64. Ranges that
depend on the served model (``k`` <= catalogue size, known user ids) are checked by the
application and also answered with 422.

Every error answer is an :class:`ErrorResponse` (``{"detail": "<message naming the field>"}``);
a 422 is a :class:`ValidationErrorResponse`, which adds pydantic's per-field ``errors``.
:data:`ERROR_RESPONSES` documents them for every path of the OpenAPI.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pydantic

__all__ = [
    "ERROR_RESPONSES",
    "MIN_PSCORE",
    "ErrorResponse",
    "EvaluateRequest",
    "EvaluateResponse",
    "FeedbackRequest",
    "FeedbackResponse",
    "FieldError",
    "LogRow",
    "RecommendRequest",
    "RecommendResponse",
    "UserHistory",
    "UserRecommendation",
    "ValidationErrorResponse",
]

_FINITE = pydantic.ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
#: Largest id the log format stores (int64).
MAX_ID = 2**63 - 1
#: Longest ``path`` accepted by ``/evaluate`` (characters).
MAX_PATH_LENGTH = 1024
#: Smallest logged propensity ``/evaluate`` accepts inline: importance weights (<= 1 / pscore),
#: their squares (variances) and sums over 10**8 rows stay finite in float64 above it.
MIN_PSCORE = 1e-150


class UserHistory(pydantic.BaseModel):
    """One user's recent impressions, oldest first (what a ``transformer`` model reads).

    Attributes:
        items: Shown item ids, oldest first; at most the model's ``history_length`` of them
            (422 beyond: send the latest ones). May be empty (a user with no history yet).
        clicks: Whether each of them was clicked (0 or 1), same length as ``items``.
    """

    model_config = _FINITE

    items: list[int]
    clicks: list[Annotated[int, pydantic.Field(ge=0, le=1)]]

    @pydantic.model_validator(mode="after")
    def _one_click_per_item(self):
        if len(self.items) != len(self.clicks):
            raise ValueError(
                f"history: items and clicks must have the same length; got {len(self.items)} "
                f"items and {len(self.clicks)} clicks"
            )
        bad = [item for item in self.items if not 0 <= item <= MAX_ID]
        if bad:
            raise ValueError(f"history: item ids must be in [0, 2**63 - 1]; got {bad[0]}")
        return self


class RecommendRequest(pydantic.BaseModel):
    """``POST /recommend``: one user or a batch.

    Attributes:
        user_id: One user id or a list of them.
        user_features: Instead of ids, users described by their observed features (a list of
            rows); needs a ``two_tower`` model. Such requests are not logged by ``/feedback``
            (the log format keys rows by user id).
        k: Items per user (slate size), 1 <= k <= the catalogue size.
        exploration: ``none`` (deterministic top-k), ``epsilon`` (ε-greedy) or ``softmax``
            (Plackett–Luce at ``temperature``); every returned item comes with its exact
            probability under the served policy.
        epsilon: ε of ``epsilon`` exploration, in [0, 1].
        temperature: Temperature of ``softmax`` exploration, > 0.
        history: ``transformer`` models only: each user's recent impressions, a list of
            :class:`UserHistory` in the order of the user ids (a list of one for one id).
            The slate is scored from it instead of from the user's history in the training
            log, so users the model has never seen can be served; requests with such users are
            not logged by ``/feedback`` (the log stores features of known users only).
    """

    model_config = _FINITE

    user_id: int | list[int] | None = None
    user_features: list[list[float]] | None = None
    k: int = pydantic.Field(default=10, ge=1)
    exploration: Literal["none", "epsilon", "softmax"] = "none"
    epsilon: float = pydantic.Field(default=0.1, ge=0, le=1)
    temperature: float = pydantic.Field(default=1.0, gt=0)
    history: list[UserHistory] | None = None

    @pydantic.model_validator(mode="after")
    def _one_way_to_name_users(self):
        if (self.user_id is None) == (self.user_features is None):
            raise ValueError("give exactly one of 'user_id' and 'user_features'")
        if self.history is not None:
            if self.user_id is None:
                raise ValueError("history: give it with user_id, not with user_features")
            users = self.user_id if isinstance(self.user_id, list) else [self.user_id]
            if len(self.history) != len(users):
                raise ValueError(
                    f"history: {len(self.history)} histories for {len(users)} user ids (one "
                    "per user, in the same order)"
                )
        if self.user_features is not None:
            if not self.user_features:
                raise ValueError("user_features must hold at least one row")
            widths = sorted({len(row) for row in self.user_features})
            if len(widths) > 1 or widths[0] == 0:
                raise ValueError(
                    f"user_features: every row must hold the same number (>= 1) of features; "
                    f"got row lengths {widths}"
                )
        return self

    @pydantic.field_validator("user_id")
    @classmethod
    def _non_negative(cls, value):
        if value is None:
            return value
        users = value if isinstance(value, list) else [value]
        if not users:
            raise ValueError("user_id must hold at least one user")
        bad = [u for u in users if not 0 <= u <= MAX_ID]
        if bad:
            raise ValueError(f"user ids must be in [0, 2**63 - 1]; got {bad[0]}")
        return value

    @property
    def users(self) -> list[int] | None:
        """The requested user ids as a list (``None`` for a request by features)."""
        if self.user_id is None:
            return None
        return self.user_id if isinstance(self.user_id, list) else [self.user_id]

    @property
    def histories(self) -> list[dict[str, list[int]]] | None:
        """The users' histories as a list aligned with :attr:`users` (``None`` without)."""
        if self.history is None:
            return None
        return [history.model_dump() for history in self.history]


class UserRecommendation(pydantic.BaseModel):
    """One user's slate.

    Attributes:
        user_id: The user (``None`` for a user given by features).
        items: Recommended item ids, in position order, shape (k,).
        scores: The model's score of each item, shape (k,).
        propensities: ``P(item at this position | user)`` under the served policy, shape (k,).
        prefix_propensities: Probability of the slate's first ``j + 1`` items under the served
            policy, for ``j = 0..k-1``, shape (k,) (what slate estimators need); always exact.
        propensity_kind: ``exact`` or ``estimated`` per position, shape (k,): softmax slates
            of k >= 3 over large catalogues give Rao–Blackwellised Monte Carlo estimates of later
            positions' marginals (relative standard error at most 1% by default).
        arm: The user's arm (``a`` or ``b``) when an A/B test runs, else ``None``.
        model_version: Version of the model that served this user.
    """

    user_id: int | None
    items: list[int]
    scores: list[float]
    propensities: list[float]
    prefix_propensities: list[float]
    propensity_kind: list[Literal["exact", "estimated"]]
    arm: str | None = None
    model_version: str


class RecommendResponse(pydantic.BaseModel):
    """``POST /recommend`` answer: per user a slate; ids to send feedback against.

    In an A/B test ``model_version`` and ``policy`` list the distinct values of the request's
    users (comma-separated, arm-prefixed policies); each user's own are in its recommendation.

    Attributes:
        feedback_logged: Whether the served slates were handed to the feedback sink, so that
            ``/feedback`` on ``request_id`` can log them; ``False`` without a sink, for users
            given by features, or when the sink could not take them in time (restarting, or
            the server shutting down): the slates are served all the same.
    """

    request_id: str
    model_version: str
    policy: str
    recommendations: list[UserRecommendation]
    feedback_logged: bool = False


class LogRow(pydantic.BaseModel):
    """One logged impression, inline in ``/evaluate`` (the causalrec log format's core).

    Attributes:
        round_id: Round (request) index.
        user_id: User id.
        item_id: Shown item.
        position: 0-based position in the slate.
        click: Observed click, 0 or 1.
        pscore: The logging policy's probability of the item at that position, in
            [:data:`MIN_PSCORE`, 1] (1e-150: smaller ones give weights whose squares overflow).
        user_features: Observed user features (same length in every row; may be empty).
    """

    model_config = _FINITE

    round_id: int = pydantic.Field(ge=0, le=MAX_ID)
    user_id: int = pydantic.Field(ge=0, le=MAX_ID)
    item_id: int = pydantic.Field(ge=0, le=MAX_ID)
    position: int = pydantic.Field(default=0, ge=0, le=MAX_ID)
    click: int = pydantic.Field(ge=0, le=1)
    # The floor is checked by the validator below (pydantic would print 1e-150 with 150 digits).
    pscore: float = pydantic.Field(le=1, json_schema_extra={"minimum": MIN_PSCORE})
    user_features: list[float] = pydantic.Field(default_factory=list)

    @pydantic.field_validator("pscore")
    @classmethod
    def _pscore_floor(cls, value: float) -> float:
        if not value >= MIN_PSCORE:
            raise ValueError(
                f"pscore must be in [{MIN_PSCORE:g}, 1] (importance weights 1 / pscore and their "
                f"squares must stay finite); got {value:g}"
            )
        return value


class EvaluateRequest(pydantic.BaseModel):
    """``POST /evaluate``: off-policy evaluation on logged data.

    Attributes:
        rows: Inline log rows (at most the server's row limit).
        path: A Parquet log directory under the server's data root (instead of ``rows``), at
            most 1,024 characters, without NUL.
        policy: ``served`` (the deployed model, with ``k`` and ``exploration``) or a named
            policy: ``uniform``, and for simulated logs ``logging``, ``oracle``, ``softmax:T``,
            ``epsilon_greedy:E``.
        exploration: Exploration of the served model's policy.
        epsilon: ε of ``epsilon`` exploration.
        temperature: Temperature of ``softmax`` exploration.
        estimators: Estimator specs (``dr``, ``ips:clip=100``, ...), at least one; default: all
            standard ones.
        alpha: 1 - confidence level of the intervals.
        reward_model: Reward model of DM and DR-type estimators.
    """

    model_config = _FINITE

    rows: list[LogRow] | None = None
    path: str | None = pydantic.Field(
        default=None, min_length=1, max_length=MAX_PATH_LENGTH, pattern=r"^[^\x00]*$"
    )
    policy: str = "served"
    exploration: Literal["none", "epsilon", "softmax"] = "none"
    epsilon: float = pydantic.Field(default=0.1, ge=0, le=1)
    temperature: float = pydantic.Field(default=1.0, gt=0)
    estimators: list[str] | None = pydantic.Field(default=None, min_length=1)
    alpha: float = pydantic.Field(default=0.05, gt=0, lt=1)
    reward_model: Literal["logistic", "hgb", "mlp"] = "logistic"

    @pydantic.model_validator(mode="after")
    def _one_source(self):
        if (self.rows is None) == (self.path is None):
            raise ValueError("give exactly one of 'rows' (inline log rows) and 'path'")
        if self.rows is not None and not self.rows:
            raise ValueError("rows must hold at least one logged impression")
        return self


class EvaluateResponse(pydantic.BaseModel):
    """``POST /evaluate`` answer: one record per estimator (estimate, interval, diagnostics)."""

    policy: str
    n_rows: int
    estimates: list[dict[str, Any]]


class FeedbackRequest(pydantic.BaseModel):
    """``POST /feedback``: clicks on a served request's recommendations.

    Attributes:
        request_id: The ``request_id`` of a ``/recommend`` answer.
        clicks: Per user of that request (same order), a 0/1 click per returned item.
    """

    model_config = _FINITE

    request_id: str
    clicks: list[list[int]]

    @pydantic.field_validator("clicks")
    @classmethod
    def _binary(cls, clicks):
        for row in clicks:
            for click in row:
                if click not in (0, 1):
                    raise ValueError(f"clicks must be 0 or 1; got {click}")
        return clicks


class FeedbackResponse(pydantic.BaseModel):
    """``POST /feedback`` answer.

    Attributes:
        request_id: The request the clicks were for.
        rows: Impressions logged for it (users x items).
        repeated: Whether these clicks had been logged already (a retry): nothing was added.
        buffered_rows: Rows waiting for the sink's next Parquet part.
        written_files: Parquet parts the sink has written.
    """

    request_id: str
    rows: int
    repeated: bool = False
    buffered_rows: int
    written_files: int


class ErrorResponse(pydantic.BaseModel):
    """Body of every error answer (400, 403, 404, 409, 413, 503, 504; 422 adds ``errors``).

    Attributes:
        detail: What was wrong, naming the field, the expected value and what was received
            (``k: 1000 exceeds the catalogue size 40``).
    """

    detail: str


class FieldError(pydantic.BaseModel):
    """One offending field of a request that failed validation (pydantic's error, no input).

    Attributes:
        loc: Where the field is: ``["body", "rows", 0, "pscore"]``.
        msg: What is wrong with it.
        type: pydantic's error type (``greater_than_equal``, ``int_type``, ...).
    """

    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorResponse(ErrorResponse):
    """422 body: a field of the request is invalid (or the body is not JSON).

    Attributes:
        detail: Every offending field and its message, ``; ``-joined
            (``rows.0.pscore: Input should be greater than or equal to 1e-150``).
        errors: The same per field, machine-readable. Empty when the check needed the served
            model (``k`` over the catalogue size, unknown ids), which names the field in
            ``detail`` only.
    """

    errors: list[FieldError] = pydantic.Field(default_factory=list)


_TEXT = {"text/plain": {"schema": {"type": "string"}}}

#: The error answers of every path, for ``FastAPI(responses=...)``. Ray Serve's proxy answers
#: 503 itself, in plain text, when a deployment's queue is full or none of its replicas is up.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "A body that cannot be parsed"},
    403: {"model": ErrorResponse, "description": "Path outside the server's data root"},
    404: {"model": ErrorResponse, "description": "Unknown request id, or no experiment runs"},
    409: {
        "model": ErrorResponse,
        "description": (
            "Not configured on this server; or feedback for a request answered with other clicks"
        ),
    },
    413: {"model": ErrorResponse, "description": "Body, users, slate or rows over a limit"},
    422: {"model": ValidationErrorResponse, "description": "Invalid field"},
    503: {
        "model": ErrorResponse,
        "description": (
            "The served model fails its canary, or every scoring replica tried died during "
            "the request; or, in plain text from Ray Serve's proxy, a full queue or no replica "
            "up"
        ),
        "content": _TEXT,
    },
    504: {"model": ErrorResponse, "description": "The request's work passed its deadline"},
}
