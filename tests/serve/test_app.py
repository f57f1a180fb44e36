"""The Serve application on the test session's Ray cluster, called over real HTTP."""

import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from scipy import stats

from causalrec.methods import make_recommender
from causalrec.ope import OverlapWarning, evaluate
from causalrec.platform.runtime import free_port
from causalrec.platform.storage import read_logs, write_feature_tables
from causalrec.serve.app import build_app
from causalrec.serve.config import ServeAppArgs
from causalrec.simulators import write_logs

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def served(ray_session, small_simulator, tmp_path_factory):
    from ray import serve

    root = tmp_path_factory.mktemp("serve")
    write_logs(small_simulator, root / "data" / "logs", 5_000, seed=0)
    logs = read_logs(root / "data" / "logs")
    write_logs(small_simulator, root / "data" / "small", 3_000, seed=1)
    model = make_recommender("naive", epochs=2, seed=0, device="cpu").fit(logs)
    model.save(root / "model")
    write_feature_tables(root / "model", logs.user_table, logs.item_table)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = ServeAppArgs(
        model_dir=str(root / "model"), data_root=str(root / "data"),
        feedback_dir=str(root / "feedback"), feedback_flush_rows=1, max_evaluate_rows=4_000,
        max_body_bytes=150_000, max_users_per_request=64, max_slate_items=1_000,
        request_timeout_s=2.0,
    )  # fmt: skip
    serve.run(build_app(args), name="causalrec", route_prefix="/")
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    small = read_logs(root / "data" / "small")
    yield SimpleNamespace(client=client, root=root, logs=logs, small=small, model=model, port=port)
    client.close()
    serve.shutdown()


def test_health_and_model(served):
    health = served.client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    manifest = served.client.get("/model").json()
    assert manifest["method"] == "naive" and manifest["n_items"] == served.model.n_items_
    assert manifest["model_version"] == health.json()["model_version"]
    assert served.client.get("/openapi.json").json()["paths"].keys() >= {
        "/recommend",
        "/evaluate",
        "/feedback",
    }


def test_deterministic_top_k_with_propensity_one(served):
    users = [0, 5, 17]
    answer = served.client.post("/recommend", json={"user_id": users, "k": 4}).json()
    expected = np.argsort(-served.model.score(np.array(users)), axis=1, kind="stable")[:, :4]
    for row, items in zip(answer["recommendations"], expected, strict=True):
        assert row["items"] == items.tolist()
        assert row["propensities"] == [1.0] * 4
        np.testing.assert_allclose(
            row["scores"], served.model.score(np.array([row["user_id"]]))[0, items]
        )
    assert answer["request_id"] and answer["model_version"] and answer["feedback_logged"] is True


def test_epsilon_greedy_propensities_are_exact(served):
    n_items, eps = served.model.n_items_, 0.2
    answer = served.client.post(
        "/recommend", json={"user_id": 3, "k": 1, "exploration": "epsilon", "epsilon": eps}
    ).json()
    row = answer["recommendations"][0]
    top = int(np.argmax(served.model.score(np.array([3]))[0]))
    expected = 1 - eps + eps / n_items if row["items"][0] == top else eps / n_items
    assert row["propensities"][0] == pytest.approx(expected)


def test_sampled_frequencies_match_reported_propensities(served):
    user, temperature, draws = 7, 0.02, []
    reported = {}
    for _ in range(10):
        answer = served.client.post(
            "/recommend",
            json={
                "user_id": [user] * 60,
                "k": 1,
                "exploration": "softmax",
                "temperature": temperature,
            },
        ).json()
        for row in answer["recommendations"]:
            draws.append(row["items"][0])
            reported[row["items"][0]] = row["propensities"][0]
    exact = served.model.policy(1, "softmax", temperature=temperature).action_distribution(
        np.array([user])
    )[0]
    for item, propensity in reported.items():
        assert propensity == pytest.approx(exact[item])
    counts = np.bincount(draws, minlength=len(exact))
    expected = exact * len(draws)
    big = expected >= 5  # pool the rare items into one cell
    observed = np.r_[counts[big], counts[~big].sum()]
    pooled = np.r_[expected[big], expected[~big].sum()]
    keep = pooled > 0
    assert stats.chisquare(observed[keep], pooled[keep]).pvalue > 1e-3


