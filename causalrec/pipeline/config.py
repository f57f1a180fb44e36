"""The pipeline configuration (``configs/pipeline/*.yaml``): one typed object for every stage."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import pydantic

from causalrec.platform.config import StrictConfig, config_dir, load_yaml_config
from causalrec.platform.errors import ConfigError, UnknownNameError
from causalrec.platform.validation import unknown_name_error
from causalrec.simulators.logs import CHUNK_ROUNDS
from causalrec.tuning.config import TuningConfig

if TYPE_CHECKING:
    from causalrec.serve.config import ServeAppArgs

__all__ = [
    "ABTestStageConfig",
    "OPEStageConfig",
    "PipelineConfig",
    "ServeStageConfig",
    "SimulateStageConfig",
    "load_pipeline_config",
]


class SimulateStageConfig(StrictConfig):
    """Stage 1: the world and its logs.

    Attributes:
        preset: Simulator preset (``configs/simulators/``), e.g. ``confounded``.
        overrides: Simulator config fields that replace the preset's (``n_users``, ...).
        rounds: Rounds of confounded logs (logged by the preset's logging policy).
        uniform_rounds: Rounds of a uniform-random slice (a small randomised experiment, the
            kind of data real teams collect to check off-policy estimates).
        chunk_rounds: Rounds per simulation shard (part of the seeding scheme: changing it
            changes the draws; see :mod:`causalrec.simulators.shards`).
        workers: Shards simulated at once: ``0`` in the pipeline's process, ``N`` as Ray tasks;
            ``None``: Ray tasks on every CPU of the cluster when the run joins one, the
            pipeline's process otherwise. The logs are the same either way.
    """

    preset: str = "confounded"
    overrides: dict[str, Any] = pydantic.Field(default_factory=dict)
    rounds: int = pydantic.Field(default=100_000, ge=1_000)
    uniform_rounds: int = pydantic.Field(default=10_000, ge=0)
    chunk_rounds: int = pydantic.Field(default=CHUNK_ROUNDS, ge=1)
    workers: int | None = pydantic.Field(default=None, ge=0)


class ServeStageConfig(StrictConfig):
    """Stage 3: deployment of the A/B experiment on Ray Serve.

    Attributes:
        deploy: Deploy the experiment (``false``: an offline run; the A/B test then runs
            in-process).
        host: HTTP host (loopback unless told otherwise).
        port: HTTP port (0: any free port).
        app: Further :class:`~causalrec.serve.config.ServeAppArgs` fields (replicas, limits);
            ``feedback_dir`` and ``data_root`` default to ``OUT/serve/feedback`` and ``OUT``,
            and the pipeline sets the arms (:attr:`PIPELINE_FIELDS`) itself.
    """

    #: ``ServeAppArgs`` fields the pipeline sets itself: arm a (``model_dir``, the baseline's
    #: best trial) and arm b (``experiment``, the winner), so ``serve.app`` may not name them.
    PIPELINE_FIELDS: ClassVar[tuple[str, ...]] = ("model_dir", "experiment")

    deploy: bool = True
    host: str = "127.0.0.1"
    port: int = pydantic.Field(default=8000, ge=0, le=65535)
    app: dict[str, Any] = pydantic.Field(default_factory=dict)

    def app_args(
        self, out: Path, *, baseline_dir: Path, treatment_dir: Path, salt: str
    ) -> ServeAppArgs:
        """The deployed application's arguments: ``app`` over the pipeline's own values.

        Args:
            out: The run directory (feedback goes to ``OUT/serve/feedback``, ``/evaluate`` may
                read logs under ``OUT``, unless ``app`` says otherwise).
            baseline_dir: Arm a's model (the baseline's best trial).
            treatment_dir: Arm b's model (the winner).
            salt: Salt of the user split.

        Raises:
            ConfigError: A key of ``app`` that is not a ``ServeAppArgs`` field or that the
                pipeline sets itself, or a value that does not validate (named
                ``serve.app.KEY``).
        """
        from causalrec.serve.config import ServeAppArgs

        fields = ServeAppArgs.model_fields
        for key in self.app:
            if key in self.PIPELINE_FIELDS:
                raise ConfigError(
                    f"serve.app.{key}: set by the pipeline (arm a is the baseline's best trial, "
                    "arm b the winner); remove it"
                )
            if key not in fields:
                known = [name for name in fields if name not in self.PIPELINE_FIELDS]
                error = unknown_name_error("ServeAppArgs field", str(key), known)
                raise UnknownNameError(f"serve.app.{key}: {error}")
        values = {
            "feedback_dir": str(out / "serve" / "feedback"),
            "data_root": str(out),
            **self.app,
            "model_dir": str(baseline_dir),
            "experiment": {"model_dir": str(treatment_dir), "salt": salt},
        }
        try:
            return ServeAppArgs.model_validate(values)
        except pydantic.ValidationError as exc:
            problems = [
                f"serve.app.{'.'.join(map(str, error['loc']))}: "
                f"{error['msg'].removeprefix('Value error, ')}; got {error.get('input')!r}"
                for error in exc.errors()
            ]
            raise ConfigError("; ".join(problems)) from None


class ABTestStageConfig(StrictConfig):
    """Stage 4: the simulated A/B test of the winner (arm b) against a baseline (arm a).

    Attributes:
        users: User visits to simulate.
        baseline: Method whose best trial is the control arm (must be among the tuned methods).
        via: ``http`` (through the deployed application) or ``in-process``.
        alpha: 1 - confidence level.
        salt: Salt of the user split.
        estimator: Estimator of the offline (OPE) lift.
    """

    users: int = pydantic.Field(default=20_000, ge=4)
    baseline: str = "naive"
    via: Literal["http", "in-process"] = "http"
    alpha: float = pydantic.Field(default=0.05, gt=0, lt=1)
    salt: str = "causalrec-pipeline"
    estimator: Literal["dr", "ips", "dm"] = "dr"


class OPEStageConfig(StrictConfig):
    """Stage 5: off-policy evaluation of every candidate with every estimator.

    Attributes:
        estimators: Estimator specs (``None``: every standard estimator).
        reward_model: Reward model of DM and the DR family.
    """

    estimators: list[str] | None = None
    reward_model: Literal["logistic", "hgb", "mlp"] = "logistic"


class PipelineConfig(StrictConfig):
    """The end-to-end run (see :mod:`causalrec.pipeline.runner`).

    Attributes:
        seed: Seed of the logs, the search, the A/B test.
        simulate: Stage 1.
        tuning: Stage 2: a tuning config inline, or the path of one (relative paths are looked
            up beside the pipeline config, then under ``configs/``).
        serve: Stage 3.
        abtest: Stage 4.
        ope: Stage 5.
    """

    seed: int = 0
    simulate: SimulateStageConfig = SimulateStageConfig()
    tuning: TuningConfig | str
    serve: ServeStageConfig = ServeStageConfig()
    abtest: ABTestStageConfig = ABTestStageConfig()
    ope: OPEStageConfig = OPEStageConfig()

    def resolved_tuning(self, base: Path | None = None) -> TuningConfig:
        """The tuning config, loaded from its path if given as one."""
        if isinstance(self.tuning, TuningConfig):
            return self.tuning
        candidates = [Path(self.tuning)]
        if base is not None:
            candidates.insert(0, base / self.tuning)
        candidates.append(config_dir() / self.tuning)
        for path in candidates:
            if path.is_file():
                return load_yaml_config(path, TuningConfig)
        raise ConfigError(f"tuning: no tuning config at {self.tuning!r}")


def load_pipeline_config(path: str | Path) -> tuple[PipelineConfig, TuningConfig]:
    """The pipeline config at ``path`` and its resolved tuning config."""
    config = load_yaml_config(path, PipelineConfig)
    return config, config.resolved_tuning(Path(path).parent)
