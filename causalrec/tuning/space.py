"""The conditional search space: validation before any trial, Optuna define-by-run, decoding.

A trial's flat config holds ``method`` and ``"<method>.<parameter>"`` entries (searched and
fixed); :func:`trial_params` turns it back into the method's constructor arguments.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from causalrec.methods.base import Recommender
from causalrec.platform.errors import ConfigError
from causalrec.platform.validation import unknown_name_error
from causalrec.tuning.config import MethodSpace, TuningConfig

__all__ = [
    "RESERVED_PARAMS",
    "ConditionalSpace",
    "define_by_run",
    "max_epochs",
    "param_default",
    "trial_params",
    "validate_space",
]

#: Parameters the tuner sets itself (the device follows the resources Ray assigned the trial).
RESERVED_PARAMS = ("device",)


def validate_space(
    config: TuningConfig, registry: Mapping[str, type[Recommender]]
) -> list[MethodSpace]:
    """Check every method, parameter and range of the space before any trial starts.

    Each fixed value and each edge of each distribution (every ``choice``) is passed to the
    method's own parameter validation, so an impossible value fails here, naming its key.

    Raises:
        UnknownNameError: An unknown method or parameter (with the closest match).
        ConfigError: An empty range, a malformed distribution, or a value the method rejects;
            the message starts with the offending key (``methods.ips.lr``).
    """
    spaces = config.method_spaces()
    for space in spaces:
        if space.method not in registry:
            raise unknown_name_error("method under 'methods':", space.method, registry)
        cls = registry[space.method]
        allowed = cls.param_names()
        for name in (*space.fixed, *space.searched):
            if name in RESERVED_PARAMS:
                raise ConfigError(
                    f"methods.{space.method}.{name}: set by the tuner from the trial's "
                    "resources (resources.gpus_per_trial), not in the search space"
                )
            if name not in allowed:
                raise unknown_name_error(
                    f"parameter under 'methods.{space.method}':", name, allowed
                )
        _probe(cls, space.fixed, f"methods.{space.method}")
        for name, distribution in space.searched.items():
            for value in distribution.extremes():
                key = f"methods.{space.method}.{name}"
                _probe(cls, {**space.fixed, name: value}, f"{key}={value!r}")
    return spaces


def _probe(cls: type[Recommender], params: dict, where: str) -> None:
    """Construct the method with ``params`` and run its checks; errors start with ``where``."""
    try:
        model = cls(**params)
        validate = getattr(model, "_validate", None)
        if validate is not None:
            validate()
    except (ConfigError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def param_default(cls: type[Recommender], name: str) -> Any:
    """The default of constructor parameter ``name`` of ``cls`` (``None`` if it has none)."""
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameter = inspect.signature(init).parameters.get(name)
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            return parameter.default
    return None


def max_epochs(spaces: list[MethodSpace], registry: Mapping[str, type[Recommender]]) -> int:
    """The most epochs any trial can run (the scheduler's horizon); 1 for one-step methods."""
    horizon = 1
    for space in spaces:
        cls = registry[space.method]
        if "epochs" not in cls.param_names():
            continue
        if "epochs" in space.searched:
            distribution = space.searched["epochs"]
            epochs = max(int(v) for v in distribution.extremes())
        else:
            epochs = int(space.fixed.get("epochs", param_default(cls, "epochs") or 1))
        horizon = max(horizon, epochs)
    return horizon


@dataclass(frozen=True)
class ConditionalSpace:
    """Optuna define-by-run space: draw a method, then that method's parameters.

    The fixed parameters (and ``seed`` for methods that take one and do not fix it) come back as
    constants, so every trial's config is complete. A picklable object (not a closure), because
    Ray Tune saves the searcher with the experiment state.

    Attributes:
        spaces: Each method's space.
        seeded_methods: Methods that take a ``seed`` parameter.
        seed: The seed given to them.
    """

    spaces: tuple[MethodSpace, ...]
    seeded_methods: frozenset[str]
    seed: int

    def __call__(self, trial) -> dict[str, Any]:
        """Draw one trial's parameters; returns the constants of its config."""
        method = trial.suggest_categorical("method", [s.method for s in self.spaces])
        chosen = next(s for s in self.spaces if s.method == method)
        for name, distribution in chosen.searched.items():
            distribution.suggest(trial, f"{method}.{name}")
        constants = {f"{method}.{name}": value for name, value in chosen.fixed.items()}
        seeded = method in self.seeded_methods
        if seeded and "seed" not in chosen.fixed and "seed" not in chosen.searched:
            constants[f"{method}.seed"] = self.seed
        return constants


def define_by_run(
    spaces: list[MethodSpace], registry: Mapping[str, type[Recommender]], seed: int
) -> ConditionalSpace:
    """The :class:`ConditionalSpace` of ``spaces``."""
    seeded = frozenset(s.method for s in spaces if "seed" in registry[s.method].param_names())
    return ConditionalSpace(spaces=tuple(spaces), seeded_methods=seeded, seed=seed)


def trial_params(config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(method, constructor parameters)`` of a trial's flat config."""
    method = config["method"]
    prefix = f"{method}."
    params = {key[len(prefix) :]: value for key, value in config.items() if key.startswith(prefix)}
    return method, params
