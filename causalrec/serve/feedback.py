"""Served traffic becomes logs: pending recommendations joined with their clicks, in batches.

The sink remembers each served request (its slates and their exact propensities) until its
feedback arrives, then buffers the impressions as rows of the causalrec log format and writes a
Parquet part file atomically (temporary file, then rename) every ``flush_rows`` rows, so
``read_logs(feedback_dir)`` always sees whole files and the traffic can be evaluated off-policy
later, as any other log. One sink replica per application keeps round ids unique.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from causalrec.platform import schema as log_schema_module
from causalrec.platform import storage
from causalrec.platform.errors import DataError
from causalrec.platform.feedback import LoggedFeedback

__all__ = ["FeedbackLog", "UnknownRequestError"]


class UnknownRequestError(DataError):
    """Feedback for a request id the sink does not hold (never served, expired or answered)."""


class FeedbackLog:
    """Pending served requests and a buffer of logged impressions.

    Args:
        directory: Log directory (``part-*.parquet`` files go to ``directory/logs``).
        n_items: Catalogue size of the served model.
        capacity: Pending requests remembered (the oldest is dropped first).
        flush_rows: Buffered rows that trigger a write.
        metadata: Extra self-description stored in every file (model version, ...).
        user_features: Features of every user, shape (n_users, d), logged with each impression
            (``None``: one constant 0 column — the log format needs at least one).
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
    ):
        self.directory = Path(directory)
        self.logs_dir = self.directory / storage.LOGS_SUBDIR
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.n_items, self.capacity, self.flush_rows = n_items, capacity, flush_rows
        self.metadata = dict(metadata or {})
        self._estimated = False  # whether a buffered slate has estimated propensities
        self.user_features = user_features
        self.pending: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.buffer: list[LoggedFeedback] = []
        self.buffered_rows = 0
        self.written_files = 0
        self.next_round = self._next_round_id()

    def _next_round_id(self) -> int:
        if not any(self.logs_dir.glob("part-*.parquet")):
            return 0
        return int(storage.read_log_column(self.logs_dir, "round_id").max()) + 1

    def record(self, request_id: str, served: dict[str, Any]) -> None:
        """Remember a served request: ``users`` (n,), ``items``, ``propensities``, ``prefix``.

        The last three have shape (n, k); ``policy`` is one name or one per user (A/B tests).
        """
        self.pending[request_id] = served
        while len(self.pending) > self.capacity:
            self.pending.popitem(last=False)

    def add_feedback(self, request_id: str, clicks: list[list[int]]) -> int:
        """Join clicks to a served request and buffer its impressions; returns the row count.

        Raises:
            UnknownRequestError: If the request is not pending.
            DataError: If ``clicks`` does not match the request's slates (shape named).
        """
        served = self.pending.get(request_id)
        if served is None:
            raise UnknownRequestError(
                f"request_id: {request_id!r} is not pending (never served, already answered, or "
                f"older than the last {self.capacity} requests)"
            )
        items = served["items"]
        n, k = items.shape
        lengths = sorted({len(row) for row in clicks})
        if len(clicks) != n or lengths != [k]:
            raise DataError(
                f"clicks: expected {n} list(s) of {k} clicks (users x items of the request); "
                f"got {len(clicks)} list(s) of lengths {lengths}"
            )
        del self.pending[request_id]
        users = np.asarray(served["users"], dtype=np.int64)
        if self.user_features is not None:
            features = self.user_features[users]
        else:
            features = np.zeros((n, 1), dtype=np.float32)
        chunk = LoggedFeedback.from_slates(
            users=users,
            slates=items,
            clicks=np.asarray(clicks, dtype=np.int64),
            pscore=served["propensities"],
            pscore_prefix=served["prefix"],
            user_features=features,
            policy=served["policy"],
            n_items=self.n_items,
            first_round=self.next_round,
        )
        self.next_round += n
        self.buffer.append(chunk)
        self.buffered_rows += chunk.n_rows
        self._estimated |= "estimated" in served.get("propensity_kind", ())
        if self.buffered_rows >= self.flush_rows:
            self.flush()
        return chunk.n_rows

    def flush(self) -> Path | None:
        """Write the buffered rows as one Parquet part file (atomically); returns its path."""
        if not self.buffer:
            return None
        slate_size = max(chunk.slate_size for chunk in self.buffer)
        # concat keeps the first part's slate size: give it the largest before concatenating.
        first = dataclasses.replace(self.buffer[0], slate_size=slate_size)
        chunk = LoggedFeedback.concat([first, *self.buffer[1:]])
        metadata = {
            **self.metadata,
            "source": "causalrec serve feedback",
            "n_items": self.n_items,
            "slate_size": slate_size,
            # As in simulated logs: whether some served marginals were Monte Carlo estimates.
            "pscore": "estimated" if self._estimated else "exact",
        }
        schema = log_schema_module.log_schema(chunk.user_features.shape[1], metadata)
        path = self.logs_dir / f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        storage.write_table_atomic(path, storage.feedback_to_table(chunk, schema))
        self.buffer, self.buffered_rows, self._estimated = [], 0, False
        self.written_files += 1
        return path
