"""The declared, versioned Arrow schema of causalrec logs.

A log is a Parquet dataset with one row per impression. The schema is declared here once; readers
check ``causalrec.schema_version`` in the Parquet key-value metadata: they read versions 1 and 2
and refuse others. Writers write version 2.

Columns (version 1):

* ``round_id`` int64: round (request) index.
* ``user_id`` int64: user id.
* ``position`` int16: 0-based slate position.
* ``item_id`` int64: shown item.
* ``click`` int8: observed click (0/1).
* ``pscore`` float64: P(item at position | user) under the logging policy.
* ``pscore_prefix`` float64: P(a_1..a_k | user), the slate prefix probability.
* ``user_features`` fixed_size_list<float32>[d]: observed user features x_u.
* ``expected_reward`` float64: ground-truth e_k·r_ui (simulated logs; null otherwise).
* ``policy`` dictionary<int8, string>: the policy that chose the impression.

Added in version 2 (so that each user's history can be rebuilt in order):

* ``session_id`` int64: the session (episode) the round belongs to.
* ``step`` int32: 0-based step of the round within its session.
* ``timestamp`` int64: world clock of the round; rows of one tick are concurrent.
* ``step_pscore`` float64: P(the whole slate shown at this step | state) under the logger, the
  per-decision propensity of sequential estimators (equals ``pscore`` when K = 1).

A version 1 log is read as one-step sessions: ``session_id`` and ``timestamp`` are the round id,
``step`` is 0 and ``step_pscore`` is the round's last ``pscore_prefix``.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

__all__ = [
    "LOG_SCHEMA_VERSION",
    "METADATA_KEY",
    "READABLE_SCHEMA_VERSIONS",
    "SCHEMA_VERSION_KEY",
    "SESSION_COLUMNS",
    "item_table_schema",
    "log_schema",
    "schema_metadata",
    "user_table_schema",
]

#: Version of the log schema written; bump on any incompatible change.
LOG_SCHEMA_VERSION = 2
#: Versions :func:`causalrec.platform.storage.read_logs` reads.
READABLE_SCHEMA_VERSIONS = (1, 2)
#: Columns added by version 2, in schema order.
SESSION_COLUMNS = ("session_id", "step", "timestamp", "step_pscore")
SCHEMA_VERSION_KEY = b"causalrec.schema_version"
METADATA_KEY = b"causalrec.metadata"


def log_schema(
    n_user_features: int,
    metadata: dict[str, Any] | None = None,
    *,
    version: int = LOG_SCHEMA_VERSION,
) -> pa.Schema:
    """The log schema of ``version`` for ``n_user_features`` observed user features."""
    fields = [
        pa.field("round_id", pa.int64(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("position", pa.int16(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("click", pa.int8(), nullable=False),
        pa.field("pscore", pa.float64()),
        pa.field("pscore_prefix", pa.float64()),
        pa.field("user_features", pa.list_(pa.float32(), n_user_features), nullable=False),
        pa.field("expected_reward", pa.float64()),
        pa.field("policy", pa.dictionary(pa.int8(), pa.string()), nullable=False),
    ]
    if version >= 2:
        fields += [
            pa.field("session_id", pa.int64(), nullable=False),
            pa.field("step", pa.int32(), nullable=False),
            pa.field("timestamp", pa.int64(), nullable=False),
            pa.field("step_pscore", pa.float64()),
        ]
    return pa.schema(fields).with_metadata(schema_metadata(metadata or {}, version=version))


def user_table_schema(n_features: int) -> pa.Schema:
    """Schema of ``users.parquet``: one row per user."""
    return pa.schema(
        [
            pa.field("user_id", pa.int64(), nullable=False),
            pa.field("features", pa.list_(pa.float32(), n_features), nullable=False),
        ]
    )


def item_table_schema(n_features: int) -> pa.Schema:
    """Schema of ``items.parquet``: one row per item (popularity is simulator ground truth)."""
    return pa.schema(
        [
            pa.field("item_id", pa.int64(), nullable=False),
            pa.field("features", pa.list_(pa.float32(), n_features), nullable=False),
            pa.field("popularity", pa.float64()),
        ]
    )


def schema_metadata(
    metadata: dict[str, Any], *, version: int = LOG_SCHEMA_VERSION
) -> dict[bytes, bytes]:
    """Parquet key-value metadata: schema version plus a JSON self-description."""
    return {
        SCHEMA_VERSION_KEY: str(version).encode(),
        METADATA_KEY: json.dumps(metadata, sort_keys=True, default=str).encode(),
    }
