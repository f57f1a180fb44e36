"""The recommender replica's drawing, without Ray: propensities a server can log."""

import time

import numpy as np
import pytest

from causalrec.methods import make_recommender
from causalrec.platform import plackett_luce
from causalrec.platform.policy import Exploration, LogitScorer
from causalrec.platform.storage import read_logs
from causalrec.serve.recommender import (
    DRAW_CHUNK_USERS,
    DeadlineExceededError,
    RecommenderCore,
    RequestLimits,
    RowScorer,
    UnhealthyModelError,
    history_arrays,
    propensity_kinds,
    request_problem,
    served_policy,
)
from causalrec.simulators import write_logs


def test_softmax_slates_over_600_items_never_serve_a_zero_propensity():
    """The issue's reproduction: k = 3 over 600 items served propensity 0 in 2 of 320 slates."""
    rows = np.random.default_rng(0).random((320, 600))  # click probabilities of 320 users
    policy = served_policy(RowScorer(rows), 3, Exploration("softmax", temperature=0.1))
    sample = policy.sample(np.arange(320), np.random.default_rng(1))
    assert (sample.marginal_pscore > 0).all()
    assert propensity_kinds(policy) == ["exact", "exact", "estimated"]
    # Positions 1 and 2 are exact; position 3 within its reported error of enumeration.
    base = policy.softmax_probabilities(np.arange(5))
    for user in range(5):
        exact = plackett_luce.exact_marginal(base[user], 2)[sample.actions[user, 2]]
        assert abs(sample.marginal_pscore[user, 2] / exact - 1) < 4.5 * policy.target_relative_se
        first = plackett_luce.exact_marginal(base[user], 1)[sample.actions[user, 1]]
        assert sample.marginal_pscore[user, 1] == first


def test_softmax_runs_on_the_log_odds_of_the_scores():
    rows = np.array([[0.9, 0.5, 0.1]])
    policy = served_policy(RowScorer(rows), 1, Exploration("softmax", temperature=1.0))
    logits = np.log(rows / (1 - rows))
    expected = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(policy.action_distribution(np.array([0])), expected, rtol=1e-12)
    assert isinstance(policy.scorer, LogitScorer)
    assert propensity_kinds(served_policy(RowScorer(rows), 2, Exploration("epsilon"))) == [
        "exact",
        "exact",
    ]


@pytest.mark.parametrize(
    ("users", "k", "exploration", "expected"),
    [
        ([0, 1], 3, "none", None),
        (list(range(9)), 3, "none", (413, "user_id: 9 users; at most 8")),
        ([0, 1], 3, "softmax", None),
        ([0, 1], 4, "softmax", (413, "k: 4 under softmax exploration; at most 3")),
        ([0, 1], 4, "epsilon", None),  # the softmax bound is softmax's alone
        ([0] * 8, 5, "none", (413, "user_id, k: 8 users x k = 5 asks for 40 items; at most 30")),
        ([0, 50], 3, "none", (422, "user_id: unknown user 50")),
        ([0], 11, "none", (422, "k: 11 exceeds the catalogue size 10")),
    ],
)
def test_request_problem_bounds_the_work_before_any_is_done(users, k, exploration, expected):
    limits = RequestLimits(max_users=8, max_slate_items=30, max_softmax_k=3)
    problem = request_problem(users, k, 50, 10, exploration=exploration, limits=limits)
    if expected is None:
        assert problem is None
    else:
        assert problem[0] == expected[0] and expected[1] in problem[1]


@pytest.mark.parametrize(
    ("users", "history", "history_length", "expected"),
    [
        ([0, 1], [{"items": [1, 2], "clicks": [1, 0]}, {"items": [], "clicks": []}], 3, None),
        ([0], [{"items": [1, 2, 3], "clicks": [0, 0, 0]}], 3, None),
        ([0], [{"items": [1, 2, 3, 4], "clicks": [0, 0, 0, 0]}], 3,
         "history[0]: 4 impressions; this model reads at most history_length = 3"),
        ([0, 1], [{"items": [], "clicks": []}, {"items": [10], "clicks": [1]}], 3,
         "history[1]: item 10 is not in the catalogue (0..9)"),
        ([0], [{"items": [1], "clicks": [1]}], None,
         "history: only backbone='transformer' models read histories; this model uses 'mf'"),
        ([70, 0], [{"items": [1], "clicks": [1]}, {"items": [], "clicks": []}], 3, None),
    ],
)  # fmt: skip
def test_request_problem_checks_histories_against_the_model(
    users, history, history_length, expected
):
    """A history longer than the model reads, or naming items outside the catalogue, is a 422;
    with a history, a user id the model has never seen is servable (the history is its state)."""
    problem = request_problem(
        users, 2, 50, 10, limits=RequestLimits(), history=history, history_length=history_length
    )
    if expected is None:
        assert problem is None
    else:
        assert problem == (422, problem[1]) and expected in problem[1], problem


