"""What a search leaves: one row per trial, the selection and its regret, and the exported models.

:func:`results_frame` turns Ray Tune's result grid into a table, :func:`summarize` selects by the
objective (and, with a simulator, finds the truly best trial and the selection regret), and
:func:`export_models` writes the winner to ``OUT/best`` and each method's best trial to
``OUT/candidates/METHOD`` as saved models (:class:`~causalrec.methods.artifact.SavedModel`)
with their training record in ``model.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import causalrec
from causalrec.methods.artifact import SavedModel
from causalrec.methods.base import Recommender
from causalrec.platform.feedback import LoggedFeedback
from causalrec.simulators.scm import ConfoundedRecSimulator
from causalrec.tuning.config import TuningConfig
from causalrec.tuning.space import param_default, trial_params
from causalrec.tuning.trial import MODEL_SUBDIR

__all__ = [
    "BEST_DIR",
    "CANDIDATES_DIR",
    "METRICS",
    "SearchData",
    "TuningResult",
    "export_models",
    "results_frame",
    "summarize",
]

#: Sub-directory of ``OUT`` holding the selected trial's model.
BEST_DIR = "best"
#: Sub-directory of ``OUT`` holding each method's best trial (``export_candidates``).
CANDIDATES_DIR = "candidates"
#: Metrics every trial reports (NaN where the log cannot provide them).
METRICS = (
    "ope_dr",
    "ope_dr_low",
    "ope_dr_high",
    "ope_auto",
    "ope_auto_low",
    "ope_auto_high",
    "ground_truth",
    "regret",
)
#: Selection rules whose regret every search reports (see ``ObjectiveConfig.metric``).
SELECTION_RULES = ("ope_dr", "ope_dr_low", "ope_auto", "ope_auto_low")


@dataclass(frozen=True)
class SearchData:
    """What the summary and the exported models record of the data a search used.

    Attributes:
        logs_fingerprint: :meth:`LoggedFeedback.fingerprint` of the whole log.
        train_fingerprint: The same of the training split.
        train_rows: Rows of the training split.
        feature_tables: The log's user and item feature tables (``None`` if it has none).
    """

    logs_fingerprint: str
    train_fingerprint: str
    train_rows: int
    feature_tables: tuple[np.ndarray, np.ndarray] | None

    @classmethod
    def of(cls, logs: LoggedFeedback, train: LoggedFeedback) -> SearchData:
        """The record of a log and its training split in memory."""
        tables = None
        if logs.user_table is not None and logs.item_table is not None:
            tables = (logs.user_table, logs.item_table)
        return cls(logs.fingerprint(), train.fingerprint(), train.n_rows, tables)


@dataclass(frozen=True)
class TuningResult:
    """The outcome of a search.

    Attributes:
        results: One row per trial (the content of ``results.parquet``).
        summary: Selection, truly best trial, selection regret (``summary.json``).
        best: The selected trial's saved model, ``OUT/best`` (``None`` when no trial produced
            a model).
        candidates: Each method's best trial's saved model by method (``export_candidates``).
        train: The rounds the trials trained on (``None`` when they read them from the log's
            files, ``data.stream_above_rows``).
        validation: The held-out rounds the trials were measured on.
    """

    results: pd.DataFrame
    summary: dict[str, Any]
    best: SavedModel | None
    candidates: dict[str, SavedModel] = field(default_factory=dict)
    train: LoggedFeedback | None = None
    validation: LoggedFeedback | None = None

    @property
    def best_dir(self) -> Path | None:
        """``OUT/best`` (``None`` when no trial produced a model)."""
        return self.best.path if self.best is not None else None


def _planned_epochs(cls: type[Recommender], params: dict) -> int:
    if "epochs" not in cls.param_names():
        return 1
    return int(params.get("epochs", param_default(cls, "epochs") or 1))


def results_frame(grid, registry) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per trial, and the latest checkpoint of each trial by trial id."""
    rows, checkpoints = [], {}
    for result in grid:
        method, params = trial_params(result.config)
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or Path(result.path).name
        epochs = int(metrics.get("epoch", 0))
        planned = _planned_epochs(registry[method], params)
        if result.error is not None:
            status = "error"
        elif epochs < planned:
            status = "stopped_early"
        else:
            status = "completed"
        rows.append(
            {
                "trial_id": trial_id,
                "method": method,
                "params": json.dumps(params, sort_keys=True),
                **{name: float(metrics.get(name, math.nan)) for name in METRICS},
                "epochs": epochs,
                "planned_epochs": planned,
                "train_seconds": float(metrics.get("train_seconds", math.nan)),
                "eval_seconds": float(metrics.get("eval_seconds", math.nan)),
                "restarts": int(metrics.get("restarts", 0)),
                "finished_at": float(metrics.get("timestamp", math.nan)),
                "device": str(metrics.get("device", "")),
                "node_id": str(metrics.get("node_id", "")),
                "train_source": str(metrics.get("train_source", "")),
                "ope_auto_estimator": str(metrics.get("ope_auto_estimator", "")),
                "status": status,
                "error": "" if result.error is None else str(result.error).splitlines()[0][:500],
            }
        )
        if result.checkpoint is not None:
            checkpoints[trial_id] = result.checkpoint
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = frame.sort_values("trial_id", kind="stable").reset_index(drop=True)
    return frame, checkpoints


