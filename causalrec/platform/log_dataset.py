"""A log on disk as a description: its Parquet part files and a range of rounds.

:class:`LogDataset` is what a process hands to another instead of the rows themselves: the
part files of a log directory (local paths), the catalogue size and slate size its readers
derive, and optionally a half-open range of round ids ``[round_start, round_stop)``. It is
small and picklable; the rows stay in the files until someone reads them:

* :meth:`LogDataset.dataset` — a Ray Data dataset of chosen columns of those rounds
  (``ray.data.read_parquet(...).select_columns(...)`` and a ``round_id`` filter expression that
  Ray pushes into the Parquet scan), which streams through the cluster;
* :meth:`LogDataset.read` — the rounds materialised as a :class:`LoggedFeedback`, part file by
  part file (:func:`~causalrec.platform.storage.read_logs` of each file, its other rounds
  dropped), so a process holds the range and one file at most;
* :meth:`LogDataset.count_rows`, :meth:`LogDataset.round_cut` and
  :meth:`LogDataset.fingerprint` read one or two columns a file at a time.

A range's fingerprint equals :meth:`LoggedFeedback.fingerprint` of the same rows read into
memory (``read_logs`` and :meth:`LoggedFeedback.split_by_round` at the cut of
:meth:`LogDataset.round_cut`), so models trained on either record the same training data.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from causalrec.platform import storage
from causalrec.platform.errors import ConfigError, DataError, LogFormatError
from causalrec.platform.feedback import LoggedFeedback

if TYPE_CHECKING:
    import ray.data

__all__ = ["FINGERPRINT_COLUMNS", "LogDataset", "write_split"]

#: The columns of :meth:`LoggedFeedback.fingerprint`, in its order, with their dtypes in memory.
FINGERPRINT_COLUMNS = (
    ("round_id", np.int64),
    ("user_id", np.int64),
    ("position", np.int64),
    ("item_id", np.int64),
    ("click", np.int8),
    ("pscore", np.float64),
)


@dataclass(frozen=True)
class LogDataset:
    """The part files of a log and a range of its rounds (see the module docstring).

    Attributes:
        files: The Parquet part files, in the order :func:`storage.log_files` lists them.
        root: The log directory holding ``users.parquet`` and ``items.parquet`` (``None`` for a
            bare part file or ``logs/`` folder, as :func:`storage.read_logs` reads them).
        n_items: Catalogue size, as :func:`storage.read_logs` derives it.
        slate_size: Positions per round, as :func:`storage.read_logs` derives it.
        metadata: The self-description of the last part file (as :func:`storage.read_logs`
            keeps it): simulator config, policy, seed, ...
        round_start: First round id of the range (``None``: from the first round).
        round_stop: Round ids below this are in the range (``None``: to the last round).
    """

    files: tuple[str, ...]
    root: str | None
    n_items: int
    slate_size: int
    metadata: dict = dataclasses.field(default_factory=dict)
    round_start: int | None = None
    round_stop: int | None = None

    @classmethod
    def open(cls, path: str | Path) -> LogDataset:
        """The whole log at ``path`` (a log directory, its ``logs/`` folder, or a part file).

        Raises:
            ConfigError: For a storage URI (``s3://...``): a dataset describes local files.
            LogFormatError: If there is no part file, or one is not a readable causalrec log.
        """
        if "://" in str(path):
            raise ConfigError(
                f"{str(path)!r}: reading a log's rounds from its files needs a local log "
                "directory, not a storage URI"
            )
        path = Path(path)
        if not path.exists():
            raise LogFormatError(f"log path {str(path)!r} does not exist")
        files = [str(Path(file).absolute()) for file in storage.log_files(path)]
        metadata, slate_size = {}, 1
        for file in files:
            metadata = storage.log_file_metadata(file)
            slate_size = max(slate_size, storage.metadata_slate_size(metadata))
        simulator = metadata.get("simulator", {})
        n_items = int(metadata.get("n_items", simulator.get("n_items", 0)))
        if not n_items:
            n_items = 1 + max(
                int(pc.max(pq.read_table(file, columns=["item_id"]).column(0)).as_py())
                for file in files
            )
        root = path if path.is_dir() and (path / storage.LOGS_SUBDIR).is_dir() else None
        return cls(
            files=tuple(files),
            root=str(root.absolute()) if root is not None else None,
            n_items=n_items,
            slate_size=slate_size,
            metadata=metadata,
        )

    # -- ranges -------------------------------------------------------------------------------
    def rounds(self, start: int | None = None, stop: int | None = None) -> LogDataset:
        """The rounds of this range with ids in ``[start, stop)`` (``None``: unbounded)."""
        if start is not None and self.round_start is not None:
            start = max(start, self.round_start)
        if stop is not None and self.round_stop is not None:
            stop = min(stop, self.round_stop)
        return dataclasses.replace(
            self,
            round_start=self.round_start if start is None else int(start),
            round_stop=self.round_stop if stop is None else int(stop),
        )

    def _mask(self, round_id: np.ndarray) -> np.ndarray | None:
        """Rows of ``round_id`` in the range (``None``: every row)."""
        if self.round_start is None and self.round_stop is None:
            return None
        mask = np.ones(len(round_id), dtype=bool)
        if self.round_start is not None:
            mask &= round_id >= self.round_start
        if self.round_stop is not None:
            mask &= round_id < self.round_stop
        return mask

    def _column(self, file: str, name: str) -> np.ndarray:
        """Column ``name`` of one part file, restricted to the range."""
        columns = [name] if name == "round_id" else ["round_id", name]
        table = pq.read_table(file, columns=columns)
        values = table.column(name).to_numpy()
        mask = self._mask(table.column("round_id").to_numpy())
        return values if mask is None else values[mask]

    def round_ids(self) -> np.ndarray:
        """The distinct round ids of the range, sorted (one file's column in memory at a time)."""
        parts = [np.unique(self._column(file, "round_id")) for file in self.files]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def round_cut(self, held_out_fraction: float) -> int:
        """The first held-out round of :meth:`LoggedFeedback.split_by_round` on this range.

        Rows with a smaller round id are the training split; the others are held out.

        Raises:
            DataError: If ``held_out_fraction`` is not in (0, 1) or the range has < 2 rounds.
        """
        if not 0 < held_out_fraction < 1:
            raise DataError(f"held_out_fraction must be in (0, 1); got {held_out_fraction}")
        rounds = self.round_ids()
        if len(rounds) < 2:
            raise DataError(f"splitting by round needs >= 2 rounds; the log has {len(rounds)}")
        return int(rounds[max(1, min(len(rounds) - 1, int(len(rounds) * (1 - held_out_fraction))))])

    def count_rows(self) -> int:
        """Rows (impressions) in the range."""
        return sum(len(self._column(file, "round_id")) for file in self.files)

    def fingerprint(self) -> str:
        """:meth:`LoggedFeedback.fingerprint` of the range, read a column and a file at a time."""
        digest = hashlib.sha256(f"{self.n_items}:{self.slate_size}:{self.count_rows()}".encode())
        for name, dtype in FINGERPRINT_COLUMNS:
            for file in self.files:
                values = self._column(file, name).astype(dtype, copy=False)
                digest.update(np.ascontiguousarray(values).tobytes())
        return digest.hexdigest()[:16]

    def feature_tables(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``users.parquet`` and ``items.parquet`` features (``None`` where absent)."""
        if self.root is None:
            return None, None
        return storage.read_user_features(self.root), storage.read_item_features(self.root)

    # -- reading ------------------------------------------------------------------------------
    def _may_hold_range(self, file: str) -> bool:
        """False when the file's ``round_id`` statistics show no row in the range."""
        if self.round_start is None and self.round_stop is None:
            return True
        metadata = pq.ParquetFile(file).metadata
        index = metadata.schema.to_arrow_schema().get_field_index("round_id")
        for group in range(metadata.num_row_groups):
            stats = metadata.row_group(group).column(index).statistics
            if stats is None or not stats.has_min_max:
                return True
            below = self.round_stop is not None and stats.min >= self.round_stop
            above = self.round_start is not None and stats.max < self.round_start
            if not (below or above):
                return True
        return False

    def read(self) -> LoggedFeedback:
        """The range in memory, read part file by part file (see the module docstring).

        Raises:
            DataError: If the range holds no row.
        """
        parts = []
        for file in self.files:
            if not self._may_hold_range(file):
                continue
            part = storage.read_logs(file)
            mask = self._mask(part.round_id)
            parts.append(part if mask is None else part.select(mask))
        parts = [part for part in parts if part.n_rows]
        if not parts:
            raise DataError(f"no log rows in rounds [{self.round_start}, {self.round_stop})")
        users, items = self.feature_tables()
        return dataclasses.replace(
            LoggedFeedback.concat(parts),
            n_items=self.n_items,
            slate_size=self.slate_size,
            user_table=users,
            item_table=items,
        )

    def dataset(self, columns: list[str] | tuple[str, ...]) -> ray.data.Dataset:
        """A Ray Data dataset of ``columns`` of the range's rows (lazy; nothing is read yet).

        The ``round_id`` filter is an expression, which Ray pushes into the Parquet scan. Row
        order follows the files (``preserve_order``), so a single reader sees the same order
        on every pass.
        """
        import ray.data
        from ray.data.expressions import col, lit

        columns = list(dict.fromkeys(columns))
        needed = columns if "round_id" in columns else [*columns, "round_id"]
        dataset = ray.data.read_parquet(list(self.files)).select_columns(needed)
        predicate = None
        if self.round_start is not None:
            predicate = col("round_id") >= lit(self.round_start)
        if self.round_stop is not None:
            below = col("round_id") < lit(self.round_stop)
            predicate = below if predicate is None else predicate & below
        if predicate is not None:
            dataset = dataset.filter(expr=predicate)
        if needed != columns:
            dataset = dataset.select_columns(columns)
        dataset.context.execution_options.preserve_order = True
        return dataset


def write_split(logs: LoggedFeedback, directory: str | Path) -> LogDataset:
    """Write an in-memory log as a log directory (parts and feature tables); its dataset.

    For callers that hold a log in memory but want other processes to read it from Parquet
    (:func:`causalrec.tuning.tune_recommenders` above ``data.stream_above_rows``). The
    catalogue and slate size go into the files' metadata, so the dataset derives the same ones.
    """
    directory = Path(directory)
    if logs.n_rows == 0:
        raise DataError("the log is empty: nothing to write")
    metadata = {**logs.metadata, "n_items": logs.n_items, "slate_size": logs.slate_size}
    writer = storage.LogWriter(
        directory / storage.LOGS_SUBDIR,
        n_user_features=logs.user_features.shape[1],
        metadata=metadata,
    )
    with writer:
        chunk = 1 << 20
        for start in range(0, logs.n_rows, chunk):
            writer.write(logs.select(np.arange(start, min(start + chunk, logs.n_rows))))
    if logs.user_table is not None and logs.item_table is not None:
        storage.write_feature_tables(directory, logs.user_table, logs.item_table)
    return LogDataset.open(directory)
