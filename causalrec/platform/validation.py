"""Validation helpers shared by every boundary of causalrec.

Messages follow one pattern: the argument's name, what was expected, what was received.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import numpy as np

from causalrec.platform.errors import DataError, UnknownNameError

__all__ = ["check_array", "closest_match", "unknown_name_error"]


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


def check_array(
    name: str,
    array: np.ndarray,
    *,
    ndim: int | None = None,
    length: int | None = None,
    dtype_kind: str | None = None,
) -> np.ndarray:
    """Check an array argument's dimensionality, length and dtype kind.

    Args:
        name: Argument name used in the error message.
        array: The array to check.
        ndim: Required number of dimensions, if any.
        length: Required length of the first axis, if any.
        dtype_kind: Allowed numpy dtype kinds, e.g. ``"iu"`` for integers or ``"f"`` for floats.

    Returns:
        The array as received (converted with ``np.asarray``).

    Raises:
        DataError: If a requirement does not hold; the message names ``name``.
    """
    array = np.asarray(array)
    if ndim is not None and array.ndim != ndim:
        raise DataError(f"{name} must have {ndim} dimension(s); got shape {array.shape}")
    if length is not None and array.shape[0] != length:
        raise DataError(f"{name} must have length {length}; got {array.shape[0]}")
    if dtype_kind is not None and array.dtype.kind not in dtype_kind:
        raise DataError(f"{name} must have dtype kind in {dtype_kind!r}; got {array.dtype}")
    return array
