"""Off-policy evaluation of a policy over whole sessions, from a session log.

:func:`evaluate_sessions` is the sequential counterpart of :func:`causalrec.ope.evaluate`: it
rebuilds the logged sessions (:class:`~causalrec.ope.sessions.LoggedSessions`), asks the target
policy for the probability of every logged step given that step's history, fits a Q model by
fitted Q evaluation when a doubly robust estimator needs one, and reports each estimator's value
in clicks per session with an interval over sessions.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import pandas as pd

from causalrec.ope.evaluate import OverlapWarning
from causalrec.ope.fqe import FittedQEvaluation
from causalrec.ope.policy_inputs import POOR_ESS_SHARE
from causalrec.ope.sequential import (
    PDIS,
    WDR,
    WPDIS,
    SequentialDR,
    SequentialEstimator,
    SequentialInputs,
    sequential_interval,
)
from causalrec.ope.sessions import LoggedSessions
from causalrec.platform.errors import CausalRecError, ConfigError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.policy import Policy
from causalrec.platform.session import SessionPolicy, as_session_policy
from causalrec.platform.units import CLICKS_PER_SESSION
from causalrec.platform.validation import unknown_name_error

__all__ = ["SEQUENTIAL_ESTIMATORS", "evaluate_sessions", "session_log_shape"]

#: The sequential estimators by name.
SEQUENTIAL_ESTIMATORS: dict[str, type[SequentialEstimator]] = {
    "pdis": PDIS,
    "wpdis": WPDIS,
    "dr": SequentialDR,
    "wdr": WDR,
}
#: History steps of a context when the log does not say (the simulator's default window).
DEFAULT_WINDOW = 10


def session_log_shape(logs: LoggedFeedback) -> tuple[int | None, int]:
    """``(horizon, window)`` recorded in a (simulated) session log's metadata, with defaults."""
    simulator = logs.metadata.get("simulator") or {}
    horizon = logs.metadata.get("session_length", simulator.get("session_length"))
    window = simulator.get("history_window", DEFAULT_WINDOW)
    return (None if horizon is None else int(horizon)), int(window)


def _parse(estimators: str | Sequence[str] | None, gamma: float) -> list[SequentialEstimator]:
    if estimators is None:
        names = list(SEQUENTIAL_ESTIMATORS)
    elif isinstance(estimators, str):
        names = [name.strip() for name in estimators.split(",") if name.strip()]
    else:
        names = list(estimators)
    if not names:
        raise ConfigError(
            "estimators must name at least one of " + ", ".join(SEQUENTIAL_ESTIMATORS)
        )
    for name in names:
        if name not in SEQUENTIAL_ESTIMATORS:
            raise unknown_name_error("sequential estimator", name, SEQUENTIAL_ESTIMATORS)
    return [SEQUENTIAL_ESTIMATORS[name](gamma=gamma) for name in names]


def evaluate_sessions(
    logs: LoggedFeedback,
    policy: Policy | SessionPolicy,
    estimators: str | Sequence[str] | None = None,
    *,
    q_model: FittedQEvaluation | None = None,
    horizon: int | None = None,
    window: int | None = None,
    gamma: float = 1.0,
    alpha: float = 0.05,
    interval: str = "normal",
    n_bootstrap: int = 1000,
    seed: int | None = 0,
    warn: bool = True,
) -> pd.DataFrame:
    """Estimate the clicks per session of ``policy`` from a session log.

    Args:
        logs: A session log (``causalrec simulate --sessions``); clicks are the reward.
        policy: The target policy: a plain policy, or a session policy that reads histories.
        estimators: Names among ``pdis``, ``wpdis``, ``dr``, ``wdr`` (default: all four).
        q_model: The Q model of ``dr`` and ``wdr``; default :class:`FittedQEvaluation` with
            ``gamma``.
        horizon: T; defaults to the log's ``session_length`` (else its largest step + 1).
        window: L, the history steps a context holds; defaults to the log's world's.
        gamma: Discount (1: clicks per session).
        alpha: 1 − the coverage of the intervals.
        interval: ``normal`` (delta method over sessions) or ``bootstrap`` (sessions resampled).
        n_bootstrap: Bootstrap replicates.
        seed: Seed of the bootstrap.
        warn: Emit an :class:`~causalrec.ope.evaluate.OverlapWarning` when the sessions' final
            cumulative weights keep an effective sample of under 1% of the sessions (the
            ``warning`` column says it either way).

    Returns:
        One row per estimator: ``estimator``, ``estimate``, ``low``, ``high``, ``unit``
        (``clicks_per_session``), ``n_sessions``, ``horizon``, ``ess`` and ``ess_share`` (Kish
        effective sample size of the sessions' final cumulative weights), ``max_weight``,
        ``q_model``, ``warning``.

    Raises:
        ConfigError: For an unknown estimator or a policy that cannot act on sessions.
        DataError: For a log whose sessions cannot be rebuilt, or slates with ``dr``/``wdr``.
    """
    chosen = _parse(estimators, gamma)
    target = as_session_policy(policy)
    if target.n_items != logs.n_items:
        raise ConfigError(
            f"policy {target.name!r} has n_items={target.n_items}; the log has {logs.n_items}"
        )
    logged_horizon, logged_window = session_log_shape(logs)
    sessions = LoggedSessions.from_logs(
        logs,
        horizon=horizon if horizon is not None else logged_horizon,
        window=window if window is not None else logged_window,
    )
    ratio = sessions.policy_ratio(target)
    q_factual = v_policy = None
    q_name = "none"
    if any(estimator.needs_q_model for estimator in chosen):
        q_model = q_model or FittedQEvaluation(gamma=gamma)
        q_factual, v_policy = q_model.fit_predict(
            sessions, target.session_action_distribution, logs.item_table
        )
        q_name = f"fqe(ridge alpha={q_model.alpha}, {q_model.folds} folds)"
    inputs = SequentialInputs(
        reward=sessions.reward, ratio=ratio, q_factual=q_factual, v_policy=v_policy
    )
    final = inputs.cumulative_weight()[:, -1]
    ess = float(final.sum() ** 2 / (final @ final)) if final.any() else 0.0
    warning = ""
    if ess < POOR_ESS_SHARE * sessions.n_sessions:
        warning = (
            f"poor overlap: the sessions' cumulative weights keep an effective {ess:,.1f} of "
            f"{sessions.n_sessions:,} sessions ({ess / sessions.n_sessions:.2%}); over "
            f"{sessions.horizon} steps the estimates of a policy this far from the logger are "
            "unreliable"
        )
        if warn:
            warnings.warn(f"{target.name}: {warning}", OverlapWarning, stacklevel=2)
    rows = []
    for estimator in chosen:
        try:
            terms = estimator.terms(inputs)
            low, high = sequential_interval(terms, alpha, interval, n_bootstrap, seed)
        except CausalRecError as exc:
            raise type(exc)(f"{estimator.name}: {exc}") from None
        rows.append(
            {
                "estimator": estimator.name,
                "estimate": terms.value(),
                "low": low,
                "high": high,
                "unit": CLICKS_PER_SESSION,
                "n_sessions": sessions.n_sessions,
                "horizon": sessions.horizon,
                "ess": ess,
                "ess_share": ess / sessions.n_sessions,
                "max_weight": float(final.max()),
                "q_model": q_name if estimator.needs_q_model else "none",
                "warning": warning,
            }
        )
    return pd.DataFrame(rows)
