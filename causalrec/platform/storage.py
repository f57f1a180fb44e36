"""Parquet storage of logs: atomic writes, streaming writer, validated reader.

A log directory holds::

    OUT/
      logs/part-00000.parquet ...   impressions (schema in causalrec.platform.schema)
      users.parquet                 user features (one row per user)
      items.parquet                 item features (one row per item)
      summary.json                  what the run measured (written last)

Every file is written under a temporary name and renamed into place, and a whole output
directory is built in a staging directory beside ``OUT`` and swapped in only when complete, so a
crash never leaves a partial file at a final path and never destroys a previous run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from causalrec.platform import schema as log_schema_module
from causalrec.platform.errors import LogFormatError, OutputExistsError
from causalrec.platform.feedback import LoggedFeedback, one_step_sessions

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "LogWriter",
    "atomic_output_dir",
    "log_files",
    "log_input_files",
    "read_item_features",
    "read_log_column",
    "read_logs",
    "read_user_features",
    "remove_stale_staging",
    "write_atomic",
    "write_csv_atomic",
    "write_json_atomic",
    "write_table_atomic",
]

LOGS_SUBDIR = "logs"
USERS_FILE = "users.parquet"
ITEMS_FILE = "items.parquet"
SUMMARY_FILE = "summary.json"
#: Rows per Parquet file: large files (tens to hundreds of MiB), not thousands of small ones.
ROWS_PER_FILE = 4_194_304
_COMPRESSION = "snappy"


def _temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it into place."""
    path = Path(path)
    tmp = _temporary_sibling(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_table_atomic(path: str | Path, table: pa.Table) -> None:
    """Write ``table`` to ``path`` as Parquet via a temporary file and an atomic rename."""
    write_atomic(path, lambda tmp: pq.write_table(table, tmp, compression=_COMPRESSION))


def write_json_atomic(path: str | Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON via a temporary file and an atomic rename."""
    text = json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text))


def write_csv_atomic(path: str | Path, frame: pd.DataFrame) -> None:
    """Write ``frame`` as CSV (no index) via a temporary file and an atomic rename."""
    write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False))


def check_output_dir(out: str | Path, *, overwrite: bool) -> Path:
    """Refuse a non-empty output directory unless ``overwrite``; nothing is touched.

    Raises:
        OutputExistsError: If ``out`` is a file, or a non-empty directory without ``overwrite``.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output path {str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"output directory {str(out)!r} is not empty; pass --overwrite (overwrite=True) to "
            "replace it"
        )
    return out


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Build an output directory in a staging directory and swap it in on success.

    Args:
        out: Final output directory.
        overwrite: Replace a non-empty ``out``. Without it a non-empty ``out`` is refused
            before any work is done.

    Yields:
        The staging directory to write into. On an exception it is deleted and ``out`` is left
        exactly as it was.
    """
    out = check_output_dir(out, overwrite=overwrite).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f"{_staging_prefix(out)}{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    lock = _hold_staging(staging)
    try:
        remove_stale_staging(out)
        yield staging
    except BaseException:
        _release_staging(staging, lock)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _release_staging(staging, lock)
    retired = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
    if out.exists():
        os.replace(out, retired)
    os.replace(staging, out)
    shutil.rmtree(retired, ignore_errors=True)


#: Lock file inside a staging directory, held (``flock``) by its writer while it writes.
_STAGING_LOCK = ".writer.lock"


def _staging_prefix(out: Path) -> str:
    return f".{out.name}.staging-"


def _hold_staging(staging: Path) -> int | None:
    """Lock ``staging`` for this writer (released by the OS if the process dies)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock (Windows): stale folders stay
        return None
    descriptor = os.open(staging / _STAGING_LOCK, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return descriptor


def _release_staging(staging: Path, descriptor: int | None) -> None:
    """Drop the lock file (it must not land in the output) and release the lock."""
    if descriptor is None:
        return
    (staging / _STAGING_LOCK).unlink(missing_ok=True)
    os.close(descriptor)


def remove_stale_staging(out: str | Path) -> list[Path]:
    """Delete staging directories of ``out`` that writers killed mid-write left behind.

    Only directories of this kind (``.NAME.staging-*`` beside ``out``) that hold a writer lock
    nobody holds any more are removed: a live writer holds its lock until it finishes, and a
    directory without a lock file (written by an older causalrec, or one being created right
    now) is left alone.

    Returns:
        The directories removed.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock (Windows)
        return []
    out = Path(out).absolute()
    removed = []
    for candidate in out.parent.glob(f"{_staging_prefix(out)}*"):
        lock_file = candidate / _STAGING_LOCK
        try:
            descriptor = os.open(lock_file, os.O_RDWR)
        except OSError:  # no lock file: not ours to judge
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a live writer holds it
            os.close(descriptor)
            continue
        try:
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
        finally:
            os.close(descriptor)
    return removed


class LogWriter:
    """Stream :class:`LoggedFeedback` chunks into a Parquet dataset directory.

    Each chunk becomes a row group; a file is closed (and atomically renamed into place) once it
    holds ``rows_per_file`` rows.

    Args:
        directory: Directory of the ``part-*.parquet`` files (created if missing).
        n_user_features: Width of the user feature vectors.
        metadata: JSON-ready self-description stored in every file's key-value metadata.
        rows_per_file: Rows after which a new file is started.
        name_prefix: File names are ``{name_prefix}{n:05d}.parquet``; writers of disjoint
            prefixes (the shards of a simulation) can share a directory.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        n_user_features: int,
        metadata: dict[str, Any],
        rows_per_file: int = ROWS_PER_FILE,
        name_prefix: str = "part-",
    ):
        if not name_prefix.startswith("part-"):
            raise ValueError(f"name_prefix must start with 'part-'; got {name_prefix!r}")
        self.directory = Path(directory)
        self.name_prefix = name_prefix
        #: Names of the files written so far, in order.
        self.file_names: list[str] = []
        self.directory.mkdir(parents=True, exist_ok=True)
        self.schema = log_schema_module.log_schema(n_user_features, metadata)
        self.rows_per_file = rows_per_file
        self._writer: pq.ParquetWriter | None = None
        self._tmp: Path | None = None
        self._final: Path | None = None
        self._rows_in_file = 0
        self.n_files = 0
        self.n_rows = 0

    def write(self, chunk: LoggedFeedback) -> None:
        """Append ``chunk`` (split across files when a file fills up)."""
        table = feedback_to_table(chunk, self.schema)
        start = 0
        while start < table.num_rows:
            if self._writer is None:
                self._open()
            take = min(self.rows_per_file - self._rows_in_file, table.num_rows - start)
            self._writer.write_table(table.slice(start, take), row_group_size=take)
            self._rows_in_file += take
            self.n_rows += take
            start += take
            if self._rows_in_file >= self.rows_per_file:
                self._close_file()

    def _open(self) -> None:
        self._final = self.directory / f"{self.name_prefix}{self.n_files:05d}.parquet"
        self._tmp = _temporary_sibling(self._final)
        self._writer = pq.ParquetWriter(
            self._tmp,
            self.schema,
            compression=_COMPRESSION,
            use_dictionary=["policy"],
            write_statistics=["round_id", "user_id", "item_id", "position"],
        )

    def _close_file(self) -> None:
        self._writer.close()
        os.replace(self._tmp, self._final)
        self.file_names.append(self._final.name)
        self._writer, self._rows_in_file = None, 0
        self.n_files += 1

    def close(self) -> None:
        """Finish the current file."""
        if self._writer is not None:
            self._close_file()

    def abort(self) -> None:
        """Drop the file being written (nothing partial stays behind)."""
        if self._writer is not None:
            self._writer.close()
            self._tmp.unlink(missing_ok=True)
            self._writer = None

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def feedback_to_table(chunk: LoggedFeedback, schema: pa.Schema) -> pa.Table:
    """Convert a :class:`LoggedFeedback` chunk to an Arrow table of the log schema."""
    features = np.ascontiguousarray(chunk.user_features, dtype=np.float32)
    width = schema.field("user_features").type.list_size
    if features.shape[1] != width:
        raise LogFormatError(
            f"user_features has width {features.shape[1]}; the log expects {width}"
        )
    names, codes = np.unique(chunk.policy, return_inverse=True)
    columns = [
        pa.array(chunk.round_id, pa.int64()),
        pa.array(chunk.user_id, pa.int64()),
        pa.array(chunk.position.astype(np.int16), pa.int16()),
        pa.array(chunk.item_id, pa.int64()),
        pa.array(chunk.click.astype(np.int8), pa.int8()),
        pa.array(chunk.pscore, pa.float64(), from_pandas=True),
        pa.array(chunk.pscore_prefix, pa.float64(), from_pandas=True),
        pa.FixedSizeListArray.from_arrays(pa.array(features.ravel(), pa.float32()), width),
        pa.array(chunk.expected_reward, pa.float64(), from_pandas=True),
        pa.DictionaryArray.from_arrays(
            pa.array(codes.astype(np.int8), pa.int8()), pa.array(names.astype(str), pa.string())
        ),
    ]
    if schema.get_field_index("session_id") >= 0:
        columns += [
            pa.array(chunk.session_id, pa.int64()),
            pa.array(chunk.step.astype(np.int32), pa.int32()),
            pa.array(chunk.timestamp, pa.int64()),
            pa.array(chunk.step_pscore, pa.float64(), from_pandas=True),
        ]
    return pa.Table.from_arrays(columns, schema=schema)


def write_feature_tables(
    directory: str | Path,
    user_features: np.ndarray,
    item_features: np.ndarray,
    popularity: np.ndarray | None = None,
) -> None:
    """Write ``users.parquet`` and ``items.parquet`` beside a log.

    Args:
        directory: The log directory.
        user_features: Shape (n_users, n_user_features).
        item_features: Shape (n_items, n_item_features).
        popularity: Ground-truth item popularity, shape (n_items,), if known.
    """
    directory = Path(directory)
    users = np.ascontiguousarray(user_features, dtype=np.float32)
    items = np.ascontiguousarray(item_features, dtype=np.float32)
    user_table = pa.Table.from_arrays(
        [
            pa.array(np.arange(len(users)), pa.int64()),
            pa.FixedSizeListArray.from_arrays(pa.array(users.ravel()), users.shape[1]),
        ],
        schema=log_schema_module.user_table_schema(users.shape[1]),
    )
    item_table = pa.Table.from_arrays(
        [
            pa.array(np.arange(len(items)), pa.int64()),
            pa.FixedSizeListArray.from_arrays(pa.array(items.ravel()), items.shape[1]),
            pa.array(
                popularity if popularity is not None else np.full(len(items), np.nan),
                pa.float64(),
                from_pandas=True,
            ),
        ],
        schema=log_schema_module.item_table_schema(items.shape[1]),
    )
    write_table_atomic(directory / USERS_FILE, user_table)
    write_table_atomic(directory / ITEMS_FILE, item_table)


def _read_parquet(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise LogFormatError(f"cannot read Parquet file {str(path)!r}: {exc}") from None


def _check_version(path: Path, schema: pa.Schema) -> tuple[dict[str, Any], int]:
    """The file's self-description and schema version, after checking both."""
    metadata = schema.metadata or {}
    version = metadata.get(log_schema_module.SCHEMA_VERSION_KEY)
    if version is None:
        raise LogFormatError(f"{str(path)!r} is not a causalrec log (no schema version metadata)")
    readable = log_schema_module.READABLE_SCHEMA_VERSIONS
    if int(version) not in readable:
        raise LogFormatError(
            f"{str(path)!r} has log schema version {int(version)}; this causalrec reads versions "
            f"{', '.join(map(str, readable))}"
        )
    version = int(version)
    width = schema.field("user_features").type.list_size if "user_features" in schema.names else 0
    expected = log_schema_module.log_schema(width, version=version)
    missing = [name for name in expected.names if name not in schema.names]
    if missing:
        raise LogFormatError(
            f"{str(path)!r} claims log schema version {version} but has no column "
            f"{', '.join(repr(name) for name in missing)}"
        )
    if not schema.remove_metadata().equals(expected.remove_metadata()):
        raise LogFormatError(f"{str(path)!r} does not have the causalrec log schema")
    return json.loads(metadata.get(log_schema_module.METADATA_KEY, b"{}")), version


def _features(table: pa.Table, column: str) -> np.ndarray:
    array = table.column(column).combine_chunks()
    width = array.type.list_size
    return array.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)


def _decode_strings(chunk: pa.Array) -> np.ndarray:
    if isinstance(chunk, pa.DictionaryArray):
        names = np.asarray(chunk.dictionary.to_pylist(), dtype=str)
        return names[chunk.indices.to_numpy(zero_copy_only=False)]
    return np.asarray(chunk.to_pylist(), dtype=str)


def _read_feature_table(path: Path) -> pa.Table | None:
    return _read_parquet(path) if path.is_file() else None


def _read_features(path: Path) -> np.ndarray | None:
    table = _read_feature_table(path)
    return _features(table, "features") if table is not None else None


def read_user_features(directory: str | Path) -> np.ndarray | None:
    """The ``users.parquet`` feature table of a directory, shape (n_users, d), or ``None``."""
    return _read_features(Path(directory) / USERS_FILE)


def read_item_features(directory: str | Path) -> np.ndarray | None:
    """The ``items.parquet`` feature table of a directory, shape (n_items, d), or ``None``."""
    return _read_features(Path(directory) / ITEMS_FILE)


#: Sub-directories of a log directory written by several feedback sinks (``replica-00``, ...),
#: each a log directory itself (see :mod:`causalrec.serve.feedback`).
REPLICA_PREFIX = "replica-"


def _replica_dirs(path: Path) -> list[Path]:
    """``path``'s ``replica-<n>`` sub-directories, by ``n``."""
    found = []
    for child in path.glob(f"{REPLICA_PREFIX}*"):
        number = child.name[len(REPLICA_PREFIX) :]
        if number.isascii() and number.isdigit() and child.is_dir():
            found.append((int(number), child.name, child))
    return [child for *_, child in sorted(found)]


def log_files(path: str | Path) -> list[Path]:
    """The Parquet part files of a log directory (or the file itself), in order.

    A directory written by several feedback sinks holds its parts in ``replica-<n>/logs/``: they
    follow the directory's own parts (if any), replica by replica (by ``n``), each in part order.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    directory = path / LOGS_SUBDIR if (path / LOGS_SUBDIR).is_dir() else path
    files = sorted(directory.glob("part-*.parquet"))
    for replica in _replica_dirs(path):
        files += sorted((replica / LOGS_SUBDIR).glob("part-*.parquet"))
    if not files:
        raise LogFormatError(f"no log files (part-*.parquet) under {str(path)!r}")
    return files


def log_input_files(path: str | Path) -> list[Path]:
    """Every file :func:`read_logs` opens for ``path``: its part files and its feature tables."""
    path = Path(path)
    files = log_files(path)
    if path.is_dir() and (path / LOGS_SUBDIR).is_dir():
        files += [table for table in (path / USERS_FILE, path / ITEMS_FILE) if table.is_file()]
    return files


def read_log_column(path: str | Path, column: str) -> np.ndarray:
    """One column of a log's part files, without reading the rest of the log."""
    return np.concatenate(
        [
            pq.read_table(file, columns=[column]).column(column).to_numpy()
            for file in log_files(path)
        ]
    )


def read_logs(path: str | Path) -> LoggedFeedback:
    """Read a causalrec log into a :class:`LoggedFeedback`.

    Args:
        path: A log directory (as written by ``causalrec simulate``), its ``logs/`` folder, or
            one Parquet part file.

    Returns:
        The whole log in memory, with the user and item feature tables when present.

    Raises:
        LogFormatError: If a file is missing, truncated, corrupt, or of another schema version
            (the message names the file).
    """
    path = Path(path)
    if not path.exists():
        raise LogFormatError(f"log path {str(path)!r} does not exist")
    tables, session_parts, metadata, slate_size = [], [], {}, 1
    v1_names = log_schema_module.log_schema(1, version=1).names
    for file in log_files(path):
        table = _read_parquet(file)
        metadata, version = _check_version(file, table.schema)
        # Files appended over time (served traffic) may differ in slate size: take the largest.
        simulated = metadata.get("simulator", {})
        slate_size = max(
            slate_size, int(metadata.get("slate_size", simulated.get("slate_size", 1)))
        )
        tables.append(table.select(v1_names).replace_schema_metadata(None))
        session_parts.append(_session_columns(table) if version >= 2 else table.num_rows)
    table = pa.concat_tables(tables)
    root = path if path.is_dir() and (path / LOGS_SUBDIR).is_dir() else None

    def column(name: str, dtype=None) -> np.ndarray:
        values = table.column(name).to_numpy()
        return values.astype(dtype) if dtype is not None else values

    policy = np.concatenate(
        [_decode_strings(chunk) for chunk in table.column("policy").chunks] or [np.array([], str)]
    )
    simulator = metadata.get("simulator", {})
    pscore_prefix = column("pscore_prefix", np.float64)
    sessions = _merge_session_columns(
        session_parts, column("round_id"), column("position"), pscore_prefix
    )
    return LoggedFeedback(
        round_id=column("round_id"),
        user_id=column("user_id"),
        position=column("position", np.int64),
        item_id=column("item_id"),
        click=column("click"),
        pscore=column("pscore", np.float64),
        pscore_prefix=pscore_prefix,
        user_features=_features(table, "user_features"),
        expected_reward=column("expected_reward", np.float64),
        policy=policy,
        n_items=int(metadata.get("n_items", simulator.get("n_items", 0)))
        or int(table.column("item_id").to_numpy().max()) + 1,
        slate_size=slate_size,
        user_table=read_user_features(root) if root else None,
        item_table=read_item_features(root) if root else None,
        metadata=metadata,
        **sessions,
    )


def _session_columns(table: pa.Table) -> dict[str, np.ndarray]:
    """The version-2 session columns of one file as numpy arrays."""
    return {
        "session_id": table.column("session_id").to_numpy(),
        "step": table.column("step").to_numpy().astype(np.int64),
        "timestamp": table.column("timestamp").to_numpy(),
        "step_pscore": table.column("step_pscore").to_numpy().astype(np.float64),
    }


def _merge_session_columns(
    parts: list[dict[str, np.ndarray] | int],
    round_id: np.ndarray,
    position: np.ndarray,
    pscore_prefix: np.ndarray,
) -> dict[str, np.ndarray]:
    """Session columns of a whole log; version-1 files (given by row count) get the defaults.

    A version-1 round is a one-step session (:func:`~causalrec.platform.feedback.one_step_sessions`,
    computed over the whole log so that a round split between files gets its whole slate's
    probability). With no version-2 file the defaults are left to :class:`LoggedFeedback`.
    """
    if all(isinstance(part, int) for part in parts):
        return {}
    if all(isinstance(part, dict) for part in parts):
        return {
            name: np.concatenate([part[name] for part in parts])
            for name in log_schema_module.SESSION_COLUMNS
        }
    merged = {
        name: values.copy()  # the defaults share round_id's buffer: copy before writing
        for name, values in one_step_sessions(round_id, position, pscore_prefix).items()
    }
    start = 0
    for part in parts:
        n = part if isinstance(part, int) else len(part["session_id"])
        if isinstance(part, dict):
            for name, values in merged.items():
                values[start : start + n] = part[name]
        start += n
    return merged
