"""The Open Bandit Dataset (OBD) as causalrec logs: import, write, and the shipped sample.

OBD (Saito, Aihara, Matsutani, Narita, NeurIPS 2021 Datasets and Benchmarks; CC BY 4.0, ZOZO,
Inc.) is real logged feedback from the ZOZOTOWN fashion e-commerce site, recorded by two logging
policies, uniform ``random`` and Bernoulli Thompson Sampling ``bts``, side by side on the same
traffic. A data directory holds ``<policy>/<campaign>/<campaign>.csv`` (one row per impression)
and ``<policy>/<campaign>/item_context.csv`` (one row per item), as in Open Bandit Pipeline's
``OpenBanditDataset``.

Mapping (OBP's conventions where it has them):

* Rows are sorted by ``timestamp`` (stably); each row is one round and one impression:
  ``round_id`` is the row's rank, ``position`` is OBD's 1-based position minus one. OBD does not
  link the three items of a page view, so, as in OBP, a round has one row.
* ``pscore`` is ``propensity_score``: the probability that the logging policy put this item at
  this position (the item-position marginal). ``pscore_prefix`` and ``expected_reward`` are
  unknown (NaN).
* ``user_features`` (float32): one-hot encodings of the four hashed categorical
  ``user_feature_*`` columns, then the ``user-item_affinity_*`` columns. The vocabulary of each
  categorical column is the sorted union of the values seen in *both* policies' logs of the
  campaign, so the random and bts logs have the same feature columns; an unseen value encodes to
  zeros. (OBP instead one-hot encodes with ``drop_first=True`` per file and omits the
  affinities.)
* OBD has no user ids. ``user_id`` is a context id: the index of the row's combination of the four
  categorical user features in the sorted union of the combinations seen in both logs.
* ``item_table`` (float32, rows ordered by ``item_id``): ``item_feature_0``, then one-hot
  encodings of ``item_feature_1..3`` with categories in order of first appearance by item id.
  The two policies' ``item_context.csv`` hash the categories differently but group the items
  identically, so this order gives both logs the same item table.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from causalrec.platform import schema, storage
from causalrec.platform.errors import LogFormatError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.validation import unknown_name_error

__all__ = [
    "CAMPAIGNS",
    "POLICIES",
    "SAMPLE_DIR",
    "load_obd_sample",
    "obd_summary",
    "read_obd",
    "write_obd",
]

#: Logging policies of OBD.
POLICIES = ("random", "bts")
#: Campaigns of OBD (the shipped sample has ``all`` only).
CAMPAIGNS = ("all", "men", "women")
#: Positions per page view (OBD's ``position`` is 1, 2 or 3).
SLATE_SIZE = 3
#: Where the converted 10,000-row sample of each policy (campaign ``all``) ships.
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "data" / "obd"

USER_CATEGORICAL = ("user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3")
ITEM_CATEGORICAL = ("item_feature_1", "item_feature_2", "item_feature_3")
_LOG_COLUMNS = ("timestamp", "item_id", "position", "click", "propensity_score")
_AFFINITY = re.compile(r"user-item_affinity_(\d+)")
_METADATA = {
    "source": "open_bandit_dataset",
    "license": "CC BY 4.0",
    "attribution": (
        "ZOZO, Inc.; Saito, Aihara, Matsutani, Narita, NeurIPS 2021 Datasets and Benchmarks"
    ),
    "pscore": "logged (item-position marginal)",
    "user_id": "context id (OBD has no user ids): index of the combination of user_feature_0..3",
}


def _check_names(policy: str, campaign: str) -> None:
    if policy not in POLICIES:
        raise unknown_name_error("OBD policy", policy, POLICIES)
    if campaign not in CAMPAIGNS:
        raise unknown_name_error("OBD campaign", campaign, CAMPAIGNS)


def _log_path(data_dir: Path, policy: str, campaign: str) -> Path:
    return data_dir / policy / campaign / f"{campaign}.csv"


def _read_csv(path: Path, required: Sequence[str], **kwargs: Any) -> pd.DataFrame:
    """Read one OBD CSV file; a missing file, bad CSV or missing column names the file."""
    if not path.is_file():
        raise LogFormatError(f"OBD file {str(path)!r} does not exist")
    try:
        frame = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise LogFormatError(f"cannot read OBD file {str(path)!r}: {exc}") from None
    missing = [name for name in required if name not in frame.columns]
    if missing:
        raise LogFormatError(f"OBD file {str(path)!r} lacks the columns {missing}")
    for name in required:
        null = frame[name].isna().to_numpy()
        if null.any():
            raise LogFormatError(
                f"OBD file {str(path)!r} has a missing {name!r} at data row {np.argmax(null)}"
            )
    return frame


def _strings(frame: pd.DataFrame, column: str) -> np.ndarray:
    return frame[column].to_numpy(dtype=object)


def _one_hot(values: np.ndarray, vocabulary: np.ndarray) -> np.ndarray:
    """One-hot rows of ``values`` in the sorted ``vocabulary``; unseen values give zeros."""
    out = np.zeros((len(values), len(vocabulary)), dtype=np.float32)
    if len(vocabulary) == 0:
        return out
    codes = np.minimum(np.searchsorted(vocabulary, values), len(vocabulary) - 1)
    known = vocabulary[codes] == values
    out[np.flatnonzero(known), codes[known]] = 1.0
    return out


def _context_keys(frame: pd.DataFrame, vocabularies: list[np.ndarray]) -> np.ndarray:
    """Mixed-radix code of each row's categorical user features (sorts like the value tuples)."""
    keys = np.zeros(len(frame), dtype=np.int64)
    for column, vocabulary in zip(USER_CATEGORICAL, vocabularies, strict=True):
        keys = keys * len(vocabulary) + np.searchsorted(vocabulary, _strings(frame, column))
    return keys


