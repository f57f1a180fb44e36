"""Simulation in shards: each chunk of rounds is simulated and written by one task.

A log of ``n_rounds`` rounds is cut into chunks of ``chunk_rounds`` rounds, and chunk ``j`` draws
everything from the ``j``-th child of ``SeedSequence(seed)`` (:func:`~.logs.chunk_seeds`). Chunk
``j`` is shard ``j``: one task simulates it and writes it as its own Parquet parts,
``logs/part-{j:05d}-{k:05d}.parquet``, each under a temporary name renamed into place. A shard's
files and its summary statistics therefore depend only on the seed, ``chunk_rounds`` and ``j``,
and the driver merges the statistics in shard order, so the log directory is bit-identical
whether the shards run in this process (``workers=0``), one at a time as Ray tasks or many at
once, on one machine or across a cluster (``tests/simulators/test_shards.py``).

The driver holds one small record per shard, never the rows: its memory does not grow with the
log. The shards of a cluster run write into the output's staging directory beside ``OUT``, so
every node must see ``OUT`` at the same path (a shared file system; see the README's "Scaling"),
or ``OUT`` is a URI (``s3://bucket/run``): every task then gets the URI, resolves it with
``pyarrow.fs`` on its own node and uploads each part whole under its final name
(:func:`causalrec.platform.storage.output_dir`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from causalrec.platform import storage
from causalrec.platform.errors import ConfigError
from causalrec.platform.policy import Policy, SoftmaxPolicy
from causalrec.simulators.scm import ConfoundedRecSimulator

__all__ = ["ShardRecord", "ShardWork", "ShardedRun", "run_shards", "shard_executor"]


@dataclass(frozen=True)
class ShardWork:
    """Everything a shard task needs, shipped to the cluster once (``ray.put``).

    Attributes:
        simulator: The world.
        policy: The logging policy.
        n_rounds: Rounds of the whole log.
        chunk_rounds: Rounds per shard.
        uniform_fraction: Share of uniform-random rounds.
        metadata: Stored in every part file.
        directory: Folder of the part files (the staging directory's ``logs/``, or the
            output's ``logs/`` as a URI, or a :class:`~causalrec.platform.storage.Location`
            without one).
        rows_per_file: Largest part file, in rows.
    """

    simulator: ConfoundedRecSimulator
    policy: Policy
    n_rounds: int
    chunk_rounds: int
    uniform_fraction: float
    metadata: dict[str, Any]
    directory: str | storage.Location
    rows_per_file: int


@dataclass(frozen=True)
class ShardRecord:
    """Where and how one shard ran (``summary.json`` → ``shards``).

    Attributes:
        index: The shard (chunk) number.
        first_round: Its first round id.
        rounds: Its rounds.
        rows: Its impressions.
        files: Its part files' names.
        node_id: The Ray node that ran it (``None`` in this process, without Ray).
        seconds: Wall time of the task.
    """

    index: int
    first_round: int
    rounds: int
    rows: int
    files: tuple[str, ...]
    node_id: str | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {**dataclasses.asdict(self), "files": list(self.files)}


@dataclass(frozen=True)
class ShardOutcome:
    """A finished shard: its record, its summary sums and its largest pscore relative SE."""

    record: ShardRecord
    sums: dict[str, float]
    max_relative_se: float


@dataclass(frozen=True)
class ShardedRun:
    """What :func:`run_shards` did.

    Attributes:
        outcomes: One per shard, in shard order.
        executor: ``"in-process"`` or ``"ray"``.
        workers: Shards run at once (1 in this process).
    """

    outcomes: list[ShardOutcome]
    executor: str
    workers: int

    @property
    def node_ids(self) -> list[str | None]:
        """The node of each shard, in shard order."""
        return [outcome.record.node_id for outcome in self.outcomes]

    def to_dict(self) -> dict[str, Any]:
        """``summary.json``'s record of the run: executor, workers, nodes and every shard."""
        nodes = sorted({node for node in self.node_ids if node is not None})
        return {
            "executor": self.executor,
            "workers": self.workers,
            "nodes": nodes,
            "shards": [outcome.record.to_dict() for outcome in self.outcomes],
        }


def shard_sums(pscore: np.ndarray, click: np.ndarray) -> dict[str, float]:
    """The summary's sums over one shard's rows (merged over shards in shard order)."""
    weights = 1.0 / pscore
    return {
        "clicks": float(click.sum()),
        "w_sum": float(weights.sum()),
        "w_sq_sum": float(weights @ weights),
        "w_max": float(weights.max()),
    }


