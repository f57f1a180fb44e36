"""Vectorised generation of logged feedback from the simulator, in memory or streamed to Parquet."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import causalrec
from causalrec.platform import schema as log_schema
from causalrec.platform import storage
from causalrec.platform.errors import ConfigError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.policy import Policy, SoftmaxPolicy
from causalrec.simulators.scm import ConfoundedRecSimulator

__all__ = ["LogSummary", "generate_logs", "iter_log_chunks", "write_logs"]

#: Rounds simulated per chunk; part of the seeding scheme (changing it changes the draws).
CHUNK_ROUNDS = 262_144


def _check_request(simulator: ConfoundedRecSimulator, policy: Policy, n_rounds: int) -> None:
    if n_rounds < 1:
        raise ConfigError(f"n_rounds must be >= 1; got {n_rounds}")
    simulator.check_policy(policy)


def log_metadata(
    simulator: ConfoundedRecSimulator,
    policy: Policy,
    n_rounds: int,
    seed: int | None,
    uniform_fraction: float,
    chunk_rounds: int = CHUNK_ROUNDS,
) -> dict[str, Any]:
    """The self-description stored in a log's Parquet metadata (enough to regenerate it)."""
    metadata: dict[str, Any] = {
        "causalrec_version": causalrec.__version__,
        "schema_version": log_schema.LOG_SCHEMA_VERSION,
        "simulator": simulator.config.model_dump(),
        "policy": policy.name,
        "seed": seed,
        "n_rounds": n_rounds,
        "n_items": simulator.n_items,
        "slate_size": simulator.slate_size,
        "uniform_fraction": uniform_fraction,
        "chunk_rounds": chunk_rounds,
        **pscore_metadata(policy),
    }
    return metadata


def pscore_metadata(policy: Policy) -> dict[str, Any]:
    """How exact the logged ``pscore`` is, per position (``pscore_prefix`` is always exact).

    ``pscore`` is ``"exact"`` or ``"estimated"``; ``pscore_exact_positions`` flags each 0-based
    position, and for estimated positions the Rao–Blackwellised estimator's target relative
    standard error and draw limit are recorded (the achieved largest relative standard error is
    added as ``pscore_max_relative_se`` once the log is complete).
    """
    exact = (
        policy.exact_positions
        if isinstance(policy, SoftmaxPolicy)
        else np.ones(policy.slate_size, dtype=bool)
    )
    metadata: dict[str, Any] = {
        "pscore": "exact" if exact.all() else "estimated",
        "pscore_exact_positions": exact.tolist(),
    }
    if not exact.all():
        assert isinstance(policy, SoftmaxPolicy)
        metadata["pscore_target_relative_se"] = policy.target_relative_se
        metadata["pscore_max_draws"] = policy.max_draws
    return metadata


