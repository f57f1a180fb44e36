"""Estimators by name, with hyperparameters: ``ips``, ``ips:clip=100``, ``dros:lambda_=10``."""

from __future__ import annotations

from causalrec.ope.base import Estimator
from causalrec.ope.embedding import MIPS, SNMIPS, OffCEM
from causalrec.ope.estimators import DM, DR, IPS, SNDR, SNIPS, DRos, SwitchDR
from causalrec.ope.slate import (
    SlateIndependentIPS,
    SlateRewardInteractionIPS,
    SlateStandardIPS,
)
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
    fields = {field for field in cls.__dataclass_fields__ if not field.startswith("_")}
    kwargs = {}
    for item in filter(None, arguments.split(",")):
        key, _, value = item.partition("=")
        if key not in fields:
            raise unknown_name_error(f"{name} hyperparameter", key, fields or {"(none)"})
        try:
            kwargs[key] = float(value)
        except ValueError:
            raise ConfigError(f"{name}: {key} must be a number; got {value!r}") from None
    return cls(**kwargs)


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
