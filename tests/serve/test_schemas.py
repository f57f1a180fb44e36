"""Request and error bodies: strict types, int64 ids, bounded paths, a pscore floor, the inputs
a fuzzer found, and error answers that match the OpenAPI."""

import asyncio
import json

import pydantic
import pytest

from causalrec.serve.schemas import (
    ERROR_RESPONSES,
    MIN_PSCORE,
    ErrorResponse,
    EvaluateRequest,
    FeedbackRequest,
    RecommendRequest,
    ValidationErrorResponse,
)

ROW = {"round_id": 0, "user_id": 1, "item_id": 2, "click": 1, "pscore": 0.5}

# fmt: off
BAD = [
    (RecommendRequest, {"user_id": True}, "user_id"),
    (RecommendRequest, {"user_id": "3"}, "user_id"),
    (RecommendRequest, {"user_id": 3.0}, "user_id"),
    (RecommendRequest, {"user_id": [1, True]}, "user_id"),
    (RecommendRequest, {"user_id": 2**63}, "user ids must be in"),
    (RecommendRequest, {"user_id": 1, "k": "3"}, "k"),
    (RecommendRequest, {"user_features": [[], [1.0, 2.0]]}, "every row must hold the same number"),
    (RecommendRequest, {"user_features": [[]]}, "every row must hold the same number"),
    (RecommendRequest, {"user_id": 1, "history": [{"items": [1, 2], "clicks": [0]}]}, "2 items and 1 clicks"),
    (RecommendRequest, {"user_id": 1, "history": [{"items": [1], "clicks": [2]}]}, r"history\.0\.clicks\.0"),
    (RecommendRequest, {"user_id": 1, "history": [{"items": [1], "clicks": [True]}]}, r"history\.0\.clicks\.0"),
    (RecommendRequest, {"user_id": 1, "history": [{"items": [-1], "clicks": [0]}]}, r"item ids must be in \[0, 2\*\*63 - 1\]; got -1"),
    (RecommendRequest, {"user_id": [1, 2], "history": [{"items": [], "clicks": []}]}, "1 histories for 2 user ids"),
    (RecommendRequest, {"user_id": 1, "history": {"items": [], "clicks": []}}, r"history\n.*valid list"),
    (RecommendRequest, {"user_features": [[1.0]], "history": [{"items": [], "clicks": []}]}, "give it with user_id"),
    (EvaluateRequest, {"path": ""}, "path"),
    (EvaluateRequest, {"path": "logs\x00/x"}, "path"),
    (EvaluateRequest, {"path": "a" * 5_000}, "path"),
    (EvaluateRequest, {"path": "logs", "estimators": []}, "estimators"),
    (EvaluateRequest, {"rows": [dict(ROW, round_id=2**63)]}, "round_id"),
    (EvaluateRequest, {"rows": [dict(ROW, click=True)]}, "click"),
    # Inline pscores below the floor: their weights' squares overflow float64 (a fuzzer's 1e-300).
    (EvaluateRequest, {"rows": [dict(ROW, pscore=1e-300)]}, r"rows\.0\.pscore\n.*pscore must be in \[1e-150, 1\].*; got 1e-300"),
    (EvaluateRequest, {"rows": [dict(ROW, pscore=5e-324)]}, r"rows\.0\.pscore\n.*pscore must be in \[1e-150, 1\].*; got 4.94066e-324"),
    (EvaluateRequest, {"rows": [ROW, dict(ROW, pscore=1e-151)]}, r"rows\.1\.pscore\n.*pscore must be in \[1e-150, 1\].*; got 1e-151"),
    (EvaluateRequest, {"rows": [dict(ROW, pscore=0.0)]}, r"rows\.0\.pscore"),
    (EvaluateRequest, {"rows": [dict(ROW, pscore=1.5)]}, r"rows\.0\.pscore\n.*less than or equal to 1"),
    (FeedbackRequest, {"request_id": "r", "clicks": [[True, 0]]}, "clicks"),
]
# fmt: on


@pytest.mark.parametrize(("model", "body", "field"), BAD)
def test_bad_bodies_are_refused_naming_the_field(model, body, field):
    with pytest.raises(pydantic.ValidationError, match=field):
        model.model_validate(body)


