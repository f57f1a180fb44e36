"""One trial of a search: train a method epoch by epoch, measure it, report and checkpoint.

:func:`run_trial` is the Ray Tune function trainable. Everything it needs arrives once through
Ray's object store in a :class:`TrialContext` (``tune.with_parameters``): the training split of
the log, an :class:`~causalrec.ope.OfflineEvaluator` whose reward models were fitted on the
validation split in the driver, and, when the log is simulated, the simulator itself and the
oracle's value. Trials never rebuild the world, and never read Parquet unless the training split
is over ``data.stream_above_rows`` (below).

After every epoch the trial reports ``ope_dr`` (DR estimate of its top-k policy on the validation
split, with a 95% interval), ``ope_auto`` (the estimate, with its interval, of the estimator
off-policy cross-validation chose for that policy, named in ``ope_auto_estimator``),
``ground_truth`` and ``regret`` (exact, simulated logs only; NaN
otherwise), the cumulative ``train_seconds`` and ``eval_seconds``, the torch ``device`` it trained
on (``cuda`` when Ray assigned it a GPU), and a checkpoint holding the
model as a saved model (:class:`~causalrec.methods.artifact.SavedModel`) plus its resumable
training state. A retried or resumed
trial continues from that checkpoint.

Above ``data.stream_above_rows`` the context holds no training rows but a
:class:`~causalrec.platform.log_dataset.LogDataset` (the log's part files and the training
rounds): a torch method that can stream trains from a Ray Data stream of those rounds in the
trial's process (:func:`causalrec.methods.streaming.stream_epochs`), any other method reads the
training rounds alone into memory (:meth:`LogDataset.read`). Every report says which in
``train_source``: ``memory`` (the context's split), ``stream`` or ``dataset``.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from causalrec.methods.artifact import SavedModel
from causalrec.methods.base import Recommender
from causalrec.ope.estimators import DR
from causalrec.ope.evaluate import OfflineEvaluator
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.log_dataset import LogDataset
from causalrec.simulators.scm import ConfoundedRecSimulator
from causalrec.tuning.space import trial_params

__all__ = ["MODEL_SUBDIR", "TrialContext", "TrialMeasurement", "measure", "run_trial"]

#: Where a checkpoint keeps the model (a saved model, :mod:`causalrec.methods.artifact`).
MODEL_SUBDIR = "model"
_STATE_FILE = "training_state.pt"
_PROGRESS_FILE = "progress.json"


@dataclass(frozen=True)
class TrialContext:
    """What every trial shares, put in Ray's object store once.

    Attributes:
        train: Training split of the log (``None`` when trials read it from ``train_source``).
        evaluator: Evaluator of the validation split with the ``"auto"`` candidates (reward
            models already fitted).
        simulator: The world behind simulated logs (``None`` for real logs): trials measure
            their exact value in it instead of rebuilding it.
        oracle_value: Exact value of the best top-k policy (``None`` for real logs, which have no
            simulator).
        k: Slate size of the evaluated policy.
        registry: Recommender classes by method name.
        cpus_per_trial: CPUs Ray reserved per trial (the torch thread count).
        train_source: The training split as a description of the log's files and rounds, which
            each trial reads itself (``None``: the split is ``train``).
    """

    train: LoggedFeedback | None
    evaluator: OfflineEvaluator
    simulator: ConfoundedRecSimulator | None
    oracle_value: float | None
    k: int
    registry: Mapping[str, type[Recommender]]
    cpus_per_trial: float
    train_source: LogDataset | None = None


@dataclass(frozen=True)
class TrialMeasurement:
    """A model's metrics after an epoch (NaN where the log cannot provide them)."""

    ope_dr: float
    ope_dr_low: float
    ope_dr_high: float
    ope_auto: float
    ope_auto_low: float
    ope_auto_high: float
    ope_auto_estimator: str
    ground_truth: float
    regret: float

    def to_dict(self) -> dict[str, float | str]:
        """Metrics by name."""
        return dict(self.__dict__)


