"""Vectorised session rollouts: the long-term value of any policy, with common random numbers.

Sessions run in batches of whole cohorts (``concurrent_sessions`` sessions that share the world
clock, see :mod:`causalrec.simulators.dynamics`), all steps of a batch in lock-step, with no
Python loop over sessions. Batch ``j`` draws from four streams spawned from
``SeedSequence(seed)``: users, the policy's own draws, click uniforms and leave uniforms. Two
policies rolled out with the same seed therefore meet the same users, and a shown item is clicked
(and a user leaves) under the same uniform draw: common random numbers, so their paired
difference has a far smaller standard error than either value.

The return of a session is Σ_t alive_t · Σ_k e_k r(a_tk | state_t): the expected clicks of each
shown slate given the state (Rao–Blackwellised over the click draw), while the clicks that drive
the state and the leaving are drawn. It is unbiased for the clicks per session.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from causalrec.platform.errors import ConfigError
from causalrec.platform.policy import SlateSample
from causalrec.platform.session import SessionContext, SessionPolicy, as_session_policy
from causalrec.platform.units import LongTermValue, PairedLongTermValue
from causalrec.simulators.dynamics import SessionState, UserDynamics

__all__ = [
    "SessionStep",
    "iter_session_steps",
    "long_term_value",
    "paired_long_term_value",
    "run_sessions",
]

#: Sessions stepped at once (rounded to whole cohorts); part of the seeding scheme.
BATCH_SESSIONS = 8_192


@dataclass(frozen=True)
class SessionStep:
    """One step of a batch of sessions, before the world moves on.

    Attributes:
        step: 0-based step within the sessions.
        session_id: Global session index, shape (B,).
        cohort: Global cohort index (the world clock's epoch), shape (B,).
        alive: Whether each user is still in the session at this step, shape (B,).
        context: What the policy saw (its arrays are this step's copies).
        sample: The slates and their probabilities under the policy, shapes (B, K).
        clicks: Drawn clicks, shape (B, K) (0 where not alive).
        expected_reward: e_k · r of the shown slates given the state, shape (B, K).
        leave_probability: P(leave after this step), shape (B,).
    """

    step: int
    session_id: np.ndarray
    cohort: np.ndarray
    alive: np.ndarray
    context: SessionContext
    sample: SlateSample
    clicks: np.ndarray
    expected_reward: np.ndarray
    leave_probability: np.ndarray


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1; got {value!r}")


def session_count(simulator, n_sessions: int) -> int:
    """Sessions actually run: ``n_sessions`` rounded up to whole cohorts under feedback.

    Raises:
        ConfigError: If ``n_sessions`` is not an integer >= 1.
    """
    _check_count("n_sessions", n_sessions)
    cohort = simulator.config.concurrent_sessions
    if simulator.config.popularity_feedback > 0:
        return -(-n_sessions // cohort) * cohort
    return n_sessions


def iter_session_steps(
    simulator, policy: object, *, horizon: int, n_sessions: int, seed: int | None
) -> Iterator[SessionStep]:
    """Roll out ``n_sessions`` sessions of ``horizon`` steps under ``policy``, step by step.

    Args:
        simulator: The world.
        policy: A :class:`SessionPolicy` or a plain policy (which ignores histories).
        horizon: Steps per session (>= 1).
        n_sessions: Sessions (rounded up to whole cohorts when popularity feeds back).
        seed: Seed of the draws (see the module docstring).

    Yields:
        One :class:`SessionStep` per batch and step, batches in order, steps in order.

    Raises:
        ConfigError: For a horizon < 1, n_sessions < 1, a policy that cannot act on sessions,
            or one of another catalogue or slate size.
    """
    policy = as_session_policy(policy)
    _check_count("horizon", horizon)
    n_sessions = session_count(simulator, n_sessions)
    simulator.check_policy(policy)
    dynamics = UserDynamics(simulator)
    cohort_size = simulator.config.concurrent_sessions
    per_batch = max(1, BATCH_SESSIONS // cohort_size) * cohort_size
    starts = range(0, n_sessions, per_batch)
    for start, child in zip(starts, np.random.SeedSequence(seed).spawn(len(starts)), strict=True):
        users_rng, policy_rng, click_rng, leave_rng = (
            np.random.default_rng(s) for s in child.spawn(4)
        )
        n = min(per_batch, n_sessions - start)
        session_id = np.arange(start, start + n, dtype=np.int64)
        cohort = session_id // cohort_size
        state = dynamics.start(simulator.sample_users(n, users_rng), cohort - cohort[0])
        yield from run_sessions(
            dynamics,
            state,
            policy,
            horizon=horizon,
            session_id=session_id,
            cohort=cohort,
            rngs=(policy_rng, click_rng, leave_rng),
        )


def run_sessions(
    dynamics: UserDynamics,
    state: SessionState,
    policy: SessionPolicy,
    *,
    horizon: int,
    session_id: np.ndarray,
    cohort: np.ndarray,
    rngs: tuple[np.random.Generator, np.random.Generator, np.random.Generator],
) -> Iterator[SessionStep]:
    """Step the sessions of ``state`` (in place) ``horizon`` times under ``policy``.

    The one stepping loop of every rollout: :func:`iter_session_steps` starts fresh sessions
    for it, the closed loop (:mod:`causalrec.loop.world`) starts them from a world state that
    persists across generations.

    Args:
        dynamics: The world's transition.
        state: The sessions' state (B sessions), advanced in place.
        policy: A session policy (see :func:`~causalrec.platform.session.as_session_policy`).
        horizon: Steps.
        session_id: Global session index of each row, shape (B,).
        cohort: Global cohort index of each row, shape (B,).
        rngs: The policy's draws, the click uniforms and the leave uniforms, in that order.

    Yields:
        One :class:`SessionStep` per step.
    """
    K = dynamics.simulator.slate_size
    for step in range(horizon):
        yield _advance(dynamics, state, policy, step, session_id, cohort, rngs, K)


def _advance(
    dynamics: UserDynamics,
    state: SessionState,
    policy: SessionPolicy,
    step: int,
    session_id: np.ndarray,
    cohort: np.ndarray,
    rngs: tuple[np.random.Generator, ...],
    K: int,
) -> SessionStep:
    policy_rng, click_rng, leave_rng = rngs
    context = state.context()
    sample = policy.sample_session(context, policy_rng)
    expected = dynamics.expected_reward(state, sample.actions)
    alive = state.alive.copy()
    clicks = ((click_rng.random((len(alive), K)) < expected) & alive[:, None]).astype(np.int8)
    record_context = SessionContext(
        users=context.users,
        step=context.step.copy(),
        history_items=context.history_items.copy(),
        history_clicks=context.history_clicks.copy(),
        log_popularity=context.log_popularity,
        cohort=context.cohort,
    )
    leave = dynamics.advance(state, sample.actions, clicks)
    state.alive &= ~(leave_rng.random(len(alive)) < leave)
    return SessionStep(
        step=step,
        session_id=session_id,
        cohort=cohort,
        alive=alive,
        context=record_context,
        sample=sample,
        clicks=clicks,
        expected_reward=expected * alive[:, None],
        leave_probability=leave,
    )


def session_returns(
    simulator, policy: object, *, horizon: int, n_sessions: int, seed: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-session returns (expected clicks, see the module docstring) and cohorts, shapes (n,)."""
    returns, cohorts = [], []
    current: np.ndarray | None = None
    for record in iter_session_steps(
        simulator, policy, horizon=horizon, n_sessions=n_sessions, seed=seed
    ):
        if record.step == 0:
            current = np.zeros(len(record.session_id))
            returns.append(current)
            cohorts.append(record.cohort)
        current += record.expected_reward.sum(axis=1)
    return np.concatenate(returns), np.concatenate(cohorts)


def _mean_and_error(values: np.ndarray, cohorts: np.ndarray, pooled: bool) -> tuple[float, float]:
    """Mean and its standard error; with pooled cohorts the cohorts are the independent units."""
    if pooled:
        sums = np.bincount(cohorts - cohorts.min(), weights=values)
        sizes = np.bincount(cohorts - cohorts.min())
        units = sums[sizes > 0] / sizes[sizes > 0]
    else:
        units = values
    if len(units) < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(units.std(ddof=1) / np.sqrt(len(units)))


def _value(
    simulator, returns: np.ndarray, cohorts: np.ndarray, horizon: int, seed: int | None
) -> LongTermValue:
    pooled = simulator.config.popularity_feedback > 0
    value, error = _mean_and_error(returns, cohorts, pooled)
    return LongTermValue(
        value, standard_error=error, horizon=horizon, n_sessions=len(returns), seed=seed
    )


def long_term_value(
    simulator, policy: object, *, horizon: int, n_sessions: int, seed: int | None = 0
) -> LongTermValue:
    """Expected clicks per session of ``policy`` over ``horizon`` steps, with its standard error.

    See :meth:`ConfoundedRecSimulator.long_term_value`.
    """
    returns, cohorts = session_returns(
        simulator, policy, horizon=horizon, n_sessions=n_sessions, seed=seed
    )
    return _value(simulator, returns, cohorts, horizon, seed)


def paired_long_term_value(
    simulator,
    policy: object,
    baseline: object,
    *,
    horizon: int,
    n_sessions: int,
    seed: int | None = 0,
) -> PairedLongTermValue:
    """Both policies' long-term values and their difference, on common random numbers.

    See :meth:`ConfoundedRecSimulator.paired_long_term_value`.
    """
    run = dict(horizon=horizon, n_sessions=n_sessions, seed=seed)
    returns, cohorts = session_returns(simulator, policy, **run)
    baseline_returns, _ = session_returns(simulator, baseline, **run)  # the same cohorts (CRN)
    pooled = simulator.config.popularity_feedback > 0
    difference, error = _mean_and_error(returns - baseline_returns, cohorts, pooled)
    return PairedLongTermValue(
        policy=_value(simulator, returns, cohorts, horizon, seed),
        baseline=_value(simulator, baseline_returns, cohorts, horizon, seed),
        difference=difference,
        difference_se=error,
    )
