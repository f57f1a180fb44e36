"""Request bodies: strict types, int64 ids, bounded paths, and the inputs a fuzzer found."""

import pydantic
import pytest

from causalrec.serve.schemas import EvaluateRequest, FeedbackRequest, RecommendRequest

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
    (EvaluateRequest, {"path": ""}, "path"),
    (EvaluateRequest, {"path": "logs\x00/x"}, "path"),
    (EvaluateRequest, {"path": "a" * 5_000}, "path"),
    (EvaluateRequest, {"path": "logs", "estimators": []}, "estimators"),
    (EvaluateRequest, {"rows": [dict(ROW, round_id=2**63)]}, "round_id"),
    (EvaluateRequest, {"rows": [dict(ROW, click=True)]}, "click"),
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
    request = RecommendRequest.model_validate({"user_features": [[1.0, 2]], "temperature": 2})
    assert request.temperature == 2.0
    evaluate = EvaluateRequest.model_validate(
        {"rows": [dict(ROW, pscore=1)], "estimators": ["ips"]}
    )
    assert evaluate.rows[0].pscore == 1.0