def _item_table(path: Path, n_items_seen: int) -> tuple[np.ndarray, list[str]]:
    items = _read_csv(
        path,
        ("item_id", "item_feature_0", *ITEM_CATEGORICAL),
        index_col=0,
        dtype={name: str for name in ITEM_CATEGORICAL},
    ).sort_values("item_id", kind="stable")
    item_id = items["item_id"].to_numpy()
    if not np.array_equal(item_id, np.arange(len(items))) or len(items) < n_items_seen:
        raise LogFormatError(
            f"OBD file {str(path)!r} must list item_id 0..n_items-1 once each, covering every "
            f"logged item (max logged item_id {n_items_seen - 1}); got {len(items)} rows with "
            f"item_id {item_id[:5].tolist()}..."
        )
    blocks = [items["item_feature_0"].to_numpy(np.float32)[:, None]]
    names = ["item_feature_0"]
    for column in ITEM_CATEGORICAL:
        codes, categories = pd.factorize(items[column])
        blocks.append(np.eye(len(categories), dtype=np.float32)[codes])
        names += [f"{column}={value}" for value in categories]
    return np.concatenate(blocks, axis=1), names


def read_obd(data_dir: str | Path, *, policy: str, campaign: str = "all") -> LoggedFeedback:
    """Read one OBD log (see the module docstring for the mapping).

    Args:
        data_dir: The OBD directory, holding ``<policy>/<campaign>/<campaign>.csv`` and
            ``item_context.csv`` for both policies (the other policy's log is read for the
            shared user-feature vocabulary).
        policy: Logging policy, ``"random"`` or ``"bts"``.
        campaign: ``"all"``, ``"men"`` or ``"women"``.

    Returns:
        One row per impression, with ``item_table`` (shape (n_items, n_item_features)) and
        ``metadata["feature_names"]`` naming the user feature columns.

    Raises:
        UnknownNameError: If ``policy`` or ``campaign`` is unknown (suggests the closest).
        LogFormatError: If a file or column is missing or unreadable (names the file).
        DataError: If values are out of range (e.g. a propensity score outside (0, 1]).
    """
    _check_names(policy, campaign)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise LogFormatError(f"OBD data directory {str(data_dir)!r} does not exist")
    path = _log_path(data_dir, policy, campaign)
    categorical = {name: str for name in USER_CATEGORICAL}
    frame = _read_csv(path, (*_LOG_COLUMNS, *USER_CATEGORICAL), index_col=0, dtype=categorical)
    (other,) = (name for name in POLICIES if name != policy)
    other_frame = _read_csv(
        _log_path(data_dir, other, campaign),
        USER_CATEGORICAL,
        usecols=lambda name: name in USER_CATEGORICAL,
        dtype=categorical,
    )

    try:
        timestamp = pd.DatetimeIndex(pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601"))
    except (ValueError, TypeError) as exc:
        raise LogFormatError(f"OBD file {str(path)!r} has an unreadable timestamp: {exc}") from None
    order = np.argsort(timestamp.asi8, kind="stable")
    frame = frame.iloc[order]
    # The log's world clock: the real time of each impression, in microseconds since the epoch.
    microseconds = timestamp.as_unit("us").asi8[order]

    position = frame["position"].to_numpy(np.int64)
    click = frame["click"].to_numpy(np.int64)
    for name, values, allowed in (
        ("position", position, range(1, SLATE_SIZE + 1)),
        ("click", click, range(2)),
    ):
        bad = ~np.isin(values, allowed)
        if bad.any():
            raise LogFormatError(
                f"OBD file {str(path)!r}: {name} must be in {list(allowed)}; got "
                f"{values[bad][0]} (at timestamp rank {np.argmax(bad)})"
            )
    item_id = frame["item_id"].to_numpy(np.int64)
    n_items_seen = int(item_id.max()) + 1 if len(item_id) else 0
    item_table, item_names = _item_table(path.with_name("item_context.csv"), n_items_seen)

    vocabularies = [
        np.unique(np.concatenate([_strings(frame, c), _strings(other_frame, c)]))
        for c in USER_CATEGORICAL
    ]
    keys = _context_keys(frame, vocabularies)
    contexts = np.unique(np.concatenate([keys, _context_keys(other_frame, vocabularies)]))
    affinity = sorted(
        (c for c in frame.columns if _AFFINITY.fullmatch(c)),
        key=lambda c: int(_AFFINITY.fullmatch(c).group(1)),
    )
    named = list(zip(USER_CATEGORICAL, vocabularies, strict=True))
    blocks = [_one_hot(_strings(frame, c), vocabulary) for c, vocabulary in named]
    blocks.append(frame[affinity].to_numpy(np.float32))
    feature_names = [f"{c}={value}" for c, vocabulary in named for value in vocabulary]

    n_rows, n_items = len(frame), len(item_table)
    return LoggedFeedback(
        round_id=np.arange(n_rows, dtype=np.int64),
        user_id=np.searchsorted(contexts, keys).astype(np.int64),
        position=position - 1,
        item_id=item_id,
        click=click.astype(np.int8),
        pscore=frame["propensity_score"].to_numpy(np.float64),
        pscore_prefix=np.full(n_rows, np.nan),
        user_features=np.concatenate(blocks, axis=1),
        expected_reward=np.full(n_rows, np.nan),
        policy=np.full(n_rows, policy),
        timestamp=microseconds.astype(np.int64),
        n_items=n_items,
        slate_size=SLATE_SIZE,
        user_table=None,
        item_table=item_table,
        metadata={
            **_METADATA,
            "policy": policy,
            "campaign": campaign,
            "feature_names": [*feature_names, *affinity],
            "item_feature_names": item_names,
            "n_contexts": len(contexts),
            "n_items": n_items,
            "slate_size": SLATE_SIZE,
            "schema_version": schema.LOG_SCHEMA_VERSION,
        },
    )


def obd_summary(log: LoggedFeedback) -> dict[str, Any]:
    """What an OBD log shows: rows, clicks, CTR, items, positions, inverse propensities."""
    inverse = 1.0 / log.pscore
    return {
        "policy": log.metadata.get("policy"),
        "campaign": log.metadata.get("campaign"),
        "rows": log.n_rows,
        "clicks": int(log.click.sum()),
        "ctr": float(log.click.mean()) if log.n_rows else float("nan"),
        "items": log.n_items,
        "positions": log.slate_size,
        "user_features": int(log.user_features.shape[1]),
        "mean_inverse_pscore": float(inverse.mean()) if log.n_rows else float("nan"),
        "max_inverse_pscore": float(inverse.max()) if log.n_rows else float("nan"),
    }


def write_obd(log: LoggedFeedback, out: str | Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Write ``log`` as a causalrec log directory (``storage.read_logs(out)`` reads it back).

    Writes ``OUT/logs/part-00000.parquet``, ``OUT/items.parquet`` (when ``log.item_table`` is
    set) and ``OUT/summary.json``, all inside a staging directory swapped in on success.

    Args:
        log: An OBD log from :func:`read_obd`.
        out: Output directory; must be empty or new unless ``overwrite``.
        overwrite: Replace a non-empty ``out``.

    Returns:
        The summary of :func:`obd_summary`, also written to ``OUT/summary.json``.

    Raises:
        OutputExistsError: If ``out`` is non-empty and ``overwrite`` is false.
    """
    summary = obd_summary(log)
    with storage.atomic_output_dir(out, overwrite=overwrite) as staging:
        with storage.LogWriter(
            staging / storage.LOGS_SUBDIR,
            n_user_features=log.user_features.shape[1],
            metadata=log.metadata,
        ) as writer:
            writer.write(log)
        if log.item_table is not None:
            items = np.ascontiguousarray(log.item_table, dtype=np.float32)
            table = pa.Table.from_arrays(
                [
                    pa.array(np.arange(len(items)), pa.int64()),
                    pa.FixedSizeListArray.from_arrays(pa.array(items.ravel()), items.shape[1]),
                    pa.nulls(len(items), pa.float64()),
                ],
                schema=schema.item_table_schema(items.shape[1]),
            )
            storage.write_table_atomic(staging / storage.ITEMS_FILE, table)
        storage.write_json_atomic(
            staging / storage.SUMMARY_FILE, {"summary": summary, "metadata": log.metadata}
        )
    return summary


def load_obd_sample(policy: str = "random") -> LoggedFeedback:
    """The 10,000-row OBD sample (campaign ``all``) shipped with causalrec, as converted here.

    Args:
        policy: Logging policy, ``"random"`` or ``"bts"``.

    Returns:
        The log, with ``item_table`` and the metadata of :func:`read_obd`.

    Example:
        >>> log = load_obd_sample("random")
        >>> log.n_rows, log.n_items, log.slate_size, int(log.click.sum())
        (10000, 80, 3, 38)
    """
    _check_names(policy, "all")
    return storage.read_logs(SAMPLE_DIR / policy)
