"""The one exception hierarchy of causalrec.

Every error causalrec raises on purpose derives from :class:`CausalRecError`, so callers can catch
the whole family at once. Subclasses that describe bad input also derive from ``ValueError`` so
code written against the standard library still catches them.
"""

from __future__ import annotations

__all__ = [
    "CausalRecError",
    "ConfigError",
    "DataError",
    "ForbiddenPathError",
    "InvalidActionError",
    "LogFormatError",
    "OutputExistsError",
    "PipelineStageError",
    "SearchInterruptedError",
    "UnknownNameError",
    "UnsafeModelError",
]


class CausalRecError(Exception):
    """Base class of every error raised by causalrec."""


class ConfigError(CausalRecError, ValueError):
    """A configuration value is missing, unknown or out of range (names the field and value)."""


class UnknownNameError(ConfigError, KeyError):
    """A name (preset, policy, config key, method) is unknown; the message suggests the closest."""

    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class DataError(CausalRecError, ValueError):
    """Arrays or tables do not have the shape, dtype or values a function needs."""


class InvalidActionError(CausalRecError, ValueError):
    """An environment received an action outside its action space (e.g. a slate with duplicates)."""


class OutputExistsError(CausalRecError, FileExistsError):
    """An output location already holds data and overwriting was not requested."""


class LogFormatError(CausalRecError, OSError):
    """A log file is missing, truncated, corrupt or has an unexpected schema (names the file)."""


class ForbiddenPathError(CausalRecError, PermissionError):
    """A path the caller may not read (outside a server's data root; answered with 403)."""


class UnsafeModelError(CausalRecError, ValueError):
    """A saved model holds code or types causalrec does not load (names them); nothing ran."""


class SearchInterruptedError(CausalRecError):
    """A search's driver was stopped mid-sweep; its saved experiment state can be resumed."""


class PipelineStageError(CausalRecError):
    """A pipeline stage failed; the outputs of the stages before it are kept."""
