"""Validation helpers shared by every boundary of causalrec.

Messages follow one pattern: the argument's name, what was expected, what was received.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from causalrec.platform.errors import UnknownNameError

__all__ = ["closest_match", "unknown_name_error"]


def closest_match(name: str, options: Iterable[str]) -> str | None:
    """Return the option closest to ``name`` (or ``None`` if nothing is reasonably close)."""
    matches = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_name_error(kind: str, name: str, options: Iterable[str]) -> UnknownNameError:
    """Build the error for an unknown ``name`` of a given ``kind``, suggesting the closest option.

    Args:
        kind: What the name refers to, e.g. ``"preset"`` or ``"config key"``.
        name: The name that was received.
        options: The names that are known.

    Returns:
        An :class:`UnknownNameError` whose message lists the known names and the closest match.
    """
    options = sorted(options)
    hint = closest_match(name, options)
    did_you_mean = f"; did you mean {hint!r}?" if hint else ""
    return UnknownNameError(f"unknown {kind} {name!r}{did_you_mean} (known: {', '.join(options)})")
