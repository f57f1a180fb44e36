"""A simulated A/B test, and whether offline evaluation predicted its result.

Visits are drawn from the simulator (users uniformly, with repeats), each user is assigned to an
arm by a salted hash of its id (:class:`~causalrec.serve.routing.ExperimentSplit`, the same
function the Serve ingress routes with), each visit is served by its arm — in-process, or through
a live Serve endpoint (``url``) — and clicks come from the simulator. The result compares:

* online: each arm's clicks per visit, the lift with a user-clustered interval, p-value and
  minimum detectable effect (:mod:`~causalrec.abtest.statistics`);
* exact: each arm's true policy value from the simulator, and their difference;
* offline: the off-policy estimate of the same lift from historical logs (paired DR by default,
  :meth:`~causalrec.ope.OfflineEvaluator.difference`), and whether offline and online agree
  (same sign; online lift inside the offline interval).

Outputs (``out``, written atomically): ``result.json``; ``assignment.parquet`` (user, bucket,
arm of every user that visited); ``a/`` and ``b/``, each arm's traffic as causalrec logs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from causalrec.abtest.arms import Arm
from causalrec.abtest.statistics import arm_outcome, compare_arms
from causalrec.abtest.traffic import (
    ServedSlates,
    check_server,
    send_feedback,
    serve_http,
    serve_in_process,
)
from causalrec.ope import OfflineEvaluator
from causalrec.platform import storage
from causalrec.platform.errors import ConfigError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.units import CLICKS_PER_ROUND, check_same_unit
from causalrec.serve.routing import ARMS, ExperimentSplit
from causalrec.simulators.logs import log_metadata
from causalrec.simulators.scm import ConfoundedRecSimulator

__all__ = ["ABTestResult", "run_abtest"]


@dataclass(frozen=True)
class ABTestResult:
    """An experiment's outcome (the content of ``result.json``).

    Attributes:
        users: Visits drawn.
        alpha: 1 - confidence level of the intervals.
        seed: Seed of the draws.
        mode: ``in-process`` or ``http``.
        arms: Per arm: label, spec, version, exposure counts, clicks per visit, exact value.
        online: The online lift (:class:`~causalrec.abtest.statistics.LiftEstimate` fields).
        exact_lift: True value of ``b`` minus that of ``a``.
        offline: The offline estimate of the lift (``estimator``, ``lift``, ``low``, ``high``),
            ``None`` without historical logs.
        agreement: ``same_sign`` and ``online_in_offline_interval``, ``None`` without offline.
        split: Salt and share of the assignment.
        feedback_rows: Rows the server logged through ``/feedback`` (HTTP mode).
        identical_arms: Both arms serve the same model or policy (an A/A test: the exact and
            offline lifts are 0 by construction, so "same sign" cannot hold).
    """

    users: int
    alpha: float
    seed: int | None
    mode: str
    arms: dict[str, dict[str, Any]]
    online: dict[str, float]
    exact_lift: float
    offline: dict[str, Any] | None
    agreement: dict[str, bool] | None
    split: dict[str, Any]
    feedback_rows: int = 0
    identical_arms: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dataclasses.asdict(self)


def run_abtest(
    arms: dict[str, Arm],
    simulator: ConfoundedRecSimulator,
    n_users: int,
    out: str | Path,
    *,
    logs: LoggedFeedback | None = None,
    url: str | None = None,
    split: ExperimentSplit | None = None,
    seed: int | None = 0,
    alpha: float = 0.05,
    offline_estimator: str = "dr",
    overwrite: bool = False,
    progress: bool = False,
) -> ABTestResult:
    """Run the experiment ``arms["a"]`` vs. ``arms["b"]`` (see the module docstring).

    Args:
        arms: ``{"a": control, "b": treatment}``.
        simulator: The world (users, clicks, exact values).
        n_users: Visits to draw (users uniformly at random, with repeats).
        out: Output directory (refused when not empty, unless ``overwrite``).
        logs: Historical logs for the offline prediction (``None``: no prediction).
        url: A Serve application running the experiment (``None``: in-process).
        split: The assignment in-process (default salt, 50/50); with ``url`` the server's.
        seed: Seed of the users, the arms' randomness and the clicks.
        alpha: 1 - confidence level.
        offline_estimator: Estimator of the offline lift (``dr``, ``ips`` or ``dm``).
        overwrite: Replace a non-empty ``out``.
        progress: Show progress of HTTP traffic.

    Raises:
        ConfigError: Bad sizes, or a server that does not serve ``arms`` (before any traffic).
        OutputExistsError: ``out`` holds a previous run and ``overwrite`` is false.
    """
    if n_users < 4:
        raise ConfigError(f"--users must be >= 4 (two visits per arm at least); got {n_users}")
    storage.check_output_dir(out, overwrite=overwrite)
    if url is not None:
        split = check_server(url, arms)
    split = split or ExperimentSplit()
    users_seed, policy_seed, click_seed = np.random.SeedSequence(seed).spawn(3)
    users = simulator.sample_users(n_users, np.random.default_rng(users_seed))
    if url is None:
        served = serve_in_process(arms, users, split, np.random.default_rng(policy_seed))
    else:
        served = serve_http(url, users, simulator.slate_size, progress=progress)
        expected_arms = split.arms(users)
        if not (served.arm == expected_arms).all():
            row = int(np.flatnonzero(served.arm != expected_arms)[0])
            raise ConfigError(
                f"--url: the server put user {users[row]} in arm {served.arm[row]!r}; its own "
                f"split (salt {split.salt!r}) says {expected_arms[row]!r}"
            )
    clicks, expected = simulator.sample_clicks(
        users, served.actions, np.random.default_rng(click_seed)
    )
    feedback_rows = send_feedback(url, served, clicks) if url is not None else 0
    per_arm, outcomes = {}, {}
    for label in ARMS:
        rows = served.arm == label
        outcomes[label] = arm_outcome(users[rows], clicks[rows])
        arm = arms[label]
        per_arm[label] = {
            "label": label,
            "spec": arm.spec,
            "version": arm.version,
            **{k: v for k, v in outcomes[label].to_dict().items() if k != "variance"},
            "exact_value": simulator.policy_value(arm.policy),
        }
    online = compare_arms(outcomes["a"], outcomes["b"], alpha=alpha)
    offline, agreement = None, None
    if logs is not None:
        difference = OfflineEvaluator(logs, [offline_estimator]).difference(
            arms["a"].policy, arms["b"].policy, offline_estimator, alpha=alpha
        )
        # Online lifts are clicks per visit (one visit is one round); refuse anything else.
        check_same_unit("the offline lift", difference["unit"], CLICKS_PER_ROUND)
        offline = {
            "estimator": offline_estimator,
            "lift": difference["estimate"],
            "low": difference["low"],
            "high": difference["high"],
            "unit": difference["unit"],
        }
        agreement = {
            "same_sign": bool(np.sign(offline["lift"]) == np.sign(online.lift)),
            "online_in_offline_interval": bool(offline["low"] <= online.lift <= offline["high"]),
        }
    result = ABTestResult(
        users=n_users,
        alpha=alpha,
        seed=seed,
        mode="in-process" if url is None else "http",
        arms=per_arm,
        online=online.to_dict(),
        exact_lift=per_arm["b"]["exact_value"] - per_arm["a"]["exact_value"],
        offline=offline,
        agreement=agreement,
        split={"salt": split.salt, "share_b": split.share_b},
        feedback_rows=feedback_rows,
        identical_arms=arms["a"].version == arms["b"].version,
    )
    _write(out, overwrite, result, arms, simulator, users, served, clicks, expected, split, seed)
    return result


def _write(out, overwrite, result, arms, simulator, users, served, clicks, expected, split, seed):
    """``result.json``, ``assignment.parquet`` and each arm's logs, swapped in atomically."""
    with storage.atomic_output_dir(out, overwrite=overwrite) as staging:
        visited = np.unique(users)
        storage.write_table_atomic(
            staging / "assignment.parquet",
            pa.table(
                {
                    "user_id": visited,
                    "bucket": split.buckets(visited),
                    "arm": split.arms(visited),
                }
            ),
        )
        for label in ARMS:
            rows = np.flatnonzero(served.arm == label)
            chunk = _arm_log(simulator, arms[label], users[rows], served, rows, clicks, expected)
            metadata = {
                **log_metadata(simulator, arms[label].policy, len(rows), seed, 0.0),
                "abtest": {"arm": label, "spec": arms[label].spec, **result.split},
            }
            with storage.LogWriter(
                staging / label / storage.LOGS_SUBDIR,
                n_user_features=simulator.user_features.shape[1],
                metadata=metadata,
            ) as writer:
                writer.write(dataclasses.replace(chunk, metadata=metadata))
            storage.write_feature_tables(
                staging / label,
                simulator.user_features,
                simulator.item_features,
                simulator.popularity,
            )
        storage.write_json_atomic(staging / "result.json", result.to_dict())


def _arm_log(
    simulator: ConfoundedRecSimulator,
    arm: Arm,
    users: np.ndarray,
    served: ServedSlates,
    rows,
    clicks,
    expected,
) -> LoggedFeedback:
    """One arm's visits in the causalrec log format (rounds numbered from 0)."""
    return LoggedFeedback.from_slates(
        users=users,
        slates=served.actions[rows],
        clicks=clicks[rows],
        pscore=served.pscore[rows],
        pscore_prefix=served.pscore_prefix[rows],
        user_features=simulator.user_features_f32[users],
        policy=f"{arm.label}/{arm.policy.name}",
        n_items=simulator.n_items,
        expected_reward=expected[rows],
    )