def _row_summary(row: pd.Series | None) -> dict[str, Any] | None:
    if row is None:
        return None
    payload = {
        "trial_id": row["trial_id"],
        "method": row["method"],
        "params": json.loads(row["params"]),
    }
    payload.update({name: _finite_or_none(row[name]) for name in METRICS})
    return payload


def _finite_or_none(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def summarize(
    results: pd.DataFrame,
    config: TuningConfig,
    data: SearchData,
    simulator: ConfoundedRecSimulator | None,
    oracle: float | None,
    k: int,
) -> dict[str, Any]:
    """The selection by the objective, the truly best trial and the selection regret."""
    metric = config.objective.metric
    usable = results[np.isfinite(results[metric])] if not results.empty else results
    selected = usable.loc[usable[metric].idxmax()] if len(usable) else None
    truly_best = None
    if simulator is not None and len(usable):
        truly_best = usable.loc[usable["ground_truth"].idxmax()]
    selection_regret = None
    if selected is not None and truly_best is not None:
        selection_regret = float(truly_best["ground_truth"] - selected["ground_truth"])
    return {
        "selection_metric": metric,
        "selection_rules": selection_rules(usable, truly_best),
        "k": k,
        "n_trials": len(results),
        "status_counts": results["status"].value_counts().to_dict() if len(results) else {},
        "selected": _row_summary(selected),
        "truly_best": _row_summary(truly_best),
        "selection_regret": selection_regret,
        "oracle_value": oracle,
        "logging_value": (
            float(simulator.policy_value(simulator.logging_policy()))
            if simulator is not None
            else None
        ),
        "logs_fingerprint": data.logs_fingerprint,
        "causalrec_version": causalrec.__version__,
    }


def selection_rules(
    usable: pd.DataFrame, truly_best: pd.Series | None
) -> dict[str, dict[str, Any]]:
    """What each rule of :data:`SELECTION_RULES` would select, and its regret.

    Args:
        usable: Trials with a finite value of the objective.
        truly_best: The trial with the largest exact value (``None`` without a simulator).

    Returns:
        By rule: ``trial_id``, ``method``, ``value`` (the rule's number, clicks per round),
        ``ground_truth`` and ``selection_regret`` (exact, clicks per round; ``None`` without a
        simulator).
    """
    rules = {}
    for rule in SELECTION_RULES:
        if rule not in usable or not np.isfinite(usable[rule]).any():
            continue
        row = usable.loc[usable[rule].idxmax()]
        truth = _finite_or_none(row["ground_truth"])
        regret = None
        if truly_best is not None and truth is not None:
            regret = float(truly_best["ground_truth"] - row["ground_truth"])
        rules[rule] = {
            "trial_id": row["trial_id"],
            "method": row["method"],
            "value": float(row[rule]),
            "ground_truth": truth,
            "selection_regret": regret,
        }
    return rules


def export_models(
    out: Path,
    results: pd.DataFrame,
    checkpoints: dict[str, Any],
    summary: dict[str, Any],
    data: SearchData,
    *,
    candidates: bool,
) -> tuple[SavedModel | None, dict[str, SavedModel]]:
    """The selected trial in ``OUT/best`` and, with ``candidates``, each method's best trial."""
    best = None
    if summary["selected"] is not None:
        best = _export_trial(
            out / BEST_DIR, summary["selected"], results, checkpoints, summary, data
        )
    exported: dict[str, SavedModel] = {}
    if candidates and not results.empty:
        metric = summary["selection_metric"]
        usable = results[np.isfinite(results[metric])]
        for method, trials in usable.groupby("method", sort=True):
            trial = _row_summary(trials.loc[trials[metric].idxmax()])
            saved = _export_trial(
                out / CANDIDATES_DIR / method, trial, results, checkpoints, summary, data
            )
            if saved is not None:
                exported[method] = saved
    return best, exported


def _export_trial(dest, trial, results, checkpoints, summary, data) -> SavedModel | None:
    """A trial's model with its training record and the log's feature tables, in ``dest``."""
    checkpoint = checkpoints.get(trial["trial_id"])
    if checkpoint is None:
        return None
    row = results.set_index("trial_id").loc[trial["trial_id"]]
    # Serve logs its traffic with these user features (so it can be evaluated later).
    tables = data.feature_tables
    record = {
        "method": trial["method"],
        "params": trial["params"],
        "metrics": {name: trial[name] for name in METRICS},
        "selection_metric": summary["selection_metric"],
        "k": summary["k"],
        "epochs": int(row["epochs"]),
        "trial_id": trial["trial_id"],
        "logs_fingerprint": summary["logs_fingerprint"],
        "train_fingerprint": data.train_fingerprint,
        "train_rows": data.train_rows,
        "causalrec_version": causalrec.__version__,
    }
    with checkpoint.as_directory() as directory:
        saved = SavedModel.open(Path(directory) / MODEL_SUBDIR)
        return saved.copy_to(dest, training=record, feature_tables=tables, overwrite=True)
