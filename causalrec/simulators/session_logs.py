"""Session logs: whole sessions of a (dynamic) world under a logger, in memory or as Parquet.

Each session runs ``session_length`` steps (fewer when the user leaves) under the logger, through
the same vectorised rollouts as the long-term value (:mod:`causalrec.simulators.rollout`), and
each step is a round of the log with its ``session_id``, ``step``, ``timestamp`` (the cohort's
world clock, cohort × session_length + step) and the logger's propensities given the state. The
rows of a batch are ordered by timestamp, then session, so round ids follow the clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from causalrec.platform import storage
from causalrec.platform.errors import ConfigError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.policy import Policy
from causalrec.platform.session import PolicyOnSessions, SessionPolicy, as_session_policy
from causalrec.simulators.dynamics import PopularityFeedbackLogger
from causalrec.simulators.logs import log_metadata, stream_log_directory
from causalrec.simulators.rollout import SessionStep, iter_session_steps, session_count
from causalrec.simulators.scm import ConfoundedRecSimulator

__all__ = [
    "SessionLogSummary",
    "generate_session_logs",
    "iter_session_log_chunks",
    "session_steps_to_log",
    "write_session_logs",
]

#: Sessions whose logger value the summary's rollout truth uses.
SUMMARY_TRUTH_SESSIONS = 20_000


def _resolve(simulator: ConfoundedRecSimulator, policy: Policy | SessionPolicy | None):
    if simulator.config.uniform_fraction > 0:
        raise ConfigError(
            f"uniform_fraction={simulator.config.uniform_fraction}: session logs have one logger "
            "per session; log uniform sessions with --policy uniform instead"
        )
    return simulator.session_logging_policy() if policy is None else as_session_policy(policy)


def session_log_metadata(
    simulator: ConfoundedRecSimulator, policy: SessionPolicy, n_sessions: int, seed: int | None
) -> dict[str, Any]:
    """The self-description of a session log (enough to regenerate it).

    Raises:
        ConfigError: If ``n_sessions`` is not an integer >= 1.
    """
    sessions = session_count(simulator, n_sessions)
    horizon = simulator.config.session_length
    # Whether the pscores are exact is a property of the policy family (see pscore_metadata).
    family = policy.policy if isinstance(policy, PolicyOnSessions) else policy
    if isinstance(policy, PopularityFeedbackLogger):
        family = simulator.logging_policy()
    metadata = log_metadata(simulator, family, n_sessions * horizon, seed, 0.0)
    metadata["policy"] = policy.name
    metadata.update(
        {
            "sessions": sessions,
            "session_length": horizon,
            "concurrent_sessions": simulator.config.concurrent_sessions,
            "dynamic": simulator.config.dynamic,
        }
    )
    del metadata["n_rounds"]  # rounds depend on who leaves: the summary counts them
    return metadata


def session_steps_to_log(
    simulator: ConfoundedRecSimulator,
    steps: list[SessionStep],
    name: str,
    first_round: int,
    metadata: dict[str, Any],
) -> LoggedFeedback:
    """The rounds of one batch of sessions (alive users only), ordered by timestamp.

    Args:
        simulator: The world.
        steps: The batch's steps, in order (from
            :func:`~causalrec.simulators.rollout.run_sessions`).
        name: The logging policy's name.
        first_round: Round id of the first round.
        metadata: Metadata attached to the log.

    Returns:
        K rows per round; ``timestamp`` = cohort × session_length + step.
    """
    horizon = simulator.config.session_length
    alive = np.concatenate([s.alive for s in steps])
    session_id = np.concatenate([s.session_id for s in steps])[alive]
    step = np.concatenate([np.full(len(s.alive), s.step) for s in steps])[alive]
    timestamp = np.concatenate([s.cohort for s in steps])[alive] * horizon + step
    order = np.lexsort((session_id, timestamp))

    def rows(values: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(values)[alive][order]

    users = rows([s.context.users for s in steps])
    return LoggedFeedback.from_slates(
        users=users,
        slates=rows([s.sample.actions for s in steps]),
        clicks=rows([s.clicks for s in steps]),
        pscore=rows([s.sample.marginal_pscore for s in steps]),
        pscore_prefix=rows([s.sample.pscore_prefix for s in steps]),
        user_features=simulator.user_features_f32[users],
        policy=name,
        n_items=simulator.n_items,
        first_round=first_round,
        expected_reward=rows([s.expected_reward for s in steps]),
        metadata=metadata,
        session_id=session_id[order],
        step=step[order],
        timestamp=timestamp[order],
    )


def iter_session_log_chunks(
    simulator: ConfoundedRecSimulator,
    policy: Policy | SessionPolicy | None,
    n_sessions: int,
    *,
    seed: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> Iterator[LoggedFeedback]:
    """Simulate ``n_sessions`` sessions and yield their rounds batch by batch.

    Args:
        simulator: The world.
        policy: The logger (a plain or a session policy); ``None`` for the world's logger
            (:meth:`ConfoundedRecSimulator.session_logging_policy`).
        n_sessions: Sessions (rounded up to whole cohorts when popularity feeds back).
        seed: Seed of the draws (the rollouts' seeding scheme).
        metadata: Metadata attached to every chunk.

    Yields:
        One :class:`LoggedFeedback` per batch of sessions (K rows per round).

    Raises:
        ConfigError: For n_sessions < 1, a policy that cannot act on sessions, or a world
            with ``uniform_fraction > 0``.
    """
    policy = _resolve(simulator, policy)
    horizon = simulator.config.session_length
    batch: list[SessionStep] = []
    first_round = 0
    for record in iter_session_steps(
        simulator, policy, horizon=horizon, n_sessions=n_sessions, seed=seed
    ):
        batch.append(record)
        if record.step == horizon - 1:
            chunk = session_steps_to_log(simulator, batch, policy.name, first_round, metadata or {})
            first_round += chunk.n_rows // chunk.slate_size
            batch = []
            yield chunk


def generate_session_logs(
    simulator: ConfoundedRecSimulator,
    policy: Policy | SessionPolicy | None = None,
    n_sessions: int = 1_000,
    *,
    seed: int | None = None,
) -> LoggedFeedback:
    """Simulate a session log in memory (see :func:`iter_session_log_chunks`).

    Returns:
        The log, with the user and item feature tables attached.
    """
    resolved = _resolve(simulator, policy)
    metadata = session_log_metadata(simulator, resolved, n_sessions, seed)
    chunks = list(iter_session_log_chunks(simulator, resolved, n_sessions, seed=seed))
    return dataclasses.replace(
        LoggedFeedback.concat(chunks),
        user_table=simulator.user_features_f32.copy(),
        item_table=simulator.item_features.astype(np.float32),
        metadata=metadata,
    )


@dataclass(frozen=True)
class SessionLogSummary:
    """What a simulated session log shows, for the CLI's final summary.

    Attributes:
        sessions: Sessions simulated.
        rounds: Steps logged (rounds), fewer than sessions × session_length when users leave.
        rows: Impressions written.
        mean_session_steps: Steps per session before the user left or the session ended.
        clicks_per_session: Observed clicks per session.
        ctr: Clicks per impression.
        logger_long_term_value: Rollout truth of the logger's clicks per session.
        logger_long_term_se: Its standard error.
        files: Parquet part files written (0 for an in-memory log).
    """

    sessions: int
    rounds: int
    rows: int
    mean_session_steps: float
    clicks_per_session: float
    ctr: float
    logger_long_term_value: float
    logger_long_term_se: float
    files: int = 0

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready dictionary (values in clicks per session where named so)."""
        return dict(vars(self))


def write_session_logs(
    simulator: ConfoundedRecSimulator,
    out: str | Path,
    n_sessions: int,
    *,
    policy: Policy | SessionPolicy | None = None,
    seed: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
    rows_per_file: int = storage.ROWS_PER_FILE,
) -> SessionLogSummary:
    """Simulate a session log and stream it to a Parquet dataset directory.

    Built in a staging directory and swapped into ``out`` only when complete, as
    :func:`~causalrec.simulators.logs.write_logs`; a non-empty ``out`` is refused before any
    work unless ``overwrite``.

    Returns:
        The summary, also written to ``OUT/summary.json``.
    """
    from tqdm.auto import tqdm

    resolved = _resolve(simulator, policy)
    metadata = session_log_metadata(simulator, resolved, n_sessions, seed)  # checks n_sessions
    counts = {"rounds": 0, "rows": 0, "clicks": 0}
    bar = tqdm(total=metadata["sessions"], unit="session", disable=not progress)

    def written(chunk: LoggedFeedback) -> None:
        counts["rows"] += chunk.n_rows
        counts["rounds"] += chunk.n_rows // chunk.slate_size
        counts["clicks"] += int(chunk.click.sum())
        # A chunk is one batch of consecutive sessions, each with its step 0 logged.
        bar.update(int(chunk.session_id.max() - chunk.session_id.min()) + 1)

    def summarise(files: int) -> tuple[SessionLogSummary, dict[str, Any]]:
        truth = simulator.long_term_value(
            resolved, n_sessions=SUMMARY_TRUTH_SESSIONS, seed=None if seed is None else seed + 1
        )
        sessions = metadata["sessions"]
        summary = SessionLogSummary(
            sessions=sessions,
            rounds=counts["rounds"],
            rows=counts["rows"],
            mean_session_steps=counts["rounds"] / sessions,
            clicks_per_session=counts["clicks"] / sessions,
            ctr=counts["clicks"] / counts["rows"],
            logger_long_term_value=float(truth),
            logger_long_term_se=truth.standard_error,
            files=files,
        )
        return summary, {"summary": summary.to_dict(), "metadata": metadata}

    chunks = iter_session_log_chunks(simulator, resolved, n_sessions, seed=seed, metadata=metadata)
    with bar:
        summary = stream_log_directory(
            simulator, out, chunks, metadata, written=written, summarise=summarise,
            overwrite=overwrite, rows_per_file=rows_per_file,
        )  # fmt: skip
    return summary