def write_shard(
    work: ShardWork, index: int, seed: np.random.SeedSequence, *, on_ray: bool = False
) -> ShardOutcome:
    """Simulate shard ``index`` from ``seed`` and write its part files (run by one task).

    ``on_ray``: the shard runs as a Ray task, whose node is recorded.
    """
    from causalrec.simulators.logs import simulate_chunk

    started = time.perf_counter()
    first = index * work.chunk_rounds
    n = min(work.chunk_rounds, work.n_rounds - first)
    chunk = simulate_chunk(
        work.simulator, work.policy, seed, first, n, uniform_fraction=work.uniform_fraction
    )
    with storage.LogWriter(
        work.directory,
        n_user_features=work.simulator.user_features.shape[1],
        metadata=work.metadata,
        rows_per_file=work.rows_per_file,
        name_prefix=f"part-{index:05d}-",
    ) as writer:
        writer.write(chunk)
    record = ShardRecord(
        index=index,
        first_round=first,
        rounds=n,
        rows=chunk.n_rows,
        files=tuple(writer.file_names),
        node_id=_node_id() if on_ray else None,
        seconds=round(time.perf_counter() - started, 3),
    )
    relative_se = work.policy.max_relative_se if isinstance(work.policy, SoftmaxPolicy) else 0.0
    return ShardOutcome(record, shard_sums(chunk.pscore, chunk.click), relative_se)


def _node_id() -> str:
    """The Ray node running this task."""
    import ray

    return ray.get_runtime_context().get_node_id()


def shard_executor(workers: int | None, address: str | None) -> str:
    """``"ray"`` or ``"in-process"``: where the shards of a run go.

    Args:
        workers: ``0`` runs the shards in this process; ``>= 1`` runs that many Ray tasks at
            once; ``None`` runs them on Ray when a cluster is named (``address`` or
            ``RAY_ADDRESS``), in this process otherwise (a local Ray would cost seconds to start
            and run no faster on one machine than the vectorised loop).
        address: The cluster to join, if any.

    Raises:
        ConfigError: ``workers`` is negative.
    """
    if workers is not None and (not isinstance(workers, int | np.integer) or workers < 0):
        raise ConfigError(f"workers must be an integer >= 0 (0: in this process); got {workers!r}")
    if workers == 0:
        return "in-process"
    if workers is None and not (address or os.environ.get("RAY_ADDRESS")):
        return "in-process"
    return "ray"


def run_shards(
    work: ShardWork,
    seeds: list[np.random.SeedSequence],
    *,
    workers: int | None = None,
    address: str | None = None,
    done: Callable[[ShardOutcome], None] = lambda outcome: None,
) -> ShardedRun:
    """Run every shard (see the module docstring) and return their outcomes in shard order.

    Args:
        work: What the shards share.
        seeds: The seed of each shard (:func:`~.logs.chunk_seeds`).
        workers: Shards at once (see :func:`shard_executor`); ``None`` on Ray means every CPU
            of the cluster.
        address: Ray cluster to join (default ``RAY_ADDRESS``, else a local Ray).
        done: Called with each shard's outcome as it finishes (progress).

    Raises:
        ConfigError: ``workers`` is negative.
    """
    storage.ensure_dir(work.directory)
    if shard_executor(workers, address) == "in-process":
        outcomes = []
        for index, seed in enumerate(seeds):
            outcomes.append(write_shard(work, index, seed))
            done(outcomes[-1])
        return ShardedRun(outcomes, "in-process", 1)
    return _run_on_ray(work, seeds, workers, address, done)


def _run_on_ray(work, seeds, workers, address, done) -> ShardedRun:
    """Shards as Ray tasks, at most ``workers`` in flight, spread over the cluster's nodes."""
    import ray

    from causalrec.platform.runtime import init_ray

    cluster = init_ray(address)
    if workers is None:
        workers = max(1, int(cluster.get("CPU", 1)))
    task = ray.remote(num_cpus=1, scheduling_strategy="SPREAD", max_retries=2)(write_shard)
    shared = ray.put(work)
    pending: dict[Any, int] = {}
    outcomes: list[ShardOutcome | None] = [None] * len(seeds)
    queue = list(enumerate(seeds))
    try:
        while queue or pending:
            while queue and len(pending) < workers:
                index, seed = queue.pop(0)
                pending[task.remote(shared, index, seed, on_ray=True)] = index
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                index = pending.pop(ref)
                outcomes[index] = ray.get(ref)
                done(outcomes[index])
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        if pending:  # let them end before the caller deletes what the run wrote
            ray.wait(list(pending), num_returns=len(pending), timeout=60)
        raise
    return ShardedRun(outcomes, "ray", workers)
