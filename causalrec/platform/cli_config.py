"""Generate command-line options from a typed config, so the CLI never drifts from the config."""

from __future__ import annotations

import argparse
import typing
from typing import Any

from causalrec.platform.config import StrictConfig

__all__ = ["add_config_overrides", "collect_overrides"]


def _option_name(field: str, rename: dict[str, str]) -> str:
    return "--" + rename.get(field, field).replace("_", "-")


def add_config_overrides(
    parser: argparse.ArgumentParser,
    config_type: type[StrictConfig],
    *,
    title: str,
    rename: dict[str, str] | None = None,
) -> None:
    """Add one ``--field-name VALUE`` option per field of ``config_type``.

    Args:
        parser: Parser to extend.
        config_type: The typed config whose fields become options (help = the field's doc).
        title: Title of the argument group.
        rename: Option names to use instead of the field name (e.g. ``{"seed": "world_seed"}``).
    """
    rename = rename or {}
    group = parser.add_argument_group(title)
    for name, field in config_type.model_fields.items():
        annotation = field.annotation
        kind = annotation if annotation in (int, float, str) else str
        if typing.get_origin(annotation) is typing.Union:
            kind = str
        group.add_argument(
            _option_name(name, rename),
            dest=f"override_{name}",
            type=kind,
            default=None,
            metavar=kind.__name__.upper(),
            help=f"{field.description} (default from the preset; built-in {field.default!r})",
        )


def collect_overrides(args: argparse.Namespace, config_type: type[StrictConfig]) -> dict[str, Any]:
    """The config fields given on the command line, as ``{field: value}``."""
    return {
        name: getattr(args, f"override_{name}")
        for name in config_type.model_fields
        if getattr(args, f"override_{name}", None) is not None
    }
