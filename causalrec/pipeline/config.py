"""The pipeline configuration (``configs/pipeline/*.yaml``): one typed object for every stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pydantic

from causalrec.platform.config import StrictConfig, config_dir, load_yaml_config
from causalrec.platform.errors import ConfigError
from causalrec.tuning.config import TuningConfig

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
    """

    preset: str = "confounded"
    overrides: dict[str, Any] = pydantic.Field(default_factory=dict)
    rounds: int = pydantic.Field(default=100_000, ge=1_000)
    uniform_rounds: int = pydantic.Field(default=10_000, ge=0)


class ServeStageConfig(StrictConfig):
    """Stage 3: deployment of the A/B experiment on Ray Serve.

    Attributes:
        deploy: Deploy the experiment (``false``: an offline run; the A/B test then runs
            in-process).
        host: HTTP host (loopback unless told otherwise).
        port: HTTP port (0: any free port).
        app: Further :class:`~causalrec.serve.config.ServeAppArgs` fields (replicas, limits).
    """

    deploy: bool = True
    host: str = "127.0.0.1"
    port: int = pydantic.Field(default=8000, ge=0, le=65535)
    app: dict[str, Any] = pydantic.Field(default_factory=dict)


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