def test_feedback_is_logged_in_the_causalrec_format(served):
    answer = served.client.post(
        "/recommend", json={"user_id": [2, 9], "k": 3, "exploration": "softmax"}
    ).json()
    clicks = [[0, 1, 0], [1, 0, 0]]
    reply = served.client.post(
        "/feedback", json={"request_id": answer["request_id"], "clicks": clicks}
    )
    assert reply.status_code == 200 and reply.json()["rows"] == 6
    logged = read_logs(served.root / "feedback")
    mine = logged.select(np.isin(logged.round_id, np.unique(logged.round_id)[-2:]))
    assert mine.item_id.tolist() == [i for r in answer["recommendations"] for i in r["items"]]
    assert mine.click.tolist() == [c for row in clicks for c in row]
    np.testing.assert_allclose(
        mine.pscore, [p for r in answer["recommendations"] for p in r["propensities"]]
    )
    np.testing.assert_allclose(mine.user_features, served.logs.user_table[np.repeat([2, 9], 3)])
    again = served.client.post(
        "/feedback", json={"request_id": answer["request_id"], "clicks": clicks}
    )  # a retry: answered as the first time, logged once
    assert again.status_code == 200, again.text
    assert again.json()["repeated"] is True and again.json()["rows"] == 6
    assert reply.json()["repeated"] is False
    other = served.client.post(
        "/feedback", json={"request_id": answer["request_id"], "clicks": [[1, 1, 1], [0, 0, 0]]}
    )
    assert other.status_code == 409 and "with other clicks" in other.json()["detail"], other.text
    assert read_logs(served.root / "feedback").n_rows == logged.n_rows  # flush_rows 1


def test_evaluate_matches_the_library(served):
    body = {"path": "small", "policy": "served", "estimators": ["ips", "snips", "dr"]}
    answer = served.client.post("/evaluate", json=body)
    assert answer.status_code == 200, answer.text
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)  # the server reports it in 'warning'
        library = evaluate(served.small, served.model.policy(1), ["ips", "snips", "dr"])
    got = {row["estimator"]: row for row in answer.json()["estimates"]}
    for row in library.itertuples():
        assert got[row.estimator]["estimate"] == pytest.approx(row.estimate, rel=1e-9)
        assert got[row.estimator]["low"] == pytest.approx(row.low, rel=1e-9)
    uniform = served.client.post(
        "/evaluate", json={"path": "small", "policy": "uniform", "estimators": ["ips"]}
    )
    assert uniform.status_code == 200, uniform.text
    assert uniform.json()["estimates"][0]["estimate"] == pytest.approx(
        evaluate(served.small, _uniform(served), ["ips"]).estimate.iloc[0]
    )


def _uniform(served):
    from causalrec.platform.policy import UniformPolicy

    return UniformPolicy(served.logs.n_items)


def test_evaluate_inline_rows(served):
    part = served.logs.select(np.arange(300))
    rows = [
        {"round_id": int(r), "user_id": int(u), "item_id": int(i), "click": int(c), "pscore": float(p),
         "user_features": f.tolist()}
        for r, u, i, c, p, f in zip(part.round_id, part.user_id, part.item_id, part.click, part.pscore, part.user_features, strict=True)
    ]  # fmt: skip
    answer = served.client.post("/evaluate", json={"rows": rows, "estimators": ["ips", "dr"]})
    assert answer.status_code == 200, answer.text
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        library = evaluate(part, served.model.policy(1), ["ips", "dr"])
    for got, row in zip(answer.json()["estimates"], library.itertuples(), strict=True):
        assert got["estimate"] == pytest.approx(row.estimate, rel=1e-6)


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/recommend", {"user_id": 1, "k": 0}, 422, "k"),
        ("/recommend", {"user_id": 1, "k": 1000}, 422, "k: 1000 exceeds the catalogue size"),
        ("/recommend", {"user_id": 100_000}, 422, "user_id: unknown user 100000"),
        ("/recommend", {"user_id": -1}, 422, "user_id"),
        ("/recommend", {"user_id": list(range(65))}, 413, "at most 64"),
        ("/recommend", {"user_id": list(range(64)), "k": 20}, 413, "asks for 1280 items"),
        (
            "/recommend",
            {"user_id": 1, "k": 21, "exploration": "softmax"},
            413,
            "k: 21 under softmax exploration; at most 20",
        ),
        ("/recommend", {"user_id": 1, "exploration": "greedy"}, 422, "exploration"),
        ("/recommend", {"user_id": 1, "epsilon": 2}, 422, "epsilon"),
        ("/evaluate", {"path": "/etc"}, 403, "outside the server's data root"),
        ("/evaluate", {"path": "logs", "policy": "oracle"}, 413, "more than 4000 rows"),
        (
            "/evaluate",
            {"rows": [{"round_id": 0, "user_id": 0, "item_id": 999, "click": 0, "pscore": 0.1}]},
            422,
            "item_id: unknown item 999",
        ),
        (
            "/evaluate",
            {"rows": [{"round_id": 0, "user_id": 0, "item_id": 1, "click": 2, "pscore": 0.1}]},
            422,
            "click",
        ),
        (
            "/evaluate",
            {"rows": [{"round_id": 0, "user_id": 0, "item_id": 1, "click": 0, "pscore": 0}]},
            422,
            "pscore",
        ),
        ("/evaluate", {"rows": [], "path": "logs"}, 422, "exactly one of"),
        ("/feedback", {"request_id": "nope", "clicks": [[0]]}, 404, "not pending"),
        ("/feedback", {"request_id": "nope", "clicks": [[3]]}, 422, "clicks"),
    ],
)
def test_bad_input_gets_a_clear_4xx(served, path, body, status, needle):
    answer = served.client.post(path, json=body)
    assert answer.status_code == status, answer.text
    assert needle in answer.text


