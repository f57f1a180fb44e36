"""Typed configuration objects loaded from YAML presets.

Every config in causalrec is a :class:`StrictConfig`: a frozen pydantic model that refuses unknown
keys (suggesting the closest known one) and reports out-of-range values with the field's name and
the value received. Presets are YAML files under ``configs/<group>/<name>.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

from causalrec.platform.errors import ConfigError
from causalrec.platform.validation import unknown_name_error

__all__ = ["StrictConfig", "config_dir", "list_presets", "load_preset", "load_yaml_config"]

ConfigT = TypeVar("ConfigT", bound="StrictConfig")


class StrictConfig(pydantic.BaseModel):
    """Base of causalrec's typed configs: frozen, no unknown keys, clear errors."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", validate_default=True)

    @classmethod
    def from_dict(cls: type[ConfigT], values: dict[str, Any], *, source: str = "config") -> ConfigT:
        """Validate ``values`` into a config.

        Args:
            values: Mapping from field name to value.
            source: Where the values came from (a file name), used in error messages.

        Returns:
            The validated config.

        Raises:
            UnknownNameError: For a key that is not a field (with the closest field suggested).
            ConfigError: For a value that fails validation (field name and value in the message).
        """
        if not isinstance(values, dict):
            raise ConfigError(
                f"{source}: expected a mapping of fields, got {type(values).__name__}"
            )
        for key in values:
            if key not in cls.model_fields:
                raise unknown_name_error(
                    f"{cls.__name__} key in {source}:", str(key), cls.model_fields
                )
        try:
            return cls.model_validate(values)
        except pydantic.ValidationError as exc:
            raise ConfigError(_describe_validation_error(exc, source)) from None

    def replace(self: ConfigT, **changes: Any) -> ConfigT:
        """Return a copy with ``changes`` applied and validated."""
        return type(self).from_dict({**self.model_dump(), **changes}, source="override")


def _describe_validation_error(exc: pydantic.ValidationError, source: str) -> str:
    parts = []
    for error in exc.errors():
        field = ".".join(str(loc) for loc in error["loc"]) or "<root>"
        value = error.get("input")
        message = error["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        parts.append(f"{field}={value!r}: {message}")
    return f"invalid {source}: " + "; ".join(parts)


def load_yaml_config(path: str | Path, config_type: type[ConfigT]) -> ConfigT:
    """Load a YAML file into ``config_type``.

    Raises:
        ConfigError: If the file is missing, is not valid YAML, or fails validation.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    return config_type.from_dict(values, source=str(path))


def config_dir() -> Path:
    """Directory holding the YAML presets (``configs/`` in a checkout, bundled in a wheel)."""
    bundled = Path(__file__).resolve().parents[1] / "_configs"
    if bundled.is_dir():
        return bundled
    return Path(__file__).resolve().parents[2] / "configs"


def list_presets(group: str) -> list[str]:
    """Names of the presets available in ``configs/<group>/``."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def load_preset(group: str, name: str, config_type: type[ConfigT]) -> ConfigT:
    """Load preset ``name`` of ``group`` into ``config_type``.

    Raises:
        UnknownNameError: If no such preset exists (the closest name is suggested).
    """
    presets = list_presets(group)
    if name not in presets:
        raise unknown_name_error(f"{group} preset", name, presets)
    return load_yaml_config(config_dir() / group / f"{name}.yaml", config_type)