def test_history_arrays_right_align_each_history_oldest_first():
    items, clicks = history_arrays(
        [{"items": [4, 5, 6], "clicks": [0, 1, 0]}, {"items": [7], "clicks": [1]},
         {"items": [], "clicks": []}]
    )  # fmt: skip
    np.testing.assert_array_equal(items, [[4, 5, 6], [-1, -1, 7], [-1, -1, -1]])
    np.testing.assert_array_equal(clicks, [[0, 1, 0], [0, 0, 1], [0, 0, 0]])
    assert history_arrays([{"items": [], "clicks": []}])[0].shape == (1, 1)


def test_feature_rows_count_as_users():
    limits = RequestLimits(max_users=2)
    status, detail = request_problem(None, 1, 5, 5, n_rows=3, limits=limits)
    assert status == 413 and detail.startswith("user_features: 3 users")


@pytest.fixture(scope="module")
def core(small_simulator, tmp_path_factory):
    root = tmp_path_factory.mktemp("core")
    write_logs(small_simulator, root / "logs", 1_000, seed=0)
    model = make_recommender("naive", epochs=1, seed=0, device="cpu").fit(read_logs(root / "logs"))
    model.save(root / "model")
    return RecommenderCore(str(root / "model"))


def test_draw_stops_at_its_deadline_between_chunks(core):
    rows = core.model.score(np.arange(DRAW_CHUNK_USERS * 3))
    request = {"k": 2, "exploration": "none", "epsilon": 0.1, "temperature": 1.0}
    served = core.draw(rows, request, deadline=time.monotonic() + 60)
    assert served["items"].shape == (DRAW_CHUNK_USERS * 3, 2)
    with pytest.raises(DeadlineExceededError, match="after 0 of 48 users"):
        core.draw(rows, request, deadline=time.monotonic() - 1)


def test_the_canary_fails_on_a_model_that_scores_nan(core):
    import torch

    core.probe()  # a healthy model passes
    saved = {name: tensor.clone() for name, tensor in core.model.network_.state_dict().items()}
    try:
        with torch.no_grad():
            for parameter in core.model.network_.parameters():
                parameter.fill_(float("nan"))
        with pytest.raises(UnhealthyModelError, match="non-finite"):
            core.probe()
    finally:
        core.model.network_.load_state_dict(saved)
    core.probe()


def test_a_softmax_too_peaked_for_float64_is_refused_naming_temperature(core):
    """Later positions' marginals underflowed to 0 or NaN and were served as propensities."""
    from causalrec.platform.errors import DataError

    rows = core.model.score(np.arange(4))
    request = {"k": 5, "exploration": "softmax", "epsilon": 0.1, "temperature": 1e-6}
    with pytest.raises(DataError, match="temperature: 1e-06 is too low"):
        core.draw(rows, request)
    served = core.draw(rows, {**request, "temperature": 1.0})
    assert (served["propensities"] > 0).all() and np.isfinite(served["propensities"]).all()


def test_a_cheap_request_is_served_on_the_event_loop_and_a_costly_one_on_the_scoring_thread(core):
    """A request of at most INLINE_MAX_SCORES scores (and no softmax past position 1) does not
    wait for the scoring thread; any other request does (its work stays off the event loop)."""
    import asyncio
    import threading

    from causalrec.serve.scoring import INLINE_MAX_SCORES, Scorer

    scorer = Scorer(core.model_dir, 0, max_batch_size=1, batch_wait_timeout_s=0.0)

    async def unbatched(users):  # @serve.batch needs a replica; the thread hop is the same
        (rows,) = await scorer._off_loop(scorer.core.score_batch, [users])
        return rows

    scorer._score_ids = unbatched
    fits = INLINE_MAX_SCORES // scorer.core.n_items
    base = {"k": 2, "epsilon": 0.1, "temperature": 1.0, "user_features": None}
    cheap = [
        {**base, "users": list(range(fits)), "exploration": "none"},
        {**base, "users": [0], "exploration": "epsilon"},
        {**base, "users": [0], "exploration": "softmax", "k": 1},
    ]
    costly = [
        {**base, "users": [0], "exploration": "softmax"},  # k = 2: Plackett-Luce marginals
        {**base, "users": list(range(fits + 1)), "exploration": "none"},
    ]
    release = threading.Event()

    async def main():
        blocker = scorer._worker.submit(release.wait, 30)  # the scoring thread is busy
        try:
            for request in cheap:
                served = await asyncio.wait_for(scorer.recommend(request, 10), timeout=5)
                assert served["items"].shape == (len(request["users"]), request["k"])
            for request in costly:
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(scorer.recommend(request, 10), timeout=0.5)
        finally:
            release.set()
            blocker.result()

    asyncio.run(main())