def test_non_finite_numbers_and_large_bodies(served):
    nan = served.client.post(
        "/recommend", content=b'{"user_id": 1, "exploration": "softmax", "temperature": NaN}',
        headers={"content-type": "application/json"},
    )  # fmt: skip
    assert nan.status_code == 422 and "temperature" in nan.json()["detail"]
    big = served.client.post(
        "/evaluate", content=b"x" * 300_000, headers={"content-type": "application/json"}
    )
    assert big.status_code == 413

    def chunks():  # no Content-Length: httpx sends it chunked
        for _ in range(30):
            yield b"x" * 10_000

    chunked = served.client.post(
        "/evaluate", content=chunks(), headers={"content-type": "application/json"}
    )
    assert chunked.status_code == 413 and "exceeds the limit of 150000" in chunked.json()["detail"]
    within = served.client.post(
        "/recommend",
        content=iter([b'{"user_id": [1],', b' "k": 2}']),
        headers={"content-type": "application/json"},
    )
    assert within.status_code == 200 and len(within.json()["recommendations"][0]["items"]) == 2
    answer = served.client.post("/recommend", json={"user_id": [1], "k": 2}).json()
    wrong = served.client.post(
        "/feedback", json={"request_id": answer["request_id"], "clicks": [[0]]}
    )
    assert wrong.status_code == 422 and "expected 1 list(s) of 2 clicks" in wrong.text


def test_recommend_by_user_features_needs_a_two_tower_model(served, tmp_path):
    from ray import serve

    features = served.logs.user_table[[4, 8]].tolist()
    refused = served.client.post("/recommend", json={"user_features": features, "k": 2})
    assert refused.status_code == 422 and "two_tower" in refused.text
    towers = make_recommender("naive", backbone="two_tower", epochs=1, device="cpu").fit(
        served.logs
    )
    towers.save(tmp_path / "towers")
    args = ServeAppArgs(
        model_dir=str(tmp_path / "towers"), recommender_cpus=0.1, evaluator_cpus=0.1,
        ingress_cpus=0.05,
    )  # fmt: skip
    serve.run(build_app(args), name="towers", route_prefix="/towers")
    try:
        url = f"http://127.0.0.1:{served.port}/towers/recommend"
        answer = httpx.post(url, json={"user_features": features, "k": 3}, timeout=60)
        by_id = httpx.post(url, json={"user_id": [4, 8], "k": 3}, timeout=60)
        both = httpx.post(url, json={"user_id": 4, "user_features": features}, timeout=60)
    finally:
        serve.delete("towers")
    assert answer.status_code == 200, answer.text
    rows = answer.json()["recommendations"]
    assert [row["user_id"] for row in rows] == [None, None]
    assert [row["items"] for row in rows] == [
        row["items"] for row in by_id.json()["recommendations"]
    ]
    assert both.status_code == 422 and "exactly one of 'user_id' and 'user_features'" in both.text


