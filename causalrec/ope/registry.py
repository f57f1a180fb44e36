"""Estimators by name, with hyperparameters: ``ips``, ``ips:clip=100``, ``dros:lambda_=10``.

A list-valued hyperparameter separates its values with ``|``: ``ips_slope:clips=10|100|inf``;
a boolean is ``true`` or ``false``.
"""

from __future__ import annotations

import dataclasses

from causalrec.ope.base import Estimator
from causalrec.ope.embedding import MIPS, SNMIPS, OffCEM
from causalrec.ope.estimators import DM, DR, IPS, SNDR, SNIPS, DRos, SwitchDR
from causalrec.ope.slate import (
    SlateIndependentIPS,
    SlateRewardInteractionIPS,
    SlateStandardIPS,
)
from causalrec.ope.slope import DRosTuning, DRTuning, IPSTuning, SwitchDRTuning
from causalrec.platform.errors import ConfigError
from causalrec.platform.validation import unknown_name_error

__all__ = ["ESTIMATORS", "parse_estimator", "parse_estimators"]

#: Every estimator class by its short name.
ESTIMATORS: dict[str, type[Estimator]] = {
    cls.name: cls
    for cls in (
        DM,
        IPS,
        SNIPS,
        DR,
        SNDR,
        SwitchDR,
        DRos,
        IPSTuning,
        DRTuning,
        SwitchDRTuning,
        DRosTuning,
        MIPS,
        SNMIPS,
        OffCEM,
        SlateStandardIPS,
        SlateIndependentIPS,
        SlateRewardInteractionIPS,
    )
}


def parse_estimator(spec: str) -> Estimator:
    """``"name"`` or ``"name:field=value,field=value"`` to an estimator instance."""
    name, _, arguments = spec.strip().partition(":")
    if name not in ESTIMATORS:
        raise unknown_name_error("estimator", name, ESTIMATORS)
    cls = ESTIMATORS[name]
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.name.startswith("_")}
    kwargs = {}
    for item in filter(None, arguments.split(",")):
        key, _, value = item.partition("=")
        if key not in fields:
            raise unknown_name_error(f"{name} hyperparameter", key, set(fields) or {"(none)"})
        kwargs[key] = _parse_value(name, key, str(fields[key].type), value)
    try:
        return cls(**kwargs)
    except TypeError:
        missing = [
            f.name
            for f in fields.values()
            if f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
            and f.name not in kwargs
        ]
        example = ",".join(f"{field}=..." for field in missing)
        raise ConfigError(f"{name} needs {example} (e.g. {name}:{missing[0]}=10|100|inf)") from None


def _parse_value(name: str, key: str, annotation: str, value: str) -> object:
    """One hyperparameter's text as its field's type (a number, a ``|`` list, a bool, a str)."""
    if annotation == "str":
        return value
    if annotation == "bool":
        if value.lower() not in ("true", "false"):
            raise ConfigError(f"{name}: {key} must be true or false; got {value!r}")
        return value.lower() == "true"
    parts = value.split("|") if annotation.startswith("tuple") else [value]
    try:
        numbers = tuple(float(part) for part in parts)
    except ValueError:
        kind = "numbers separated by |" if len(parts) > 1 or "tuple" in annotation else "a number"
        raise ConfigError(f"{name}: {key} must be {kind}; got {value!r}") from None
    return numbers if annotation.startswith("tuple") else numbers[0]


def parse_estimators(specs: str | list[str]) -> list[Estimator]:
    """Specs to instances: a list, or one string such as ``"ips:clip=100,snips,dr"``.

    In a string, a comma-separated token of the form ``field=value`` belongs to the estimator
    before it, so ``"switch_dr:tau=50,dros:lambda_=10,dr"`` names three estimators.
    """
    if isinstance(specs, str):
        grouped: list[str] = []
        for token in filter(None, (t.strip() for t in specs.split(","))):
            if "=" in token and ":" not in token and grouped:
                grouped[-1] += "," + token
            else:
                grouped.append(token)
        specs = grouped
    if not specs:
        raise ConfigError("estimators must name at least one estimator")
    return [parse_estimator(spec) for spec in specs]