def test_good_bodies_pass_and_floats_take_integers():
    assert RecommendRequest.model_validate({"user_id": [0, 2**63 - 1], "k": 2}).users == [
        0,
        2**63 - 1,
    ]
    request = RecommendRequest.model_validate(
        {
            "user_id": [3, 4],
            "history": [{"items": [5, 6], "clicks": [1, 0]}, {"items": [], "clicks": []}],
        }
    )
    assert request.histories == [{"items": [5, 6], "clicks": [1, 0]}, {"items": [], "clicks": []}]
    assert RecommendRequest.model_validate({"user_id": 3}).histories is None
    request = RecommendRequest.model_validate({"user_features": [[1.0, 2]], "temperature": 2})
    assert request.temperature == 2.0
    evaluate = EvaluateRequest.model_validate(
        {"rows": [dict(ROW, pscore=1)], "estimators": ["ips"]}
    )
    assert evaluate.rows[0].pscore == 1.0
    assert (
        EvaluateRequest.model_validate({"rows": [dict(ROW, pscore=MIN_PSCORE)]}).rows[0].pscore
        == 1e-150
    )


def test_every_error_status_is_documented_with_its_body():
    assert set(ERROR_RESPONSES) == {400, 403, 404, 409, 413, 422, 503, 504}
    assert ERROR_RESPONSES[422]["model"] is ValidationErrorResponse
    for status, response in ERROR_RESPONSES.items():
        if status != 422:
            assert response["model"] is ErrorResponse, status
    # Serve's proxy answers 503 in plain text itself (full queue, no replica).
    assert "text/plain" in ERROR_RESPONSES[503]["content"]


def test_the_openapi_documents_the_error_bodies_on_every_path():
    from causalrec.serve.app import api

    document = api.openapi()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    operations = [op for methods in document["paths"].values() for op in methods.values()]
    assert len(operations) >= 6
    for operation in operations:
        responses = operation["responses"]
        for status in ERROR_RESPONSES:
            model = "ValidationErrorResponse" if status == 422 else "ErrorResponse"
            schema = responses[str(status)]["content"]["application/json"]["schema"]
            assert schema == {"$ref": f"#/components/schemas/{model}"}, (status, schema)


def _invalid_answer(model: type[pydantic.BaseModel], body: dict):
    from fastapi.exceptions import RequestValidationError

    from causalrec.serve.app import _invalid_request

    with pytest.raises(pydantic.ValidationError) as caught:
        model.model_validate(body)
    errors = [{**error, "loc": ("body", *error["loc"])} for error in caught.value.errors()]
    return asyncio.run(_invalid_request(None, RequestValidationError(errors)))


@pytest.mark.parametrize(
    ("model", "body", "detail", "loc"),
    [
        (
            RecommendRequest,
            {"user_id": 1, "k": 0},
            "k: Input should be greater than or equal to 1",
            ["body", "k"],
        ),
        (
            EvaluateRequest,
            {"rows": [dict(ROW, pscore=1e-300)]},
            "rows.0.pscore: Value error, pscore must be in [1e-150, 1] (importance weights 1 / pscore and their squares must stay finite); got 1e-300",
            ["body", "rows", 0, "pscore"],
        ),
        (
            FeedbackRequest,
            {"request_id": 3, "clicks": [[0]]},
            "request_id: Input should be a valid string",
            ["body", "request_id"],
        ),
    ],
)
def test_a_422_names_each_field_and_matches_its_documented_model(model, body, detail, loc):
    answer = _invalid_answer(model, body)
    assert answer.status_code == 422
    parsed = ValidationErrorResponse.model_validate(json.loads(answer.body))
    assert parsed.detail == detail
    assert [error.loc for error in parsed.errors] == [loc]
    assert set(json.loads(answer.body)) == {"detail", "errors"}


def test_errors_raised_in_deployments_answer_an_error_response_with_their_status():
    from causalrec.platform.errors import DataError, ForbiddenPathError
    from causalrec.serve.app import _error
    from causalrec.serve.evaluator import TooLargeError
    from causalrec.serve.feedback import FeedbackConflictError, UnknownRequestError
    from causalrec.serve.recommender import DeadlineExceededError, UnhealthyModelError

    table = [
        (ForbiddenPathError("path: '/etc' is outside the server's data root"), 403),
        (UnknownRequestError("request_id: 'r' is not pending"), 404),
        (FeedbackConflictError("request_id: 'r' was answered already, with other clicks"), 409),
        (TooLargeError("rows: 5 rows; at most 4 per request"), 413),
        (DataError("rows.0.item_id: unknown item 999"), 422),
        (UnhealthyModelError("the canary user's scores are not finite"), 503),
        (DeadlineExceededError("the request passed its deadline"), 504),
    ]
    for exc, status in table:
        answer = _error(exc)
        assert answer.status_code == status, exc
        assert json.loads(answer.body) == ErrorResponse(detail=str(exc)).model_dump()
        assert status in ERROR_RESPONSES
