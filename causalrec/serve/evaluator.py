"""Counterfactual evaluation behind HTTP: estimate a policy's value on logged data.

The logs come inline (bounded row count) or as a Parquet log directory under the configured data
root; the policy is the served model (with its exploration) or a named one. The estimates are
those of :func:`causalrec.ope.evaluate` — the same numbers ``causalrec evaluate`` prints.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from causalrec.methods.artifact import SavedModel
from causalrec.methods.policy_spec import resolve_policy
from causalrec.ope.evaluate import evaluate
from causalrec.platform.errors import CausalRecError, DataError, ForbiddenPathError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.storage import log_files, log_input_files, read_logs
from causalrec.serve.recommender import request_exploration

__all__ = ["EvaluatorCore", "ForbiddenPathError", "TooLargeError"]


class TooLargeError(CausalRecError, ValueError):
    """A request over a configured size limit (answered with 413)."""


class EvaluatorCore:
    """What an evaluator replica does, independent of Ray Serve.

    Args:
        model_dir: The served model (for ``policy="served"``).
        data_root: Directory Parquet paths must lie under (``None``: inline rows only).
        max_rows: Largest log accepted.
    """

    def __init__(self, model_dir: str, data_root: str | None, max_rows: int):
        saved = SavedModel.open(model_dir)
        self.model = saved.load()
        # Inline rows get the served catalogue's item features (the reward model uses them).
        self.item_table = saved.item_features
        self.data_root = Path(data_root).resolve() if data_root else None
        self.max_rows = max_rows

    def _read(self, path: str) -> LoggedFeedback:
        if self.data_root is None:
            raise ForbiddenPathError("path: this server reads no files (no data_root configured)")
        try:
            resolved = self._checked_log(path)
        except CausalRecError:
            raise
        except (OSError, ValueError) as exc:  # a name too long, a NUL byte
            raise DataError(f"path: {path[:80]!r} cannot be opened ({exc})") from None
        return read_logs(resolved)

    def _checked_log(self, path: str) -> Path:
        """The log directory ``path`` names, once every file it will open is checked."""
        resolved = Path(path)
        resolved = (resolved if resolved.is_absolute() else self.data_root / resolved).resolve()
        if not resolved.is_relative_to(self.data_root):
            raise ForbiddenPathError(f"path: {path!r} is outside the server's data root")
        for file in log_input_files(resolved):  # a file symlink may point outside the root
            if not Path(os.path.realpath(file)).is_relative_to(self.data_root):
                raise ForbiddenPathError(
                    f"path: {path!r} holds {file.name}, which links outside the server's data root"
                )
        rows = 0
        for file in log_files(resolved):
            try:
                rows += pq.ParquetFile(file).metadata.num_rows
            except (pa.ArrowException, OSError):
                raise DataError(f"path: {path!r} is not a causalrec Parquet log") from None
            if rows > self.max_rows:
                raise TooLargeError(f"path: the log has more than {self.max_rows} rows")
        return resolved

    def _inline(self, rows: list[dict[str, Any]]) -> LoggedFeedback:
        if len(rows) > self.max_rows:
            raise TooLargeError(f"rows: {len(rows)} rows; at most {self.max_rows} per request")
        widths = {len(row["user_features"]) for row in rows}
        if len(widths) > 1:
            raise DataError(f"rows.user_features: rows have different lengths {sorted(widths)}")
        items = np.array([row["item_id"] for row in rows], dtype=np.int64)
        if items.max() >= self.model.n_items_:
            bad = int(np.flatnonzero(items >= self.model.n_items_)[0])
            raise DataError(
                f"rows.{bad}.item_id: unknown item {items[bad]} "
                f"(catalogue 0..{self.model.n_items_ - 1})"
            )
        positions = np.array([row["position"] for row in rows], dtype=np.int64)
        pscore = np.array([row["pscore"] for row in rows], dtype=np.float64)
        return LoggedFeedback(
            round_id=np.array([row["round_id"] for row in rows], dtype=np.int64),
            user_id=np.array([row["user_id"] for row in rows], dtype=np.int64),
            position=positions,
            item_id=items,
            click=np.array([row["click"] for row in rows], dtype=np.int8),
            pscore=pscore,
            pscore_prefix=pscore if positions.max() == 0 else np.full(len(rows), np.nan),
            user_features=np.array(
                [row["user_features"] for row in rows], dtype=np.float32
            ).reshape(len(rows), widths.pop()),
            expected_reward=np.full(len(rows), np.nan),
            policy=np.full(len(rows), "inline"),
            n_items=self.model.n_items_,
            slate_size=int(positions.max()) + 1,
            item_table=self.item_table,
        )

    def evaluate(self, request: dict[str, Any]) -> dict[str, Any]:
        """Estimates of the requested policy's value (see :class:`EvaluateRequest`)."""
        path = request.get("path")
        logs = self._read(path) if path is not None else self._inline(request["rows"])
        spec = request["policy"]
        if spec == "served":
            if logs.n_items != self.model.n_items_:
                raise DataError(
                    f"the log has {logs.n_items} items; the served model has {self.model.n_items_}"
                )
            users = logs.user_id
            if users.max() >= self.model.n_users_:
                raise DataError(f"user_id: unknown user {int(users.max())} in the log")
            policy = self.model.policy(logs.slate_size, request_exploration(request))
        else:
            policy = resolve_policy(spec, logs=logs, allow_files=False).policy
        table = evaluate(
            logs,
            policy,
            request.get("estimators"),
            reward_model=request["reward_model"],
            alpha=request["alpha"],
        )
        records = [
            {key: _json_value(value) for key, value in record.items()}
            for record in table.to_dict(orient="records")
        ]
        return {"policy": policy.name, "n_rows": logs.n_rows, "estimates": records}


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