def measure(model: Recommender, context: TrialContext) -> TrialMeasurement:
    """OPE estimates on the validation split and, with a simulator, the exact value and regret.

    The evaluator holds the candidates of ``estimators="auto"`` (DR among them): ``ope_dr`` is
    DR's row and ``ope_auto`` the row off-policy cross-validation chose for this policy.
    """
    simulator = context.simulator
    policy = model.policy(context.k)
    table = context.evaluator.evaluate(policy, warn=False)
    dr = table[table["estimator"] == repr(DR())].iloc[0]
    chosen = table[table["selected"]].iloc[0] if "selected" in table else dr
    truth = regret = math.nan
    if simulator is not None:
        truth = float(simulator.policy_value(policy))
        regret = float(context.oracle_value - truth)
    return TrialMeasurement(
        ope_dr=float(dr["estimate"]),
        ope_dr_low=float(dr["low"]),
        ope_dr_high=float(dr["high"]),
        ope_auto=float(chosen["estimate"]),
        ope_auto_low=float(chosen["low"]),
        ope_auto_high=float(chosen["high"]),
        ope_auto_estimator=str(chosen["estimator"]),
        ground_truth=truth,
        regret=regret,
    )


def _device() -> str:
    import ray

    gpu_ids = ray.get_gpu_ids() if ray.is_initialized() else []
    return "cuda" if gpu_ids and torch.cuda.is_available() else "cpu"


def _restore(checkpoint) -> tuple[dict | None, dict[str, Any]]:
    """Training state and progress counters of a Tune checkpoint (or nothing)."""
    if checkpoint is None:
        return None, {}
    with checkpoint.as_directory() as directory:
        directory = Path(directory)
        progress = json.loads((directory / _PROGRESS_FILE).read_text())
        state_path = directory / _STATE_FILE
        state = torch.load(state_path, weights_only=True) if state_path.exists() else None
    return state, progress


def _epochs(model: Recommender, context: TrialContext, state: dict | None):
    """The model's epochs on the context's training split, and where it read the split from."""
    from causalrec.methods.streaming import is_streamable, stream_epochs

    if context.train_source is None:
        return "memory", model.fit_epochs(context.train, state=state)
    if is_streamable(model):
        return "stream", stream_epochs(model, context.train_source, state=state, in_process=True)
    return "dataset", model.fit_epochs(context.train_source.read(), state=state)


def run_trial(config: dict[str, Any], context: TrialContext) -> None:
    """Ray Tune function trainable (see the module docstring)."""
    import ray
    from ray import tune

    torch.set_num_threads(max(1, int(context.cpus_per_trial)))
    method, params = trial_params(config)
    cls = context.registry[method]
    if "device" in cls.param_names():
        params["device"] = _device()
    model = cls(**params)
    device = params.get("device", "cpu")
    state, progress = _restore(tune.get_checkpoint())
    train_seconds = float(progress.get("train_seconds", 0.0))
    eval_seconds = float(progress.get("eval_seconds", 0.0))
    restarts = int(progress.get("restarts", -1)) + 1
    # Recorded in the results: which Ray node ran the trial (node IPs repeat on one machine).
    node = ray.get_runtime_context().get_node_id()
    clock = time.perf_counter()
    source, epochs = _epochs(model, context, state)
    for epoch in epochs:
        now = time.perf_counter()
        train_seconds += now - clock
        metrics = measure(model, context).to_dict()
        eval_seconds += time.perf_counter() - now
        counters = {
            "epoch": epoch,
            "train_seconds": train_seconds,
            "eval_seconds": eval_seconds,
            "restarts": restarts,
        }
        with tempfile.TemporaryDirectory() as staging:
            staging = Path(staging)
            SavedModel.write(staging / MODEL_SUBDIR, model)
            training_state = model.training_state()
            if training_state is not None:
                torch.save(training_state, staging / _STATE_FILE)
            (staging / _PROGRESS_FILE).write_text(json.dumps(counters))
            tune.report(
                {
                    **metrics,
                    **counters,
                    "method": method,
                    "device": device,
                    "node_id": node,
                    "train_source": source,
                },
                checkpoint=tune.Checkpoint.from_directory(str(staging)),
            )
        clock = time.perf_counter()
