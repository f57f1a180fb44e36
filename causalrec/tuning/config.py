"""The tuning configuration: a conditional search space over methods, defined as data.

A YAML file (``configs/tuning/*.yaml``) becomes a :class:`TuningConfig`. Its ``methods`` maps
each candidate method to its own hyperparameters; a value is either a constant (fixed for every
trial of that method) or a one-key mapping naming a distribution::

Methods:
      ips:
        lr: {loguniform: [0.001, 0.05]}
        dim: {choice: [16, 32, 64]}
        epochs: {int: [2, 12]}
        propensity: popularity          # fixed

Distributions: ``uniform`` and ``loguniform`` (floats), ``int`` and ``logint`` (integers, bounds
included), ``choice`` (a list). The space is conditional: a trial first draws a method, then only
that method's parameters (Optuna's define-by-run interface, so TPE models each method's
parameters separately).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from typing import Any, Literal

import pydantic

from causalrec.platform.config import StrictConfig
from causalrec.platform.errors import ConfigError

__all__ = [
    "DISTRIBUTIONS",
    "TRACKERS",
    "Distribution",
    "MethodSpace",
    "ObjectiveConfig",
    "ResourcesConfig",
    "SchedulerConfig",
    "SearchConfig",
    "TrainingDataConfig",
    "TuningConfig",
]

#: Names of the distributions a parameter can draw from.
DISTRIBUTIONS = ("uniform", "loguniform", "int", "logint", "choice")
#: Experiment trackers of a search (:mod:`causalrec.tuning.tracking`).
TRACKERS = ("mlflow", "none")


@dataclass(frozen=True)
class Distribution:
    """A parameter's search distribution.

    Attributes:
        kind: One of :data:`DISTRIBUTIONS`.
        low: Lower bound (numeric kinds).
        high: Upper bound (numeric kinds; included).
        values: Candidates of ``choice``.
    """

    kind: str
    low: float | None = None
    high: float | None = None
    values: tuple = ()

    @classmethod
    def parse(cls, key: str, spec: dict) -> Distribution:
        """Parse ``{kind: [low, high]}`` or ``{choice: [...]}``; ``key`` names it in errors."""
        if len(spec) != 1:
            raise ConfigError(
                f"{key}: a distribution is a mapping with one key out of {list(DISTRIBUTIONS)}; "
                f"got {spec!r}"
            )
        ((kind, argument),) = spec.items()
        if kind not in DISTRIBUTIONS:
            from causalrec.platform.validation import unknown_name_error

            raise unknown_name_error(f"distribution of {key}:", str(kind), DISTRIBUTIONS)
        if kind == "choice":
            if not isinstance(argument, list) or not argument:
                raise ConfigError(f"{key}: choice needs a non-empty list; got {argument!r}")
            for value in argument:
                if not isinstance(value, (str, int, float, bool)) and value is not None:
                    raise ConfigError(
                        f"{key}: choice values must be scalars (str, number, bool, null); "
                        f"got {value!r}"
                    )
            return cls(kind=kind, values=tuple(argument))
        if (
            not isinstance(argument, list)
            or len(argument) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in argument)
        ):
            raise ConfigError(f"{key}: {kind} needs [low, high] numbers; got {argument!r}")
        low, high = argument
        if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
            raise ConfigError(f"{key}: {kind} has an empty range [{low}, {high}]")
        if kind.startswith("log") and low <= 0:
            raise ConfigError(f"{key}: {kind} needs low > 0; got [{low}, {high}]")
        if kind in ("int", "logint") and (int(low) != low or int(high) != high):
            raise ConfigError(f"{key}: {kind} needs integer bounds; got [{low}, {high}]")
        return cls(kind=kind, low=low, high=high)

    def extremes(self) -> list:
        """Values at the edges of the distribution (every choice), for validating them early."""
        if self.kind == "choice":
            return list(self.values)
        if self.kind in ("int", "logint"):
            return [int(self.low), int(self.high)]
        return [float(self.low), float(self.high)]

    def suggest(self, trial, name: str) -> Any:
        """Draw this parameter in an Optuna define-by-run ``trial``."""
        if self.kind == "choice":
            return trial.suggest_categorical(name, list(self.values))
        if self.kind in ("int", "logint"):
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.kind == "logint")
        return trial.suggest_float(name, self.low, self.high, log=self.kind == "loguniform")


@dataclass(frozen=True)
class MethodSpace:
    """One method's part of the search space.

    Attributes:
        method: Registry name.
        fixed: Parameters with a constant value.
        searched: Parameters drawn from a distribution.
    """

    method: str
    fixed: dict[str, Any]
    searched: dict[str, Distribution]


class SearchConfig(StrictConfig):
    """How trials are proposed.

    Attributes:
        algorithm: ``optuna`` (Tree-structured Parzen Estimator, Bergstra et al. 2011) or
            ``random``; both through ``ray.tune.search.optuna.OptunaSearch``.
        num_samples: Number of trials.
        max_concurrent_trials: Trials running at once (bounded further by the cluster's CPUs).
        time_budget_s: Wall-clock budget of the whole search in seconds (``None``: no limit).
        seed: Seed of the sampler (and of every model, unless a method fixes ``seed``).
    """

    algorithm: Literal["optuna", "random"] = "optuna"
    num_samples: int = pydantic.Field(default=24, ge=1)
    max_concurrent_trials: int = pydantic.Field(default=2, ge=1)
    time_budget_s: float | None = pydantic.Field(default=None, gt=0)
    seed: int = 0


class ObjectiveConfig(StrictConfig):
    """What trials are selected by.

    Attributes:
        metric: The selection rule, each on a validation split of the logs (what a real user
            has) for the model's top-K policy (K: the log's slate size): ``ope_dr`` — the
            doubly robust estimate; ``ope_dr_low`` — the lower end of its 95% interval (risk
            averse: a candidate must be good *and* well supported by the log); ``ope_auto`` —
            the estimate of the estimator off-policy cross-validation chose for that policy
            (:mod:`causalrec.ope.selection`); ``ope_auto_low`` — the lower end of its
            interval; ``ground_truth`` — the simulator's exact value of that policy (simulated
            logs only). Every rule's regret is reported whichever one selects.
        validation_fraction: Share of the log's rounds held out for validation (the last ones).
        reward_model: Reward model of the DR estimate (``logistic``, ``hgb`` or ``mlp``).
    """

    metric: Literal["ope_dr", "ope_dr_low", "ope_auto", "ope_auto_low", "ground_truth"] = "ope_dr"
    validation_fraction: float = pydantic.Field(default=0.2, gt=0, lt=1)
    reward_model: Literal["logistic", "hgb", "mlp"] = "logistic"


class SchedulerConfig(StrictConfig):
    """Early stopping across epochs.

    Attributes:
        kind: ``asha`` (asynchronous successive halving, Li et al. 2020) or ``fifo`` (none).
        grace_period: Epochs every trial runs before it can be stopped.
        reduction_factor: ASHA's η: the share 1/η of trials that continue at each rung.
    """

    kind: Literal["asha", "fifo"] = "asha"
    grace_period: int = pydantic.Field(default=2, ge=1)
    reduction_factor: float = pydantic.Field(default=3.0, gt=1)


class ResourcesConfig(StrictConfig):
    """Resources of one trial.

    Attributes:
        cpus_per_trial: CPUs reserved per trial (also the trial's torch thread count).
        gpus_per_trial: GPUs per trial; fractional values share a GPU (0.25: four trials per
            GPU). Dropped to 0, with a notice, on a cluster without GPUs.
    """

    cpus_per_trial: float = pydantic.Field(default=1.0, gt=0)
    gpus_per_trial: float = pydantic.Field(default=0.0, ge=0)


class TrainingDataConfig(StrictConfig):
    """Where trials read their training split from.

    Attributes:
        stream_above_rows: When the training split has more rows than this, it does not go
            into Ray's object store: trials receive a description of it (the log's Parquet part
            files and the training rounds, those below the validation cut) and read their rows
            from the files. Torch methods that can stream (naive, ips, snips, dr_jl, mrdr,
            causalnet, cause; exposed feedback, ``mf``/``two_tower``, logged propensities: see
            :mod:`causalrec.methods.streaming`) train from mini-batches of a Ray Data stream
            in the trial's process; every other method (gboost, dice, a transformer, estimated
            propensities, ...) materialises the training rounds alone in the trial, part file
            by part file. A log passed in memory (not as a path) is first written to
            ``OUT/train_split/``. ``None`` (the default): the split always travels in memory.
        reserved_cpus: CPUs of the cluster left free for Ray Data's read tasks while trials
            read from the files (those tasks run outside the trials' reservations): at most
            ``(cluster CPUs - reserved_cpus) / resources.cpus_per_trial`` trials run at once.
    """

    stream_above_rows: pydantic.StrictInt | None = pydantic.Field(default=None, ge=0)
    reserved_cpus: float = pydantic.Field(default=1.0, gt=0)


class TuningConfig(StrictConfig):
    """A complete search (see the module docstring for the ``methods`` format).

    Attributes:
        methods: Candidate methods and their parameters (constants or distributions).
        search: Trial proposal.
        objective: Selection metric.
        scheduler: Early stopping.
        resources: Per-trial resources.
        data: Where trials read their training split from (in memory, or from the log's
            files above a size).
        max_failures: Retries of a failing trial, each from its latest checkpoint.
        export_candidates: Also export the best trial of every method (by the selection
            metric) to ``OUT/candidates/METHOD/``, in the same format as ``OUT/best/``.
        tracking: ``mlflow``: every trial an MLflow run (parameters, per-epoch metrics, the
            selected model as an artifact) in ``OUT/mlruns`` or at ``MLFLOW_TRACKING_URI``
            (needs ``pip install 'causalrec[mlflow]'``); ``none``: no tracking.
    """

    methods: dict[str, dict[str, Any]]
    search: SearchConfig = SearchConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    resources: ResourcesConfig = ResourcesConfig()
    data: TrainingDataConfig = TrainingDataConfig()
    max_failures: int = pydantic.Field(default=2, ge=0)
    export_candidates: bool = False
    tracking: Literal["mlflow", "none"] = "none"

    @pydantic.field_validator("tracking")
    @classmethod
    def _tracker_is_installed(cls, tracking: str) -> str:
        if tracking == "mlflow" and importlib.util.find_spec("mlflow") is None:
            raise ValueError(
                "tracking 'mlflow' needs MLflow, which is not installed: "
                "pip install 'causalrec[mlflow]' (or set tracking: none)"
            )
        return tracking

    @pydantic.field_validator("methods", mode="before")
    @classmethod
    def _methods_are_mappings(cls, methods: Any) -> Any:
        if not isinstance(methods, dict) or not methods:
            raise ValueError("methods must map at least one method name to its parameters")
        for name, params in methods.items():
            if params is not None and not isinstance(params, dict):
                raise ValueError(f"methods.{name} must be a mapping of parameters")
        return {name: dict(params or {}) for name, params in methods.items()}

    def method_spaces(self) -> list[MethodSpace]:
        """Each method's fixed and searched parameters (distributions parsed and checked)."""
        spaces = []
        for method, params in self.methods.items():
            fixed, searched = {}, {}
            for name, value in params.items():
                key = f"methods.{method}.{name}"
                if isinstance(value, dict):
                    searched[name] = Distribution.parse(key, value)
                else:
                    fixed[name] = value
            spaces.append(MethodSpace(method=method, fixed=fixed, searched=searched))
        return spaces