def _achieved_error(policy: Policy, metadata: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` plus the largest relative standard error of the logged estimated pscores."""
    if metadata.get("pscore") != "estimated":
        return metadata
    assert isinstance(policy, SoftmaxPolicy)
    return {**metadata, "pscore_max_relative_se": policy.max_relative_se}


def check_uniform_fraction(uniform_fraction: float) -> None:
    """Refuse a share of uniform-random rounds outside [0, 1]."""
    if not 0.0 <= uniform_fraction <= 1.0:
        raise ConfigError(f"uniform_fraction must be in [0, 1]; got {uniform_fraction}")


def check_chunk_rounds(chunk_rounds: int) -> None:
    """Refuse a chunk (shard) size below one round."""
    if not (isinstance(chunk_rounds, int | np.integer) and chunk_rounds >= 1):
        raise ConfigError(f"chunk_rounds must be an integer >= 1; got {chunk_rounds!r}")


def chunk_seeds(seed: int | None, n_rounds: int, chunk_rounds: int) -> list[np.random.SeedSequence]:
    """The seed of each chunk: the children of ``SeedSequence(seed)``, one per chunk.

    Chunk ``j`` covers rounds ``[j * chunk_rounds, min((j + 1) * chunk_rounds, n_rounds))`` and
    draws everything from its own child, so a chunk's rows depend only on ``seed``,
    ``chunk_rounds`` and ``j``: chunks can be simulated in any order, in any process.
    """
    check_chunk_rounds(chunk_rounds)
    return np.random.SeedSequence(seed).spawn(-(-n_rounds // chunk_rounds))


def simulate_chunk(
    simulator: ConfoundedRecSimulator,
    policy: Policy,
    seed: np.random.SeedSequence,
    first_round: int,
    n: int,
    *,
    uniform_fraction: float,
    metadata: dict[str, Any] | None = None,
) -> LoggedFeedback:
    """Simulate ``n`` rounds numbered from ``first_round``, all drawn from ``seed``.

    Draws users, lets ``policy`` (or, in a ``uniform_fraction`` of rounds, the uniform policy)
    choose slates with their exact probabilities, and draws clicks.

    Returns:
        The chunk's rows (K per round).
    """
    rng = np.random.default_rng(seed)
    users = simulator.sample_users(n, rng)
    sample = policy.sample(users, rng)
    actions, prefix, marginal = sample.actions, sample.pscore_prefix, sample.marginal_pscore
    names = np.full(n, policy.name)
    if uniform_fraction > 0:
        explore = rng.random(n) < uniform_fraction
        if explore.any():
            uniform = simulator.uniform_policy()
            explored = uniform.sample(users[explore], rng)
            actions, prefix, marginal = actions.copy(), prefix.copy(), marginal.copy()
            actions[explore] = explored.actions
            prefix[explore] = explored.pscore_prefix
            marginal[explore] = explored.marginal_pscore
            names[explore] = uniform.name
    clicks, expected = simulator.sample_clicks(users, actions, rng)
    return LoggedFeedback.from_slates(
        users=users,
        slates=actions,
        clicks=clicks,
        pscore=marginal,
        pscore_prefix=prefix,
        user_features=simulator.user_features_f32[users],
        policy=names,
        n_items=simulator.n_items,
        first_round=first_round,
        expected_reward=expected,
        metadata=metadata,
    )


def iter_log_chunks(
    simulator: ConfoundedRecSimulator,
    policy: Policy,
    n_rounds: int,
    *,
    seed: int | None = None,
    uniform_fraction: float | None = None,
    metadata: dict[str, Any] | None = None,
    chunk_rounds: int = CHUNK_ROUNDS,
) -> Iterator[LoggedFeedback]:
    """Simulate ``n_rounds`` rounds chunk by chunk, with no per-round Python loop.

    Chunk ``j`` uses the ``j``-th child of ``SeedSequence(seed)`` (:func:`chunk_seeds`), so the
    log depends only on the seed and ``chunk_rounds``; :mod:`causalrec.simulators.shards` runs
    the same chunks as Ray tasks.

    Args:
        simulator: The world.
        policy: The logging policy.
        n_rounds: Number of rounds.
        seed: Seed of the draws.
        uniform_fraction: Share of rounds logged by uniform-random exposure; defaults to the
            simulator's ``uniform_fraction``.
        metadata: Metadata attached to every chunk.
        chunk_rounds: Rounds per chunk (part of the seeding scheme: changing it changes the
            draws).

    Yields:
        One :class:`LoggedFeedback` per chunk (K rows per round).
    """
    _check_request(simulator, policy, n_rounds)
    if uniform_fraction is None:
        uniform_fraction = simulator.config.uniform_fraction
    check_uniform_fraction(uniform_fraction)
    for index, child in enumerate(chunk_seeds(seed, n_rounds, chunk_rounds)):
        start = index * chunk_rounds
        n = min(chunk_rounds, n_rounds - start)
        yield simulate_chunk(
            simulator, policy, child, start, n, uniform_fraction=uniform_fraction,
            metadata=metadata,
        )  # fmt: skip


def generate_logs(
    simulator: ConfoundedRecSimulator,
    policy: Policy | None = None,
    n_rounds: int = 10_000,
    *,
    seed: int | None = None,
    uniform_fraction: float | None = None,
    chunk_rounds: int = CHUNK_ROUNDS,
) -> LoggedFeedback:
    """Simulate a log in memory (see :func:`iter_log_chunks`).

    Args:
        simulator: The world.
        policy: The logging policy; defaults to ``simulator.logging_policy()``.
        n_rounds: Number of rounds.
        seed: Seed of the draws.
        uniform_fraction: Share of uniform-random rounds (default: the simulator config's).
        chunk_rounds: Rounds per chunk (part of the seeding scheme, as in :func:`write_logs`).

    Returns:
        The log, with the user and item feature tables attached.
    """
    policy = policy or simulator.logging_policy()
    fraction = simulator.config.uniform_fraction if uniform_fraction is None else uniform_fraction
    metadata = log_metadata(simulator, policy, n_rounds, seed, fraction, chunk_rounds)
    chunks = list(
        iter_log_chunks(
            simulator, policy, n_rounds, seed=seed, uniform_fraction=fraction,
            chunk_rounds=chunk_rounds,
        )
    )  # fmt: skip
    return dataclasses.replace(
        LoggedFeedback.concat(chunks),
        user_table=simulator.user_features_f32.copy(),
        item_table=simulator.item_features.astype(np.float32),
        metadata=_achieved_error(policy, metadata),
    )


@dataclass(frozen=True)
class LogSummary:
    """What a simulated log shows, for the CLI's final summary.

    Attributes:
        rows: Impressions written.
        rounds: Rounds simulated.
        ctr: Mean click per impression.
        clicks_per_round: Mean clicks per round.
        logging_policy_value: Exact expected clicks per round of the logging policy.
        oracle_value: Exact expected clicks per round of the best top-K policy.
        mean_inverse_pscore: Mean of 1 / pscore over impressions.
        max_inverse_pscore: Max of 1 / pscore over impressions.
        effective_sample_size: Kish ESS of the weights 1 / pscore, (Σw)² / Σw².
        files: Parquet part files written (0 for an in-memory log).
        shards: Shards (chunks of rounds) simulated, each by one task.
        nodes: Ray nodes the shards ran on (0: in this process, without Ray).
    """

    rows: int
    rounds: int
    ctr: float
    clicks_per_round: float
    logging_policy_value: float
    oracle_value: float
    mean_inverse_pscore: float
    max_inverse_pscore: float
    effective_sample_size: float
    files: int = 0
    shards: int = 0
    nodes: int = 0

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready dictionary."""
        return dict(vars(self))


class _RunningStats:
    """Streaming sums for the summary (so a 10M-row log never sits in memory)."""

    def __init__(self) -> None:
        self.rows = self.rounds = 0
        self.clicks = self.w_sum = self.w_sq_sum = 0.0
        self.w_max = 0.0

    def add(self, rows: int, rounds: int, sums: dict[str, float]) -> None:
        """Add one chunk's rows, rounds and sums (:func:`~.shards.shard_sums`)."""
        self.rows += rows
        self.rounds += rounds
        self.clicks += sums["clicks"]
        self.w_sum += sums["w_sum"]
        self.w_sq_sum += sums["w_sq_sum"]
        self.w_max = max(self.w_max, sums["w_max"])


def _finish(
    simulator: ConfoundedRecSimulator, policy: Policy, stats: _RunningStats, files: int
) -> LogSummary:
    return LogSummary(
        rows=stats.rows,
        rounds=stats.rounds,
        ctr=stats.clicks / stats.rows,
        clicks_per_round=stats.clicks / stats.rounds,
        logging_policy_value=simulator.policy_value(policy),
        oracle_value=simulator.oracle_value(),
        mean_inverse_pscore=stats.w_sum / stats.rows,
        max_inverse_pscore=stats.w_max,
        effective_sample_size=stats.w_sum**2 / stats.w_sq_sum,
        files=files,
    )


def write_logs(
    simulator: ConfoundedRecSimulator,
    out: str | Path | storage.Location,
    n_rounds: int,
    *,
    policy: Policy | None = None,
    seed: int | None = None,
    uniform_fraction: float | None = None,
    overwrite: bool = False,
    progress: bool = False,
    rows_per_file: int = storage.ROWS_PER_FILE,
    chunk_rounds: int = CHUNK_ROUNDS,
    workers: int | None = None,
    address: str | None = None,
) -> LogSummary:
    """Simulate a log in shards and write it as a Parquet dataset directory (see :mod:`storage`).

    Each chunk of ``chunk_rounds`` rounds is a shard that one task simulates and writes
    (:mod:`causalrec.simulators.shards`): in this process, or as Ray tasks on the local Ray or
    a cluster. The output is bit-identical whatever runs the shards. It is built in a staging
    directory and swapped into ``out`` only when complete; a non-empty ``out`` is refused
    before any work unless ``overwrite``. A URI ``out`` (``s3://bucket/run``) is written in
    place instead, ``summary.json`` last (:func:`~causalrec.platform.storage.output_dir`).

    Args:
        simulator: The world.
        out: Output directory: a path, a URI (every shard task writes its parts there) or a
            :class:`~causalrec.platform.storage.Location`.
        n_rounds: Number of rounds.
        policy: The logging policy; defaults to ``simulator.logging_policy()``.
        seed: Seed of the draws.
        uniform_fraction: Share of uniform-random rounds (default: the simulator config's).
        overwrite: Replace a non-empty ``out``.
        progress: Show a progress bar.
        rows_per_file: Rows per Parquet part file (a shard larger than this writes several).
        chunk_rounds: Rounds per shard (part of the seeding scheme: changing it changes the
            draws).
        workers: Shards at once: ``0`` in this process; ``>= 1`` Ray tasks; ``None`` (default)
            Ray tasks on every CPU of the cluster when one is named (``address`` or
            ``RAY_ADDRESS``), this process otherwise.
        address: Ray cluster to run the shards on (default ``RAY_ADDRESS``).

    Returns:
        The summary, also written to ``OUT/summary.json`` with each shard's record (its
        rounds, files, node id and time: ``run``).
    """
    from tqdm.auto import tqdm

    from causalrec.simulators.shards import ShardWork, run_shards, shard_executor

    policy = policy or simulator.logging_policy()
    _check_request(simulator, policy, n_rounds)
    fraction = simulator.config.uniform_fraction if uniform_fraction is None else uniform_fraction
    check_uniform_fraction(fraction)
    seeds = chunk_seeds(seed, n_rounds, chunk_rounds)
    shard_executor(workers, address)  # refuse a bad ``workers`` before any work
    if rows_per_file < 1:
        raise ConfigError(f"rows_per_file must be >= 1; got {rows_per_file}")
    metadata = log_metadata(simulator, policy, n_rounds, seed, fraction, chunk_rounds)
    with (
        storage.output_dir(out, overwrite=overwrite) as root,
        tqdm(total=n_rounds, unit="round", disable=not progress, unit_scale=True) as bar,
    ):
        work = ShardWork(
            simulator=simulator,
            policy=policy,
            n_rounds=n_rounds,
            chunk_rounds=chunk_rounds,
            uniform_fraction=fraction,
            metadata=metadata,
            directory=storage.portable(root / storage.LOGS_SUBDIR),
            rows_per_file=rows_per_file,
        )
        run = run_shards(
            work, seeds, workers=workers, address=address,
            done=lambda outcome: bar.update(outcome.record.rounds),
        )  # fmt: skip
        stats = _RunningStats()
        for outcome in run.outcomes:  # in shard order: the same sums whatever ran the shards
            stats.add(outcome.record.rows, outcome.record.rounds, outcome.sums)
        relative_se = max(outcome.max_relative_se for outcome in run.outcomes)
        files = sum(len(outcome.record.files) for outcome in run.outcomes)
        summary = dataclasses.replace(
            _finish(simulator, policy, stats, files=files),
            shards=len(run.outcomes),
            nodes=len(run.to_dict()["nodes"]),
        )
        if metadata.get("pscore") == "estimated":
            metadata = {**metadata, "pscore_max_relative_se": relative_se}
        storage.write_feature_tables(
            root, simulator.user_features, simulator.item_features, simulator.popularity
        )
        payload = {"summary": summary.to_dict(), "metadata": metadata, "run": run.to_dict()}
        storage.write_json_atomic(root / storage.SUMMARY_FILE, payload)  # last: run complete
    return summary


def stream_log_directory(
    simulator: ConfoundedRecSimulator,
    out: str | Path | storage.Location,
    chunks: Iterable[LoggedFeedback],
    metadata: dict[str, Any],
    *,
    written: Callable[[LoggedFeedback], None],
    summarise: Callable[[int], tuple[Any, dict[str, Any]]],
    overwrite: bool,
    rows_per_file: int,
) -> Any:
    """Write ``chunks`` as a log directory in a staging folder swapped into ``out`` when complete.

    Writes the Parquet parts, the world's feature tables and ``summary.json`` (last). A URI
    ``out`` is written in place (:func:`~causalrec.platform.storage.output_dir`).

    Args:
        simulator: The world (its feature tables and popularity are written beside the log).
        out: Output directory (a path, a URI or a :class:`~causalrec.platform.storage.Location`).
        chunks: The log, chunk by chunk.
        metadata: Stored in every part file.
        written: Called with each chunk once it is written.
        summarise: Given the number of part files, returns the summary and the JSON payload of
            ``summary.json``.
        overwrite: Replace a non-empty ``out``.
        rows_per_file: Rows per Parquet part file.

    Returns:
        The summary ``summarise`` returned.
    """
    with storage.output_dir(out, overwrite=overwrite) as root:
        with storage.LogWriter(
            root / storage.LOGS_SUBDIR,
            n_user_features=simulator.user_features.shape[1],
            metadata=metadata,
            rows_per_file=rows_per_file,
        ) as writer:
            for chunk in chunks:
                writer.write(chunk)
                written(chunk)
        storage.write_feature_tables(
            root, simulator.user_features, simulator.item_features, simulator.popularity
        )
        summary, payload = summarise(writer.n_files)
        storage.write_json_atomic(root / storage.SUMMARY_FILE, payload)
    return summary
