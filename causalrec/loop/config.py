"""The closed loop's configuration (``configs/loop/*.yaml``): one typed object for the whole run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pydantic

from causalrec.platform.config import StrictConfig, load_yaml_config
from causalrec.platform.policy import Exploration

__all__ = [
    "ArmConfig",
    "InterventionConfig",
    "LoopConfig",
    "LoopOPEConfig",
    "LoopServingConfig",
    "WorldConfig",
    "load_loop_config",
]

#: Named fixed policies an arm can deploy in every generation.
FIXED_POLICIES = ("logging", "uniform", "oracle")


class ArmConfig(StrictConfig):
    """One arm: a retraining strategy, or a fixed policy.

    Attributes:
        name: The arm's name in results and figures (letters, digits, ``_`` and ``-``).
        method: Retrain this method (``naive``, ``ips``, ``dr_jl``, ``gboost``, ...) on all the
            arm's logs after every generation; give exactly one of ``method`` and ``policy``.
        params: The method's parameters (``epochs``, ``propensity``, ...); ``seed`` defaults to
            the loop's seed.
        exploration: How the retrained model serves: ``none`` (top-k), ``epsilon`` or
            ``softmax`` (exact propensities either way).
        epsilon: ε of ``epsilon`` exploration.
        temperature: Temperature of ``softmax`` exploration.
        policy: A fixed policy deployed in every generation: ``logging`` (the world's logger,
            which follows the world's popularity), ``uniform`` or ``oracle``.
    """

    name: str = pydantic.Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")
    method: str | None = None
    params: dict[str, Any] = pydantic.Field(default_factory=dict)
    exploration: Literal["none", "epsilon", "softmax"] = "none"
    epsilon: float = pydantic.Field(default=0.1, ge=0, le=1)
    temperature: float = pydantic.Field(default=1.0, gt=0)
    policy: Literal["logging", "uniform", "oracle"] | None = None

    @pydantic.model_validator(mode="after")
    def _one_strategy(self):
        if (self.method is None) == (self.policy is None):
            raise ValueError(
                f"arm {self.name!r}: give exactly one of 'method' (retrain) and 'policy' (fixed)"
            )
        if self.policy is not None and (self.params or self.exploration != "none"):
            raise ValueError(
                f"arm {self.name!r}: a fixed policy takes no 'params' or 'exploration'"
            )
        return self

    @property
    def retrains(self) -> bool:
        """Whether the arm retrains a model after every generation."""
        return self.method is not None

    def exploration_spec(self) -> Exploration:
        """The retrained model's exploration."""
        return Exploration(self.exploration, epsilon=self.epsilon, temperature=self.temperature)


class WorldConfig(StrictConfig):
    """The world every arm's twin is a copy of.

    Attributes:
        preset: Simulator preset (``configs/simulators/``), e.g. ``feedback_loop``.
        overrides: Simulator config fields that replace the preset's (``n_users``, ...). The
            world's ``seed`` is the loop's seed.
    """

    preset: str = "feedback_loop"
    overrides: dict[str, Any] = pydantic.Field(default_factory=dict)

    @pydantic.field_validator("overrides")
    @classmethod
    def _no_seed(cls, value):
        if "seed" in value:
            raise ValueError("world.overrides.seed: the world's seed is the loop's (seeds: [...])")
        return value


class LoopOPEConfig(StrictConfig):
    """The off-policy estimate of each next model, made before it is deployed.

    Attributes:
        estimator: Sequential estimator on the generation's session log (``pdis``, ``wpdis``,
            ``dr``, ``wdr``; see :func:`~causalrec.ope.evaluate_sessions.evaluate_sessions`).
            ``dr`` is defined even where the next model shows items the log never shows (its
            Q model carries it there); the weighted ones are then undefined and recorded so.
        alpha: 1 − the coverage of its interval.
    """

    estimator: Literal["pdis", "wpdis", "dr", "wdr"] = "dr"
    alpha: float = pydantic.Field(default=0.05, gt=0, lt=1)


class LoopServingConfig(StrictConfig):
    """How the arms' retrained models reach the simulated users.

    ``in_process`` draws each generation's slates from the deployed policy in this process.
    ``http`` deploys each model on Ray Serve (:mod:`causalrec.serve.app`, one application that
    every new model updates in place, without downtime); the users' requests go to
    ``/recommend`` and their clicks to ``/feedback``, whose log is checked row by row against the
    generation's own. The two give identical results for deterministic arms (``exploration:
    none``); exploring arms draw their exploration from the server's random stream instead of
    the loop's, so they agree in distribution only. Fixed policies, generation 0 (the world's
    logger) and intervened twins after their intervention are served in process in both modes:
    Serve serves saved models, and an intervention changes a policy outside its model.

    Attributes:
        mode: ``in_process`` or ``http``.
        host: Interface of Serve's HTTP proxy (loopback by default).
        port: Its port (``None``: a free one); must be given when Serve already runs on the Ray
            the loop joins (the loop then uses that proxy).
        users_per_request: Users per ``/recommend`` request (and the deployed server's limit).
    """

    mode: Literal["in_process", "http"] = "in_process"
    host: str = "127.0.0.1"
    port: int | None = pydantic.Field(default=None, ge=1, le=65535)
    users_per_request: int = pydantic.Field(default=256, ge=1, le=4096)


class InterventionConfig(StrictConfig):
    """An intervention on one arm's deployed policy from a generation on (configured as data).

    The intervened arm is a twin of arm ``arm`` (same world, same random numbers, the same
    retraining) that serves its policy changed by the intervention from ``from_generation`` on;
    before that it is bit-identical to ``arm``. Kinds:

    * ``boost``: multiply the odds of ``items`` by ``factor`` in the arm's ranking (a logit
      offset of log ``factor`` on the scores its policy ranks or samples by);
    * ``cap_popularity``: cap the weight of log popularity in the world's logger at ``weight``
      (arms that serve ``policy: logging`` only: models have no explicit popularity weight);
    * ``explore``: serve a uniform slate with probability ``epsilon``;
    * ``remove``: never show ``items`` (slates of one item: the policy conditioned on not
      showing them, propensities exact).

    Attributes:
        name: The intervened arm's name (distinct from every arm's).
        arm: The arm it changes.
        from_generation: The first generation it applies to (>= 1).
        kind: ``boost``, ``cap_popularity``, ``explore`` or ``remove``.
        items: ``tail`` (the long tail by base popularity) or a list of item ids (``boost``,
            ``remove``).
        factor: Odds multiplier of ``boost`` (> 0).
        weight: The cap of ``cap_popularity`` (>= 0).
        epsilon: Share of uniform slates of ``explore``, in (0, 1].
        ab_share: Share of users treated in the A/B test of the intervention, in (0, 1).
    """

    name: str = pydantic.Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")
    arm: str
    from_generation: int = pydantic.Field(ge=1)
    kind: Literal["boost", "cap_popularity", "explore", "remove"]
    items: Literal["tail"] | list[pydantic.NonNegativeInt] | None = None
    factor: float | None = pydantic.Field(default=None, gt=0)
    weight: float | None = pydantic.Field(default=None, ge=0)
    epsilon: float | None = pydantic.Field(default=None, gt=0, le=1)
    ab_share: float = pydantic.Field(default=0.5, gt=0, lt=1)

    @pydantic.model_validator(mode="after")
    def _fields_of_the_kind(self):
        needed = {
            "boost": ("items", "factor"),
            "cap_popularity": ("weight",),
            "explore": ("epsilon",),
            "remove": ("items",),
        }[self.kind]
        for name in ("items", "factor", "weight", "epsilon"):
            given = getattr(self, name) is not None
            if given != (name in needed):
                verb = "needs" if not given else "takes no"
                raise ValueError(f"intervention {self.name!r}: {self.kind} {verb} {name!r}")
        if isinstance(self.items, list) and not self.items:
            raise ValueError(f"intervention {self.name!r}: items must not be empty")
        return self


class LoopConfig(StrictConfig):
    """The closed loop (see :mod:`causalrec.loop.runner`).

    Attributes:
        seeds: One run of every arm per seed (the world's seed and the draws'), >= 1 of them.
        generations: Generations served by the arms' own models, after generation 0 in which
            every arm serves the world's logger (so all arms start from the same logs).
        world: The world.
        arms: The arms (unique names).
        truth_replicas: Copies of each generation whose mean is the rollout truth of the
            deployed policy (>= 2).
        head_share: Share of the catalogue, by base popularity, that is the head; the rest is
            the long tail.
        ope: The estimate of each next model before it is deployed.
        alpha: 1 − the coverage of the intervals across seeds.
        interventions: Interventions, each run as an arm of its own (see
            :class:`InterventionConfig`); their effects are reported exactly, by A/B test and
            off-policy.
        serving: In process or through Ray Serve over HTTP (:class:`LoopServingConfig`).
    """

    seeds: list[int] = pydantic.Field(default_factory=lambda: [0, 1, 2], min_length=1)
    generations: int = pydantic.Field(default=5, ge=1, le=1000)
    world: WorldConfig = WorldConfig()
    arms: list[ArmConfig] = pydantic.Field(min_length=1)
    truth_replicas: int = pydantic.Field(default=4, ge=2)
    head_share: float = pydantic.Field(default=0.2, gt=0, lt=1)
    ope: LoopOPEConfig = LoopOPEConfig()
    alpha: float = pydantic.Field(default=0.05, gt=0, lt=1)
    interventions: list[InterventionConfig] = pydantic.Field(default_factory=list)
    serving: LoopServingConfig = LoopServingConfig()

    @pydantic.field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value):
        if len(set(value)) != len(value) or any(seed < 0 for seed in value):
            raise ValueError(f"seeds must be distinct integers >= 0; got {value}")
        return value

    @pydantic.field_validator("arms")
    @classmethod
    def _distinct_arms(cls, value):
        names = [arm.name for arm in value]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"arm names must be distinct; repeated: {repeated}")
        return value

    @pydantic.model_validator(mode="after")
    def _interventions_name_their_arms(self):
        arms = {arm.name: arm for arm in self.arms}
        taken = set(arms)
        for intervention in self.interventions:
            where = f"interventions.{intervention.name}"
            if intervention.name in taken:
                raise ValueError(f"{where}: the name is already an arm's or an intervention's")
            taken.add(intervention.name)
            if intervention.arm not in arms:
                raise ValueError(f"{where}.arm: no arm {intervention.arm!r} (arms: {list(arms)})")
            if intervention.from_generation > self.generations:
                raise ValueError(
                    f"{where}.from_generation: {intervention.from_generation} is after the last "
                    f"generation ({self.generations})"
                )
            if intervention.kind == "cap_popularity" and arms[intervention.arm].policy != "logging":
                raise ValueError(
                    f"{where}: cap_popularity caps the world's logger's popularity weight; arm "
                    f"{intervention.arm!r} does not serve policy: logging"
                )
        return self

    def arm(self, name: str) -> ArmConfig:
        """The arm called ``name``."""
        return next(arm for arm in self.arms if arm.name == name)


def load_loop_config(path: str | Path) -> LoopConfig:
    """The loop config at ``path`` (YAML).

    Raises:
        ConfigError: For a missing file or a value that does not validate (naming the field).
        UnknownNameError: For an unknown key.
    """
    return load_yaml_config(path, LoopConfig)
