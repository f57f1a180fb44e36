"""The closed loop through Ray Serve: HTTP traffic gives the in-process results, logged by /feedback."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from causalrec.loop.runner import SERVE_FEEDBACK_DIR, run_loop
from causalrec.loop.serving import ServingError, _check_served
from causalrec.platform import storage
from causalrec.platform.feedback import LoggedFeedback
from tests.loop.test_runner import MEASURED, _arm, tiny

pytestmark = pytest.mark.slow

NAIVE = {"method": "naive", "params": {"epochs": 1, "dim": 8}}
ARMS = [
    {"name": "naive", **NAIVE},
    {"name": "ips", "method": "ips", "params": {"epochs": 1, "dim": 8}},
    {"name": "explore", **NAIVE, "exploration": "epsilon", "epsilon": 0.3},
    {"name": "logger", "policy": "logging"},
    # A transformer arm: over HTTP each session's history goes with its request.
    {"name": "sasrec", "method": "ips", "params": {"epochs": 1, "dim": 8, "heads": 2,
     "layers": 1, "history_length": 4, "backbone": "transformer"}},
]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ray_session):
    """The same loop in process and over HTTP (users_per_request 64: several requests a step)."""
    out = tmp_path_factory.mktemp("loop-serving")
    in_process = run_loop(tiny(arms=ARMS), out / "in_process")
    http = run_loop(
        tiny(arms=ARMS, serving={"mode": "http", "users_per_request": 64}), out / "http"
    )
    return in_process, http


def test_http_serving_gives_the_in_process_results_for_deterministic_arms(runs):
    in_process, http = runs
    assert not in_process.failures and not http.failures
    columns = [*MEASURED, "ope_next", "ope_next_low", "ope_next_high"]
    for arm in ("naive", "ips", "logger", "sasrec"):
        pd.testing.assert_frame_equal(
            _arm(http.results, arm, columns), _arm(in_process.results, arm, columns),
            check_exact=True,
        )  # fmt: skip
    # The retrained models went through HTTP from generation 1 on; the logger never did.
    served = http.results.set_index(["arm", "generation"]).served_via
    retrained = ["naive", "ips", "explore", "sasrec"]
    assert (served.loc[retrained].xs(0, level="generation") == "in_process").all()
    for arm in retrained:
        assert (served.loc[arm].iloc[1:] == "http").all()
    assert (served.loc["logger"] == "in_process").all()
    assert (in_process.results.served_via == "in_process").all()


def test_the_servers_feedback_log_holds_every_served_impression(runs):
    _, http = runs
    over_http = http.results[http.results.served_via == "http"]
    assert (over_http.served_rows == over_http.impressions).all()
    # Each step's users still in session ask in requests of at most 64 users.
    for row in over_http.itertuples():
        gen = http.out / "runs" / "seed=0" / row.arm / f"gen-{row.generation:03d}" / "logs"
        log = storage.read_logs(gen)
        users_per_step = np.bincount(log.step[log.position == 0])
        assert row.requests == np.ceil(users_per_step / 64).sum()
    log = storage.read_logs(http.out / SERVE_FEEDBACK_DIR)
    assert log.n_rows == over_http.impressions.sum()
    # The exploring arm's logged propensities are the server's ε-greedy ones: below 1 and mixed.
    explore = http.results[(http.results.arm == "explore") & (http.results.served_via == "http")]
    parts = explore.served_parts.str.split().sum()
    served = LoggedFeedback.concat(
        [storage.read_logs(http.out / SERVE_FEEDBACK_DIR / "logs" / part) for part in parts]
    )
    assert served.pscore.max() < 1 and len(np.unique(np.round(served.pscore, 12))) >= 2


def test_a_server_log_that_differs_from_the_generation_is_caught(runs, tmp_path):
    _, http = runs
    directory = http.out / "runs" / "seed=0" / "naive" / "gen-001" / "logs"
    log = storage.read_logs(directory)
    _check_served(sorted(directory.glob("part-*.parquet")), log)  # the same rows pass
    changed = dataclasses.replace(log, click=1 - log.click)
    with pytest.raises(ServingError, match="'click' from row 0"):
        _check_served(sorted(directory.glob("part-*.parquet")), changed)
    with pytest.raises(ServingError, match="logged no rows"):
        _check_served([], log)
