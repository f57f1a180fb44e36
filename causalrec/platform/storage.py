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

``OUT`` may also be a URI (``s3://bucket/run``, ``gs://...``, ``hdfs://...``, ``file:///...``),
or a :class:`Location` (a pyarrow file system and a path on it): every reader and writer here
goes through :mod:`pyarrow.fs` then. An object store has no atomic rename of a directory, so
:func:`output_dir` writes such an output in place: each file is produced locally and uploaded
whole (an object appears complete or not at all), ``summary.json`` is written last and marks the
run complete, an overwrite deletes the old objects before writing (not atomic: a crash leaves
neither run), and a failed run deletes what it wrote. Plain paths keep the staging directory.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from causalrec.platform import schema as log_schema_module
from causalrec.platform.errors import ConfigError, LogFormatError, OutputExistsError
from causalrec.platform.feedback import LoggedFeedback, one_step_sessions

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "Location",
    "LogWriter",
    "as_location",
    "atomic_output_dir",
    "ensure_dir",
    "log_files",
    "log_input_files",
    "log_root",
    "output_dir",
    "portable",
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
#: A URI: a scheme, then ``://`` (``s3://``, ``gs://``, ``hdfs://``, ``file://`` ...).
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


@dataclass(frozen=True)
class Location:
    """A file or directory on a pyarrow file system (an object store, HDFS, a local disk).

    Every reader and writer of this module accepts one wherever it accepts a path; a URI string
    is resolved to one (:meth:`from_uri`). Build one directly to use a file system object that
    has no URI (a ``pyarrow.fs.PyFileSystem`` over fsspec, a configured ``S3FileSystem``).

    Attributes:
        filesystem: The file system.
        path: The path on it (no trailing slash).
        uri: The URI it was resolved from (joined with the names below it), or ``None``: another
            process (a Ray task on another node) resolves the same place from it.
    """

    filesystem: pafs.FileSystem
    path: str
    uri: str | None = None

    @classmethod
    def from_uri(cls, uri: str) -> Location:
        """Resolve ``uri`` with :meth:`pyarrow.fs.FileSystem.from_uri`.

        Raises:
            ConfigError: pyarrow does not understand the URI (names it).
        """
        try:
            filesystem, path = pafs.FileSystem.from_uri(uri)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ConfigError(f"cannot open {uri!r} with pyarrow.fs: {exc}") from None
        head, separator, query = uri.partition("?")
        head = head.rstrip("/") if not head.endswith(":///") else head
        return cls(filesystem, path.rstrip("/") or path, f"{head}{separator}{query}")

    @property
    def name(self) -> str:
        """The last component of the path."""
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def __truediv__(self, name: str) -> Location:
        """The location ``name`` below this one."""
        uri = None
        if self.uri is not None:
            head, separator, query = self.uri.partition("?")
            uri = f"{head.rstrip('/')}/{name}{separator}{query}"
        return Location(self.filesystem, f"{self.path.rstrip('/')}/{name}", uri)

    def __str__(self) -> str:
        return self.uri if self.uri is not None else f"{self.filesystem.type_name}:{self.path}"

    def info(self) -> pafs.FileInfo:
        """The file system's record of the path (``type`` is ``NotFound`` when missing)."""
        return self.filesystem.get_file_info(self.path)

    def is_file(self) -> bool:
        """Whether the path is a file."""
        return self.info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        """Whether the path is a directory (on an object store: a prefix of some object)."""
        return self.info().type == pafs.FileType.Directory

    def exists(self) -> bool:
        """Whether the path exists."""
        return self.info().type != pafs.FileType.NotFound

    def children(self) -> list[pafs.FileInfo]:
        """The entries directly below this directory (none when it is missing)."""
        selector = pafs.FileSelector(self.path, allow_not_found=True, recursive=False)
        return self.filesystem.get_file_info(selector)

    def portable(self) -> str | Location:
        """What to hand another process: the URI if there is one (resolved there), else this."""
        return self.uri if self.uri is not None else self


def as_location(path: str | Path | Location) -> Location | None:
    """The :class:`Location` of a URI or a ``Location``; ``None`` for a local path."""
    if isinstance(path, Location):
        return path
    if isinstance(path, str) and _URI.match(path):
        return Location.from_uri(path)
    return None


def _resolve(path: str | Path | Location) -> Path | Location:
    location = as_location(path)
    return location if location is not None else Path(path)


def _temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def _spool_file() -> Path:
    """A new empty local temporary file: a file bound for a :class:`Location` is written here."""
    descriptor, name = tempfile.mkstemp(prefix=".causalrec-", suffix=".tmp")
    os.close(descriptor)
    return Path(name)


def _publish(local: Path, target: Location) -> None:
    """Upload the finished local file ``local`` to ``target`` in one piece.

    An object store makes an upload visible only once complete (a PUT, or a multipart upload
    completed on close). A local file system has no such guarantee, but it renames atomically:
    the file is uploaded under a temporary sibling and renamed into place.
    """
    filesystem = target.filesystem
    local_fs = pafs.LocalFileSystem()
    if not isinstance(filesystem, pafs.LocalFileSystem):
        pafs.copy_files(
            str(local), target.path, source_filesystem=local_fs, destination_filesystem=filesystem
        )
        return
    parent, _, name = target.path.rpartition("/")
    filesystem.create_dir(parent or "/", recursive=True)
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        pafs.copy_files(
            str(local), tmp, source_filesystem=local_fs, destination_filesystem=filesystem
        )
        filesystem.move(tmp, target.path)
    finally:
        if filesystem.get_file_info(tmp).type != pafs.FileType.NotFound:
            filesystem.delete_file(tmp)


def write_atomic(path: str | Path | Location, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it into place.

    For a URI or :class:`Location`, ``tmp`` is a local temporary file, uploaded whole.
    """
    location = as_location(path)
    if location is not None:
        tmp = _spool_file()
        try:
            write(tmp)
            _publish(tmp, location)
        finally:
            tmp.unlink(missing_ok=True)
        return
    path = Path(path)
    tmp = _temporary_sibling(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_table_atomic(path: str | Path | Location, table: pa.Table) -> None:
    """Write ``table`` to ``path`` as Parquet via a temporary file and an atomic rename."""
    write_atomic(path, lambda tmp: pq.write_table(table, tmp, compression=_COMPRESSION))


def write_json_atomic(path: str | Path | Location, payload: Any) -> None:
    """Write ``payload`` as indented JSON via a temporary file and an atomic rename."""
    text = json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text))


def write_csv_atomic(path: str | Path | Location, frame: pd.DataFrame) -> None:
    """Write ``frame`` as CSV (no index) via a temporary file and an atomic rename."""
    write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False))


def check_output_dir(
    out: str | Path | Location, *, overwrite: bool, uri: bool = False
) -> Path | Location:
    """Refuse a non-empty output directory unless ``overwrite``; nothing is touched.

    Args:
        out: The output directory (a URI only where ``uri``).
        overwrite: Whether a non-empty ``out`` may be replaced.
        uri: Whether the caller writes through :func:`output_dir`, which accepts storage URIs
            (``s3://``...); other writers take local directories only, and a URI is refused
            here, before any work.

    Returns:
        ``out`` as a ``Path``, or as a :class:`Location` for a URI.

    Raises:
        ConfigError: ``out`` is a URI and ``uri`` is false.
        OutputExistsError: If ``out`` is a file, or a non-empty directory without ``overwrite``.
    """
    location = as_location(out)
    if location is not None and not uri:
        raise ConfigError(
            f"output {str(out)!r}: this command writes to local directories only (storage "
            "URIs are supported by `causalrec simulate` / write_logs); write locally and copy"
        )
    if location is not None:
        info = location.info()
        if info.type not in (pafs.FileType.NotFound, pafs.FileType.Directory):
            raise OutputExistsError(f"output path {str(location)!r} exists and is not a directory")
        if info.type == pafs.FileType.Directory and location.children() and not overwrite:
            raise OutputExistsError(
                f"output directory {str(location)!r} is not empty; pass --overwrite "
                "(overwrite=True) to replace it"
            )
        return location
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
    if as_location(out) is not None:
        raise ConfigError(
            f"{str(out)!r}: this output must be a local directory (logs can be written to a URI: "
            "storage.output_dir)"
        )
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


@contextlib.contextmanager
def output_dir(out: str | Path | Location, *, overwrite: bool = False) -> Iterator[Path | Location]:
    """The root to write an output directory under, local or on a pyarrow file system.

    A local path is built in a staging directory and swapped in on success
    (:func:`atomic_output_dir`). A URI or :class:`Location` (an object store has no atomic
    rename of a directory) is written in place: the writers of this module upload each file
    whole, the caller writes ``summary.json`` last (it marks the output complete), an
    ``overwrite`` deletes the old contents before anything is written (so it is not atomic: a
    run that fails then leaves no run at all), and on an exception everything under ``out`` is
    deleted. Two writers of one URI at once are not detected.

    Args:
        out: Final output directory: a path, a URI or a :class:`Location`.
        overwrite: Replace a non-empty ``out``; without it a non-empty ``out`` is refused
            before any work is done.

    Yields:
        The staging directory (a ``Path``) or the output's :class:`Location`. Pass
        ``root / name`` to :class:`LogWriter` and the ``write_*`` functions; a Ray task gets
        :func:`portable` of it.
    """
    location = as_location(out)
    if location is None:
        with atomic_output_dir(out, overwrite=overwrite) as staging:
            yield staging
        return
    check_output_dir(location, overwrite=overwrite, uri=True)
    existed = location.is_dir()
    if existed:
        location.filesystem.delete_dir_contents(location.path)
    try:
        yield location
    except BaseException:
        _delete_output(location, keep_root=existed)
        raise


def _delete_output(location: Location, *, keep_root: bool) -> None:
    """Delete everything under ``location`` (and the directory itself unless ``keep_root``)."""
    filesystem = location.filesystem
    filesystem.delete_dir_contents(location.path, missing_dir_ok=True)
    bucket = filesystem.type_name in ("s3", "gcs") and "/" not in location.path.strip("/")
    if not keep_root and not bucket and location.is_dir():
        filesystem.delete_dir(location.path)


def portable(path: Path | Location) -> str | Location:
    """``path`` as another process (a Ray task, maybe on another node) should receive it."""
    return path.portable() if isinstance(path, Location) else str(path)


def ensure_dir(directory: str | Path | Location) -> None:
    """Create a directory (object stores have none: nothing to do there)."""
    location = as_location(directory)
    if location is None:
        Path(directory).mkdir(parents=True, exist_ok=True)
    elif isinstance(location.filesystem, pafs.LocalFileSystem):
        location.filesystem.create_dir(location.path, recursive=True)


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
    holds ``rows_per_file`` rows. In a URI or :class:`Location` directory each file is written
    to a local temporary file and uploaded whole once closed, under its final name.

    Args:
        directory: Directory of the ``part-*.parquet`` files (created if missing): a path, a
            URI or a :class:`Location`.
        n_user_features: Width of the user feature vectors.
        metadata: JSON-ready self-description stored in every file's key-value metadata.
        rows_per_file: Rows after which a new file is started.
        name_prefix: File names are ``{name_prefix}{n:05d}.parquet``; writers of disjoint
            prefixes (the shards of a simulation) can share a directory.
    """

    def __init__(
        self,
        directory: str | Path | Location,
        *,
        n_user_features: int,
        metadata: dict[str, Any],
        rows_per_file: int = ROWS_PER_FILE,
        name_prefix: str = "part-",
    ):
        if not name_prefix.startswith("part-"):
            raise ValueError(f"name_prefix must start with 'part-'; got {name_prefix!r}")
        #: Where the files go: a local ``Path``, or a :class:`Location` (uploaded when closed).
        self.directory = _resolve(directory)
        self.name_prefix = name_prefix
        #: Names of the files written so far, in order.
        self.file_names: list[str] = []
        ensure_dir(self.directory)
        self.schema = log_schema_module.log_schema(n_user_features, metadata)
        self.rows_per_file = rows_per_file
        self._writer: pq.ParquetWriter | None = None
        self._tmp: Path | None = None
        self._final: Path | Location | None = None
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
        local = isinstance(self._final, Path)
        self._tmp = _temporary_sibling(self._final) if local else _spool_file()
        self._writer = pq.ParquetWriter(
            self._tmp,
            self.schema,
            compression=_COMPRESSION,
            use_dictionary=["policy"],
            write_statistics=["round_id", "user_id", "item_id", "position"],
        )

    def _close_file(self) -> None:
        self._writer.close()
        if isinstance(self._final, Location):
            try:
                _publish(self._tmp, self._final)
            finally:
                self._tmp.unlink(missing_ok=True)
        else:
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
    directory: str | Path | Location,
    user_features: np.ndarray,
    item_features: np.ndarray,
    popularity: np.ndarray | None = None,
) -> None:
    """Write ``users.parquet`` and ``items.parquet`` beside a log.

    Args:
        directory: The log directory (a path, a URI or a :class:`Location`).
        user_features: Shape (n_users, n_user_features).
        item_features: Shape (n_items, n_item_features).
        popularity: Ground-truth item popularity, shape (n_items,), if known.
    """
    directory = _resolve(directory)
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


def _read_parquet(path: Path | Location, columns: list[str] | None = None) -> pa.Table:
    try:
        if isinstance(path, Location):
            return pq.read_table(path.path, columns=columns, filesystem=path.filesystem)
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise LogFormatError(f"cannot read Parquet file {str(path)!r}: {exc}") from None


def open_parquet(path: str | Path | Location) -> pq.ParquetFile:
    """A part file's :class:`pyarrow.parquet.ParquetFile` (metadata without the rows).

    Raises:
        LogFormatError: The file is missing or not Parquet (names it).
    """
    path = _resolve(path)
    try:
        if isinstance(path, Location):
            return pq.ParquetFile(path.path, filesystem=path.filesystem)
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise LogFormatError(f"cannot read Parquet file {str(path)!r}: {exc}") from None


def log_file_metadata(
    path: str | Path | Location, parquet: pq.ParquetFile | None = None
) -> dict[str, Any]:
    """A part file's self-description (its ``causalrec.metadata``), schema checked, rows unread.

    Args:
        path: The part file.
        parquet: The file already opened (:func:`open_parquet`), to read its footer once.

    Raises:
        LogFormatError: The file is missing, not Parquet, or not a readable causalrec log.
    """
    parquet = parquet if parquet is not None else open_parquet(path)
    return _check_version(path, parquet.schema_arrow)[0]


def metadata_slate_size(metadata: dict[str, Any]) -> int:
    """The slate size a part file's metadata records (1 when it records none)."""
    return int(metadata.get("slate_size", metadata.get("simulator", {}).get("slate_size", 1)))


def _check_version(path: Path | Location, schema: pa.Schema) -> tuple[dict[str, Any], int]:
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


def _read_feature_table(path: Path | Location) -> pa.Table | None:
    return _read_parquet(path) if path.is_file() else None


def _read_features(path: Path | Location) -> np.ndarray | None:
    table = _read_feature_table(path)
    return _features(table, "features") if table is not None else None


def read_user_features(directory: str | Path | Location) -> np.ndarray | None:
    """The ``users.parquet`` feature table of a directory, shape (n_users, d), or ``None``."""
    return _read_features(_resolve(directory) / USERS_FILE)


def read_item_features(directory: str | Path | Location) -> np.ndarray | None:
    """The ``items.parquet`` feature table of a directory, shape (n_items, d), or ``None``."""
    return _read_features(_resolve(directory) / ITEMS_FILE)


#: Sub-directories of a log directory written by several feedback sinks (``replica-00``, ...),
#: each a log directory itself (see :mod:`causalrec.serve.feedback`).
REPLICA_PREFIX = "replica-"


def _replica_dirs(path: Path | Location) -> list[Path | Location]:
    """``path``'s ``replica-<n>`` sub-directories, by ``n``."""
    found = []
    for child in _children(path, f"{REPLICA_PREFIX}*", directories=True):
        number = child.name[len(REPLICA_PREFIX) :]
        if number.isascii() and number.isdigit() and child.is_dir():
            found.append((int(number), child.name, child))
    return [child for *_, child in sorted(found, key=lambda entry: entry[:2])]


def _children(
    directory: Path | Location, pattern: str, *, directories: bool = False
) -> list[Path | Location]:
    """The entries of ``directory`` whose names match ``pattern``, by name.

    A local directory is globbed (any kind of entry); on a pyarrow file system only files, or
    only directories with ``directories``, are listed.
    """
    if isinstance(directory, Path):
        return sorted(directory.glob(pattern))
    kind = pafs.FileType.Directory if directories else pafs.FileType.File
    names = sorted(
        info.base_name
        for info in directory.children()
        if info.type == kind and fnmatch.fnmatchcase(info.base_name, pattern)
    )
    return [directory / name for name in names]


def log_files(path: str | Path | Location) -> list[Path | Location]:
    """The Parquet part files of a log directory (or the file itself), in order.

    A directory written by several feedback sinks holds its parts in ``replica-<n>/logs/``: they
    follow the directory's own parts (if any), replica by replica (by ``n``), each in part order.

    Args:
        path: A log directory, its ``logs/`` folder or a part file: a local path (its files are
            returned as ``Path``), a URI or a :class:`Location` (files returned as
            :class:`Location`).
    """
    path = _resolve(path)
    if path.is_file():
        return [path]
    directory = path / LOGS_SUBDIR if (path / LOGS_SUBDIR).is_dir() else path
    files = _children(directory, "part-*.parquet")
    for replica in _replica_dirs(path):
        files += _children(replica / LOGS_SUBDIR, "part-*.parquet")
    if not files:
        raise LogFormatError(f"no log files (part-*.parquet) under {str(path)!r}")
    return files


def log_root(path: str | Path | Location) -> Path | Location | None:
    """The log directory holding the feature tables, if ``path`` is one (it has ``logs/``)."""
    path = _resolve(path)
    return path if path.is_dir() and (path / LOGS_SUBDIR).is_dir() else None


def log_input_files(path: str | Path | Location) -> list[Path | Location]:
    """Every file :func:`read_logs` opens for ``path``: its part files and its feature tables."""
    path = _resolve(path)
    files = log_files(path)
    if log_root(path) is not None:
        files += [table for table in (path / USERS_FILE, path / ITEMS_FILE) if table.is_file()]
    return files


def read_log_column(path: str | Path | Location, column: str) -> np.ndarray:
    """One column of a log's part files, without reading the rest of the log."""
    return np.concatenate(
        [
            (
                _read_parquet(file, columns=[column])
                if isinstance(file, Location)
                else pq.read_table(file, columns=[column])
            )
            .column(column)
            .to_numpy()
            for file in log_files(path)
        ]
    )


def read_logs(path: str | Path | Location) -> LoggedFeedback:
    """Read a causalrec log into a :class:`LoggedFeedback`.

    Args:
        path: A log directory (as written by ``causalrec simulate``), its ``logs/`` folder, or
            one Parquet part file: a local path, a URI (``s3://bucket/run``, ``file:///...``)
            or a :class:`Location`.

    Returns:
        The whole log in memory, with the user and item feature tables when present.

    Raises:
        LogFormatError: If a file is missing, truncated, corrupt, or of another schema version
            (the message names the file).
    """
    path = _resolve(path)
    if not path.exists():
        raise LogFormatError(f"log path {str(path)!r} does not exist")
    tables, session_parts, metadata, slate_size = [], [], {}, 1
    v1_names = log_schema_module.log_schema(1, version=1).names
    for file in log_files(path):
        table = _read_parquet(file)
        metadata, version = _check_version(file, table.schema)
        # Files appended over time (served traffic) may differ in slate size: take the largest.
        slate_size = max(slate_size, metadata_slate_size(metadata))
        tables.append(table.select(v1_names).replace_schema_metadata(None))
        session_parts.append(_session_columns(table) if version >= 2 else table.num_rows)
    table = pa.concat_tables(tables)
    root = log_root(path)

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
