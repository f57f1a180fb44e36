"""Served traffic becomes logs: pending recommendations joined with their clicks, in batches.

The sink remembers each served request (its slates and their exact propensities) until its
feedback arrives, then buffers the impressions as rows of the causalrec log format and writes a
Parquet part file atomically (temporary file, then rename) every ``flush_rows`` rows, so
``read_logs(feedback_dir)`` always sees whole files and the traffic can be evaluated off-policy
later, as any other log. One sink replica per directory keeps round ids unique (several sinks
write disjoint sub-directories: see *Several sinks* below).

Durability. Every change is appended to a journal first (``directory/journal/segment-*.jsonl``,
one JSON line per served request or feedback; ``read_logs`` never opens it), and a sink opened
on a directory replays what its journal holds, so a restarted replica carries on where the
killed one stopped:

* A ``/feedback`` answered 200 is on disk (fsync) before the answer: ``add_feedback`` appends
  the clicks to the journal and calls ``os.fsync`` before it returns, so an acknowledged
  feedback survives a kill of the process and a crash of the machine. With ``sync=False`` it
  survives a kill of the process only.
* A served request (``record``) is handed to the operating system, not fsynced: it survives a
  kill of the process, not a crash of the machine, unless a later fsync covered it (every
  journal line written before an fsync is on disk). Feedback for a request lost that way gets
  ``UnknownRequestError`` (404), as for an expired one.
* A retried feedback is logged once: the sink remembers the last ``capacity`` answered request
  ids with a digest of their clicks (journaled with them, so a restarted sink knows the answers
  its journal still holds). The same clicks again return the first answer's row count with
  ``repeated=True`` and add nothing; other clicks raise ``FeedbackConflictError`` (409). A
  client whose ``/feedback`` got no answer (a 503 or 504, a dropped connection) can therefore
  always retry it.
* No duplicates after a crash: a flush writes the rows of one journal segment as the part file
  named after it (``logs/part-seg-000000000042.parquet``) before the segment is retired, and the
  replay never writes a segment whose part exists again. A line torn by a kill in the middle of
  a write (the last of its segment) is ignored; every earlier line is used.

A flush starts a new segment. A retired segment is deleted once none of its served requests is
still pending (pending requests are not copied forward), so the journal holds about the last
``capacity`` served requests and the feedback not yet in a part file; when feedback is rare, a
segment (and the rows buffered so far) is also retired after ``capacity`` served requests.
One sink writes a directory at a time (one replica): two sinks opened on it at once each take
their own segment numbers, but share nothing else.

Several sinks (``feedback_replicas`` = N > 1). One sink's fsync per acknowledged feedback bounds
the feedback a server takes; N sinks spread it over N processes. Each owns a disjoint
sub-directory, ``FEEDBACK_DIR/replica-00/``, ``replica-01/``, ... (:func:`replica_directory`),
a complete log directory with its own ``logs/`` and ``journal/``, so each keeps every guarantee
above. A request's ``record`` and ``add_feedback`` must reach the sink that holds it: the
ingress sends both to sink :func:`sink_replica` of its request id, the SHA-256 of the id modulo
N (stable across processes and restarts, unlike Python's salted ``hash``). Ray Serve 2.60 routes
a call to any replica of a deployment (power of two choices; multiplexed model ids only
*prefer* a replica), and a replica has no stable index a restart keeps. So the app deploys N
sink deployments, ``FeedbackSinkDeployment-00``, ``-01``, ... of one replica each: the name
fixes the directory, and a restarted sink replays its own journal. With N = 1 nothing changes:
one ``FeedbackSinkDeployment`` writes ``FEEDBACK_DIR/logs`` and ``FEEDBACK_DIR/journal``.

Round ids stay unique across sinks: the sink of ``FEEDBACK_DIR`` itself (N = 1) numbers its
rounds from 0, sink ``i`` of N > 1 from ``(i + 1) * 2**40`` (:data:`ROUND_ID_STRIDE`; 1.1e12
rounds each), carrying on after the largest round id of its own parts when restarted. Round ids
of different sinks are not chronological (time order holds within a sink only), and a directory
written with N = 1 and later with N > 1 still has no round twice. ``read_logs(FEEDBACK_DIR)``
reads ``FEEDBACK_DIR/logs`` (if any), then every ``replica-*/logs`` in replica order, each in part
order. Changing N re-routes request ids: feedback for a request served before the change may get
404, and a sink dropped by a smaller N leaves its journal (rows it has not written) until a sink
of that index runs again; a graceful stop writes every sink's rows first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import threading
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from causalrec.platform import schema as log_schema_module
from causalrec.platform import storage
from causalrec.platform.errors import DataError, LogFormatError
from causalrec.platform.feedback import LoggedFeedback

__all__ = [
    "JOURNAL_SUBDIR",
    "ROUND_ID_STRIDE",
    "FeedbackConflictError",
    "FeedbackLog",
    "FeedbackReceipt",
    "UnknownRequestError",
    "replica_directory",
    "sink_replica",
]

#: Folder of the journal segments, beside ``logs/``.
JOURNAL_SUBDIR = "journal"
#: Version of the journal's line format, written in the first line of every segment.
JOURNAL_VERSION = 1
_ENTRY_KINDS = ("served", "feedback")
_SEGMENT_FILE = re.compile(r"segment-(\d{12})\.jsonl")
_PART_FILE = re.compile(r"part-seg-(\d{12})\.parquet")
#: Round ids each sink of a sharded feedback directory may use: sink ``i`` starts at
#: ``(i + 1) * ROUND_ID_STRIDE`` (the unsharded directory's sink at 0).
ROUND_ID_STRIDE = 2**40
_logger = logging.getLogger(__name__)


def sink_replica(request_id: str, n_replicas: int) -> int:
    """The sink, in ``range(n_replicas)``, that records a request and takes its feedback.

    The SHA-256 of the request id modulo ``n_replicas``: the same in every process and after a
    restart (Python's ``hash`` of a string is salted per process).
    """
    if n_replicas < 1:
        raise ValueError(f"n_replicas: expected at least 1 sink, got {n_replicas}")
    return int(hashlib.sha256(request_id.encode()).hexdigest(), 16) % n_replicas


def replica_directory(feedback_dir: str | Path, replica: int, n_replicas: int) -> Path:
    """The log directory of sink ``replica`` of ``n_replicas``.

    ``feedback_dir`` itself for one sink, ``feedback_dir/replica-{replica:02d}`` for several.
    """
    if not 0 <= replica < n_replicas:
        raise ValueError(f"replica: expected 0 <= replica < {n_replicas}, got {replica}")
    if n_replicas == 1:
        return Path(feedback_dir)
    return Path(feedback_dir) / f"{storage.REPLICA_PREFIX}{replica:02d}"


class UnknownRequestError(DataError):
    """Feedback for a request id the sink does not hold (never served, or expired)."""


class FeedbackConflictError(DataError):
    """Feedback for a request already answered with other clicks."""


@dataclasses.dataclass(frozen=True)
class FeedbackReceipt:
    """What an acknowledged feedback logged.

    Attributes:
        rows: Impressions the feedback logged (users x items of the request).
        repeated: Whether the same clicks had been logged before (a retry): nothing was added.
    """

    rows: int
    repeated: bool = False


def _clicks_digest(clicks: np.ndarray) -> str:
    """SHA-256 of a click matrix, shape (n, k), and its shape."""
    digest = hashlib.sha256(repr(clicks.shape).encode())
    digest.update(np.ascontiguousarray(clicks, dtype=np.int8).tobytes())
    return digest.hexdigest()


def _segment_name(number: int) -> str:
    return f"segment-{number:012d}.jsonl"


def _part_name(number: int) -> str:
    return f"part-seg-{number:012d}.parquet"


def _numbers(directory: Path, pattern: re.Pattern[str]) -> list[int]:
    matches = (pattern.fullmatch(path.name) for path in directory.iterdir())
    return sorted(int(match.group(1)) for match in matches if match)


def _encode(value: Any) -> Any:
    """JSON form of the numpy values of a served request (arrays keep dtype and shape)."""
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": value.dtype.str, "shape": value.shape}
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _decode(obj: dict[str, Any]) -> Any:
    if "__ndarray__" in obj:
        return np.array(obj["__ndarray__"], dtype=obj["dtype"]).reshape(obj["shape"])
    return obj


def _line(entry: dict[str, Any]) -> bytes:
    # repr of a float64 (what json writes) reads back exactly; NaN is written as NaN.
    return (json.dumps(entry, default=_encode, separators=(",", ":")) + "\n").encode()


def _read_segment(path: Path) -> list[dict[str, Any]]:
    """The entries of a journal segment, without its header and a torn last line.

    Raises:
        LogFormatError: If the header is missing or of another version, or a line before the
            last one is unreadable (the message names the file and line).
    """
    lines = path.read_bytes().split(b"\n")
    entries: list[dict[str, Any]] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip(b"\0"):  # the final newline, or unwritten blocks after a machine crash
            continue
        try:
            entry = json.loads(raw, object_hook=_decode)
        except ValueError:
            if number == len(lines):  # torn by a kill in the middle of a write
                break
            entry = None
        kinds = _ENTRY_KINDS if entries else ("journal",)  # the header comes first
        if not isinstance(entry, dict) or entry.get("kind") not in kinds:
            raise LogFormatError(
                f"{str(path)!r} line {number}: not a journal {'entry' if entries else 'header'} "
                f"({raw[:60]!r})"
            )
        entries.append(entry)
    if entries and entries[0].get("version") != JOURNAL_VERSION:
        raise LogFormatError(
            f"{str(path)!r} has journal version {entries[0].get('version')}; this causalrec "
            f"reads version {JOURNAL_VERSION}"
        )
    return entries[1:]


def _fsync_path(path: Path) -> None:
    """Flush a file's data, or a directory's entries, to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class FeedbackLog:
    """Pending served requests and a buffer of logged impressions, journaled on disk.

    Opening a sink on a directory a killed sink used replays its journal: the pending requests
    come back, and the feedback that was not in a part file yet is written as one.

    Args:
        directory: Log directory (``part-*.parquet`` files go to ``directory/logs``, the
            journal to ``directory/journal``).
        n_items: Catalogue size of the served model.
        capacity: Pending requests remembered (the oldest is dropped first).
        flush_rows: Buffered rows that trigger a write.
        metadata: Extra self-description stored in every file (model version, ...).
        user_features: Features of every user, shape (n_users, d), logged with each impression
            (``None``: one constant 0 column — the log format needs at least one).
        sync: Whether ``add_feedback`` (and a flush) calls ``os.fsync`` before returning, so
            acknowledged feedback survives a machine crash. ``False`` keeps it safe from a kill
            of the process only, and costs no disk flush.
        replica: Index of this sink among several writing sub-directories of one feedback
            directory (:func:`replica_directory`): its round ids start at ``(replica + 1) *``
            :data:`ROUND_ID_STRIDE`, and its parts' metadata name it (``feedback_replica``).
            ``None`` (the only sink of its directory): round ids start at 0.

    Raises:
        LogFormatError: If a journal segment is unreadable before its last line.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        n_items: int,
        capacity: int = 100_000,
        flush_rows: int = 1024,
        metadata: dict[str, Any] | None = None,
        user_features: np.ndarray | None = None,
        sync: bool = True,
        replica: int | None = None,
    ):
        if replica is not None and replica < 0:
            raise ValueError(f"replica: expected a sink index >= 0, got {replica}")
        self.replica = replica
        self.first_round = 0 if replica is None else (replica + 1) * ROUND_ID_STRIDE
        self.directory = Path(directory)
        self.logs_dir = self.directory / storage.LOGS_SUBDIR
        self.journal_dir = self.directory / JOURNAL_SUBDIR
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        self.n_items, self.capacity, self.flush_rows = n_items, capacity, flush_rows
        self.metadata = dict(metadata or {})
        self.sync = sync
        self._estimated = False  # whether a buffered slate has estimated propensities
        self.user_features = user_features
        self.pending: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # The last ``capacity`` answered requests: their clicks' digest and row count.
        self.answered: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self.buffer: list[LoggedFeedback] = []
        self.buffered_rows = 0
        self.written_files = 0
        self.next_round = self._next_round_id()
        self._lock = threading.Lock()
        self._origin: dict[str, int] = {}  # segment holding each pending request's served line
        self._live: Counter[int] = Counter()  # pending requests per segment
        self._answered: list[int] = []  # origins of the requests answered in the buffer
        self._retired: set[int] = set()  # segments closed, deleted once none is live
        self._fd: int | None = None
        self._segment = -1  # the open segment
        self._served_lines = 0  # served lines in the open segment
        self._replay()

    def _next_round_id(self) -> int:
        """The first round of this sink's range, or after the largest round of its parts."""
        if not any(self.logs_dir.glob("part-*.parquet")):
            return self.first_round
        written = int(storage.read_log_column(self.logs_dir, "round_id").max())
        return max(self.first_round, written + 1)

    def record(self, request_id: str, served: dict[str, Any]) -> None:
        """Remember a served request: ``users`` (n,), ``items``, ``propensities``, ``prefix``.

        The last three have shape (n, k); ``policy`` is one name or one per user (A/B tests).
        The request is journaled (handed to the operating system, not fsynced) before it is
        remembered; a request id recorded again replaces the earlier request, as the newest.

        Raises:
            DataError: If ``served`` holds a value that cannot be journaled.
        """
        try:
            line = _line({"kind": "served", "request_id": request_id, "served": served})
        except (TypeError, ValueError) as exc:
            raise DataError(f"served: cannot be journaled as JSON ({exc})") from None
        with self._lock:
            self._append(line, sync=False)
            self._remember(request_id, served, self._segment)
            self._served_lines += 1
            if self._served_lines >= self.capacity:  # rare feedback: retire the segment anyway
                self._flush_after_ack(rotate=True)

    def add_feedback(self, request_id: str, clicks: list[list[int]]) -> FeedbackReceipt:
        """Join clicks to a served request and buffer its impressions.

        The clicks are journaled (and fsynced, with ``sync``) before the method returns. The
        same clicks for a request answered already (a retry) add nothing and return the first
        answer's row count, with ``repeated=True``.

        Raises:
            UnknownRequestError: If the request is neither pending nor recently answered.
            FeedbackConflictError: If the request was answered with other clicks.
            DataError: If ``clicks`` does not match the request's slates (shape named).
        """
        with self._lock:
            served = self.pending.get(request_id)
            if served is None:
                return self._repeat(request_id, clicks)
            items = served["items"]
            n, k = items.shape
            lengths = sorted({len(row) for row in clicks})
            if len(clicks) != n or lengths != [k]:
                raise DataError(
                    f"clicks: expected {n} list(s) of {k} clicks (users x items of the request); "
                    f"got {len(clicks)} list(s) of lengths {lengths}"
                )
            clicks_array = np.asarray(clicks, dtype=np.int64)
            chunk = self._chunk(served, clicks_array)
            entry = {"kind": "feedback", "request_id": request_id, "clicks": clicks_array.tolist()}
            self._append(_line(entry), sync=self.sync)
            self._answer(request_id, chunk, clicks_array)
            if self.buffered_rows >= self.flush_rows:
                self._flush_after_ack(rotate=False)
            return FeedbackReceipt(rows=chunk.n_rows)

    def _repeat(self, request_id: str, clicks: list[list[int]]) -> FeedbackReceipt:
        """The answer to feedback for a request that is not pending (a retry, or an error)."""
        answer = self.answered.get(request_id)
        if answer is None:
            raise UnknownRequestError(
                f"request_id: {request_id!r} is not pending (never served, or older than the "
                f"last {self.capacity} requests)"
            )
        digest, rows = answer
        try:
            same = _clicks_digest(np.asarray(clicks, dtype=np.int64)) == digest
        except ValueError:  # ragged: not the clicks that were logged
            same = False
        if not same:
            raise FeedbackConflictError(
                f"request_id: {request_id!r} was answered already, with other clicks; "
                "its first feedback stays logged"
            )
        return FeedbackReceipt(rows=rows, repeated=True)

    def flush(self) -> Path | None:
        """Write the buffered rows as one Parquet part file (atomically); returns its path.

        The part is named after the journal segment whose feedback it holds; a new segment is
        started.
        """
        with self._lock:
            if not self.buffer:
                return None
            return self._rotate()

    def close(self) -> None:
        """Close the journal (buffered rows stay in it, for the next sink on the directory)."""
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        self.close()

    # Pending requests and buffered rows (the same steps live and in a replay).

    def _remember(self, request_id: str, served: dict[str, Any], segment: int) -> None:
        if request_id in self.pending:
            self._forget(request_id)
        self.pending[request_id] = served
        self._origin[request_id] = segment
        self._live[segment] += 1
        while len(self.pending) > self.capacity:
            self._forget(next(iter(self.pending)))

    def _forget(self, request_id: str) -> None:
        """Drop a pending request (expired, replaced, or answered in a part file already)."""
        del self.pending[request_id]
        self._live[self._origin.pop(request_id)] -= 1

    def _chunk(self, served: dict[str, Any], clicks: np.ndarray) -> LoggedFeedback:
        users = np.asarray(served["users"], dtype=np.int64)
        if self.user_features is not None:
            features = self.user_features[users]
        else:
            features = np.zeros((len(users), 1), dtype=np.float32)
        return LoggedFeedback.from_slates(
            users=users,
            slates=served["items"],
            clicks=clicks,
            pscore=served["propensities"],
            pscore_prefix=served["prefix"],
            user_features=features,
            policy=served["policy"],
            n_items=self.n_items,
            first_round=self.next_round,
        )

    def _answer(self, request_id: str, chunk: LoggedFeedback, clicks: np.ndarray) -> None:
        served = self.pending.pop(request_id)
        self._remember_answer(request_id, clicks, rows=chunk.n_rows)
        # Its served line must stay in the journal until the rows are in a part file.
        self._answered.append(self._origin.pop(request_id))
        self.next_round = int(chunk.round_id[-1]) + 1
        self.buffer.append(chunk)
        self.buffered_rows += chunk.n_rows
        self._estimated |= "estimated" in served.get("propensity_kind", ())

    def _remember_answer(self, request_id: str, clicks: np.ndarray, *, rows: int) -> None:
        self.answered[request_id] = (_clicks_digest(clicks), rows)
        self.answered.move_to_end(request_id)
        while len(self.answered) > self.capacity:
            self.answered.popitem(last=False)

    # Journal segments.

    def _path(self, segment: int) -> Path:
        return self.journal_dir / _segment_name(segment)

    def _append(self, line: bytes, *, sync: bool) -> None:
        """Append one line to the open segment; on failure the segment is cut back to before it."""
        if self._fd is None:
            self._open_segment()
        view, end = memoryview(line), os.fstat(self._fd).st_size
        try:
            while view:
                view = view[os.write(self._fd, view) :]
            if sync:
                os.fsync(self._fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, end)
            raise

    def _open_segment(self) -> None:
        """Start the next segment and delete the retired ones no pending request needs."""
        segment = self._segment + 1
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        while True:  # a number taken (by another sink on the directory) is never reused
            try:
                descriptor = os.open(self._path(segment), flags, 0o644)
                break
            except FileExistsError:
                segment += 1
        try:
            os.write(descriptor, _line({"kind": "journal", "version": JOURNAL_VERSION}))
            if self.sync:
                os.fsync(descriptor)
                _fsync_path(self.journal_dir)
        except BaseException:
            os.close(descriptor)
            self._path(segment).unlink(missing_ok=True)
            raise
        self._fd, self._segment, self._served_lines = descriptor, segment, 0
        for retired in sorted(self._retired):
            if self._live[retired] <= 0:
                self._path(retired).unlink(missing_ok=True)
                self._retired.discard(retired)
                del self._live[retired]

    def _rotate(self) -> Path | None:
        """Write the open segment's rows as its part file, retire it and open the next one."""
        path = self._write_part(self._segment) if self.buffer else None
        self.close()
        self._retired.add(self._segment)
        self._open_segment()
        return path

    def _flush_after_ack(self, *, rotate: bool) -> None:
        """Flush after an acknowledged change: a failure is logged, the next flush retries."""
        try:
            if rotate or self.buffer:
                self._rotate()
        except OSError:  # the rows stay buffered and journaled
            _logger.warning(
                "feedback flush to %s failed; retried later", self.logs_dir, exc_info=True
            )

    def _write_part(self, segment: int) -> Path:
        slate_size = max(chunk.slate_size for chunk in self.buffer)
        # concat keeps the first part's slate size: give it the largest before concatenating.
        first = dataclasses.replace(self.buffer[0], slate_size=slate_size)
        chunk = LoggedFeedback.concat([first, *self.buffer[1:]])
        metadata = {
            **self.metadata,
            "source": "causalrec serve feedback",
            "journal_segment": segment,
            "n_items": self.n_items,
            "slate_size": slate_size,
            # As in simulated logs: whether some served marginals were Monte Carlo estimates.
            "pscore": "estimated" if self._estimated else "exact",
        }
        if self.replica is not None:
            metadata["feedback_replica"] = self.replica
        schema = log_schema_module.log_schema(chunk.user_features.shape[1], metadata)
        path = self.logs_dir / _part_name(segment)
        storage.write_table_atomic(path, storage.feedback_to_table(chunk, schema))
        if self.sync:  # the part must be on disk before its segment can go
            try:
                _fsync_path(path)
                _fsync_path(self.logs_dir)
            except BaseException:  # no part may stand for a segment that still grows
                path.unlink(missing_ok=True)
                raise
        for origin in self._answered:
            self._live[origin] -= 1
        self.buffer, self.buffered_rows, self._estimated, self._answered = [], 0, False, []
        self.written_files += 1
        return path

    def _replay(self) -> None:
        """Rebuild pending requests and buffered rows from the journal a previous sink left."""
        segments = _numbers(self.journal_dir, _SEGMENT_FILE)
        parts = set(_numbers(self.logs_dir, _PART_FILE))
        for segment in segments:
            written = segment in parts
            for entry in _read_segment(self._path(segment)):
                request_id = entry["request_id"]
                if entry["kind"] == "served":
                    self._remember(request_id, entry["served"], segment)
                elif request_id not in self.pending:  # a retried write's second copy
                    continue
                elif written:  # its rows are in the segment's part file already
                    self._forget(request_id)
                    clicks = np.asarray(entry["clicks"], dtype=np.int64)
                    self._remember_answer(request_id, clicks, rows=clicks.size)
                else:
                    clicks = np.asarray(entry["clicks"], dtype=np.int64)
                    self._answer(request_id, self._chunk(self.pending[request_id], clicks), clicks)
            if self.buffer:
                self._write_part(segment)
            self._retired.add(segment)
        self._segment = max([*segments, *parts], default=-1)
        self._open_segment()