def test_a_transformer_model_is_served_from_the_histories_in_the_request(served, tmp_path):
    """Slates from the request's histories (the model's own top-k of those histories), users
    it has never seen included (served, not logged), and 422s for histories it cannot read."""
    from ray import serve

    history = [{"items": [5, 6], "clicks": [1, 0]}, {"items": [], "clicks": []}]
    refused = served.client.post("/recommend", json={"user_id": [1, 2], "history": history})
    assert refused.status_code == 422 and "only backbone='transformer'" in refused.text
    model = make_recommender(
        "ips", backbone="transformer", history_length=4, dim=8, heads=2, layers=1, epochs=1,
        device="cpu", seed=0,
    ).fit(served.logs)  # fmt: skip
    model.save(tmp_path / "sasrec")
    write_feature_tables(tmp_path / "sasrec", served.logs.user_table, served.logs.item_table)
    args = ServeAppArgs(
        model_dir=str(tmp_path / "sasrec"), recommender_cpus=0.1, evaluator_cpus=0.1,
        ingress_cpus=0.05, feedback_dir=str(tmp_path / "feedback"),
    )  # fmt: skip
    serve.run(build_app(args), name="sasrec", route_prefix="/sasrec")
    unseen = model.n_users_ + 5
    try:
        url = f"http://127.0.0.1:{served.port}/sasrec/recommend"
        answer = httpx.post(url, json={"user_id": [1, 2], "k": 3, "history": history}, timeout=60)
        cold = httpx.post(url, json={"user_id": unseen, "k": 3, "history": history[:1]}, timeout=60)
        by_id = httpx.post(url, json={"user_id": unseen, "k": 3}, timeout=60)
        long = [{"items": [1, 2, 3, 4, 5], "clicks": [0, 0, 0, 0, 1]}]
        too_long = httpx.post(url, json={"user_id": 1, "history": long}, timeout=60)
        outside = [{"items": [model.n_items_], "clicks": [0]}]
        not_an_item = httpx.post(url, json={"user_id": 1, "history": outside}, timeout=60)
    finally:
        serve.delete("sasrec")
    assert answer.status_code == 200, answer.text
    items, clicks = np.array([[-1, 5, 6], [-1, -1, -1]]), np.array([[0, 1, 0], [0, 0, 0]])
    expected = model.score(np.array([1, 2]), history=(items, clicks))
    rows = answer.json()["recommendations"]
    for row, scores in zip(rows, expected, strict=True):
        assert row["items"] == np.argsort(-scores, kind="stable")[:3].tolist()
        np.testing.assert_allclose(row["scores"], np.sort(scores)[::-1][:3], rtol=1e-6)
    assert rows[0]["items"] != rows[1]["items"] or rows[0]["scores"] != rows[1]["scores"]
    assert answer.json()["feedback_logged"] is True
    assert cold.status_code == 200, cold.text
    assert cold.json()["recommendations"][0]["items"] == rows[0]["items"]
    assert cold.json()["feedback_logged"] is False
    assert by_id.status_code == 422 and f"unknown user {unseen}" in by_id.text
    assert too_long.status_code == 422
    assert "5 impressions; this model reads at most history_length = 4" in too_long.text
    assert not_an_item.status_code == 422 and "is not in the catalogue" in not_an_item.text


def test_overload_answers_503_not_500(served, tmp_path):
    from ray import serve

    args = ServeAppArgs(
        model_dir=str(served.root / "model"), max_ongoing_requests=1, max_queued_requests=1,
        recommender_cpus=0.1, evaluator_cpus=0.1, ingress_cpus=0.05,
    )  # fmt: skip
    serve.run(build_app(args), name="tight", route_prefix="/tight")
    # About a second of softmax work per request: within the deadline, long enough to queue.
    body = {"user_id": list(range(16)), "k": 10, "exploration": "softmax"}

    def call(_):
        with httpx.Client(timeout=60) as client:
            return client.post(
                f"http://127.0.0.1:{served.port}/tight/recommend", json=body
            ).status_code

    try:
        with ThreadPoolExecutor(max_workers=48) as pool:
            codes = list(pool.map(call, range(96)))
    finally:
        serve.delete("tight")
    assert set(codes) <= {200, 503}, codes
    assert 200 in codes and 503 in codes


def test_a_request_past_its_deadline_gets_504_while_healthz_answers(served):
    """48 users x softmax k = 20 over 40 items takes seconds; the deadline is 2 s.

    Scoring runs off the replica's event loop, so /healthz (which scores its canary on that
    loop) answers while the slow request works; the slow request ends with a 504 naming the
    deadline, not a 200 after it.
    """
    slow_done, outcome = threading.Event(), {}

    def slow():
        body = {"user_id": list(range(48)), "k": 20, "exploration": "softmax"}
        with httpx.Client(base_url=served.client.base_url, timeout=120) as client:
            outcome["slow"] = client.post("/recommend", json=body)
        slow_done.set()

    worker = threading.Thread(target=slow)
    worker.start()
    healthy_while_slow = 0
    try:
        for _ in range(200):  # bounded: at most 200 probes
            health = served.client.get("/healthz")
            if not slow_done.is_set() and health.status_code == 200:
                healthy_while_slow += 1
            if slow_done.wait(0.05):
                break
    finally:
        worker.join(timeout=120)
    answer = outcome["slow"]
    assert answer.status_code == 504, answer.text
    assert "request_timeout_s = 2.0" in answer.json()["detail"]
    assert healthy_while_slow >= 1
