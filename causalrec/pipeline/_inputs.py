"""Reading and validating a run directory's inputs, once, at the report's boundary.

Every JSON input is checked against a declared table of ``dotted.field: kind`` entries and every
CSV against its declared columns, so the sections that render them can index freely. A malformed
input raises :class:`~causalrec.platform.errors.DataError` naming the file and the field.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from causalrec.platform.errors import DataError

__all__ = ["PRODUCER", "load_inputs", "number"]

#: Every input besides ``pipeline.json`` and the stage that writes it.
PRODUCER = {
    "summary.json": "simulate",
    "candidates.csv": "tune",
    "ope.csv": "ope",
    "ope_uniform.csv": "ope",
    "abtest/result.json": "abtest",
    "causal_graph.json": "simulate",
    "sensitivity.json": "ope",
}
_CSV_COLUMNS = {  # (text columns, numeric columns)
    "candidates.csv": (
        ("candidate", "method", "trial_id", "params", "selected"),
        ("true_value", "regret"),
    ),
    "ope.csv": (
        ("candidate", "estimator", "warning"),
        ("estimate", "low", "high", "true_value", "error", "ess"),
    ),
}
_CSV_COLUMNS["ope_uniform.csv"] = _CSV_COLUMNS["ope.csv"]
# Kinds: int, num (NaN allowed), str, bool, list, a trailing "?" allows null. Fields below a
# null "obj?" are not checked.
_ARM = {"label": "str", "spec": "str", "users": "int", "visits": "int", "impressions": "int"}
_ARM |= {"clicks": "int", "ctr": "num", "clicks_per_visit": "num", "exact_value": "num"}
_ONLINE = ("lift", "low", "high", "relative_lift", "relative_low", "relative_high", "p_value")
_JSON_FIELDS: dict[str, dict[str, str]] = {
    "pipeline.json": {
        "config_path": "str?", "seed": "int", "started": "str", "finished": "str?",
        "stages": "list",
    },
    "summary.json": {
        "preset": "str", "n_users": "int", "n_items": "int", "slate_size": "int",
        "n_rounds": "int", "uniform_rounds": "int", "oracle_value": "num", "logging_value": "num",
        "selected": "obj?", "selected.candidate": "str", "selected.method": "str",
        "selected.true_value": "num", "selected.ope_dr": "num?", "truly_best": "obj?",
        "truly_best.candidate": "str", "truly_best.method": "str",
        "truly_best.true_value": "num", "selection_regret": "num?",
    },
    "abtest/result.json": {
        "users": "int", "alpha": "num", "seed": "int", "mode": "str", "exact_lift": "num",
        **{f"arms.{arm}.{key}": kind for arm in "ab" for key, kind in _ARM.items()},
        **{f"online.{key}": "num" for key in (*_ONLINE, "mde")},
        "offline": "obj?", "offline.estimator": "str", "offline.lift": "num",
        "offline.low": "num", "offline.high": "num", "agreement": "obj?",
        "agreement.same_sign": "bool", "agreement.online_in_offline_interval": "bool",
    },
    "causal_graph.json": {"nodes": "list", "edges": "list"},
    "sensitivity.json": {
        "candidate": "str", "estimator": "str", "unit": "str", "pscore": "str", "alpha": "num",
        "n_bootstrap": "int", "n_rounds": "int", "true_value": "num?", "true_gamma": "obj?",
        "true_gamma.gamma": "num", "true_gamma.standard_error": "num",
        "true_gamma.exact": "bool", "curve": "list",
    },
}  # fmt: skip
_STAGE_FIELDS = {"name": "str", "status": "str", "seconds": "num?", "error": "str?"}
_NODE_FIELDS = {"name": "str", "label": "str", "observed": "bool"}
_CURVE_FIELDS = dict.fromkeys(
    ("gamma", "estimate", "lower", "upper", "lower_bootstrap", "upper_bootstrap"), "num"
)
_KINDS = {
    "int": lambda v: (
        isinstance(v, int | float) and not isinstance(v, bool) and float(v).is_integer()
    ),
    "num": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "list": lambda v: isinstance(v, list),
    "obj": lambda v: isinstance(v, dict),
}


def _check(data: Any, fields: dict[str, str], source: str) -> None:
    """Check every ``dotted.path: kind`` of ``fields`` in ``data``."""
    if not isinstance(data, dict):
        raise DataError(f"{source}: expected a JSON object; got {type(data).__name__}")
    for path, kind in fields.items():
        value, parts = data, path.split(".")
        for depth, part in enumerate(parts):
            parent = ".".join(parts[:depth])
            if depth and value is None and fields.get(parent) == "obj?":
                break  # below a null optional object
            if not isinstance(value, dict):
                raise DataError(f"{source}: field {parent!r} must be an object; got {value!r}")
            if part not in value:
                raise DataError(f"{source}: missing field {'.'.join(parts[: depth + 1])!r}")
            value = value[part]
        else:
            if not (kind.endswith("?") and value is None) and not _KINDS[kind.rstrip("?")](value):
                expected = kind.rstrip("?") + (" or null" if kind.endswith("?") else "")
                raise DataError(f"{source}: field {path!r} must be {expected}; got {value!r}")


def _read_json(path: Path, name: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{name}: not valid JSON ({error})") from error
    _check(data, _JSON_FIELDS[name], name)
    if name == "pipeline.json":
        for i, stage in enumerate(data["stages"]):
            _check(stage, _STAGE_FIELDS, f"{name}: stages[{i}]")
    if name == "sensitivity.json":
        for i, point in enumerate(data["curve"]):
            _check(point, _CURVE_FIELDS, f"{name}: curve[{i}]")
    if name == "causal_graph.json":
        for i, node in enumerate(data["nodes"]):
            _check(node, _NODE_FIELDS, f"{name}: nodes[{i}]")
        for i, edge in enumerate(data["edges"]):
            if not (isinstance(edge, list) and len(edge) == 2 and all(map(_KINDS["str"], edge))):
                raise DataError(f"{name}: edges[{i}] must be [source, target]; got {edge!r}")
    return data


def _read_csv(path: Path, name: str) -> pd.DataFrame:
    text, numbers = _CSV_COLUMNS[name]
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{name}: cannot be parsed as CSV ({error})") from error
    missing = [column for column in (*text, *numbers) if column not in frame.columns]
    if missing:
        raise DataError(f"{name}: missing column(s) {missing}; found {list(frame.columns)}")
    for column in numbers:
        cells = frame[column].str.strip()
        missing_value = cells.str.lower().isin(["", "nan", "-nan", "na", "null", "none"])
        converted = pd.to_numeric(cells.where(~missing_value, "nan"), errors="coerce")
        bad = converted.isna() & ~missing_value
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise DataError(
                f"{name}: column {column!r} must be numeric; got {frame[column].iloc[row]!r} "
                f"in data row {row + 1}"
            )
        frame[column] = converted.astype(float)
    if name == "candidates.csv":
        flags = frame["selected"].str.strip().str.lower()
        bad = ~flags.isin(["true", "false", "1", "0"])
        if bad.any():
            value = frame["selected"][bad].iloc[0]
            raise DataError(f"{name}: column 'selected' must be true or false; got {value!r}")
        frame["selected"] = flags.isin(["true", "1"])
    return frame


def load_inputs(run_dir: Path) -> dict[str, Any]:
    """Read and validate every input of ``run_dir``; a missing file maps to ``None``.

    Returns:
        File name (e.g. ``"abtest/result.json"``) to its parsed JSON object or DataFrame.

    Raises:
        DataError: If a present file is malformed (names the file and the field).
    """
    inputs: dict[str, Any] = {}
    for name in ("pipeline.json", *PRODUCER):
        path = run_dir / name
        if not path.is_file():
            inputs[name] = None
        elif name.endswith(".csv"):
            inputs[name] = _read_csv(path, name)
        else:
            inputs[name] = _read_json(path, name)
    return inputs


def number(value: float | None) -> float:
    """A JSON number as float, ``null`` as NaN."""
    return math.nan if value is None else float(value)
