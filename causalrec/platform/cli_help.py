"""The help formatter of every ``causalrec`` command: each option's default shown once."""

from __future__ import annotations

import argparse
import re

__all__ = ["DefaultsHelpFormatter"]

#: A help string that already states its default, e.g. "(default: the world seed)".
_MENTIONS_DEFAULT = re.compile(r"\(default\b")


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Append ``(default: X)`` to an option's help only where it tells the reader something.

    Unlike :class:`argparse.ArgumentDefaultsHelpFormatter` it leaves the help alone when the
    option is required, when the default is ``None``, ``False``, empty or suppressed (a flag or
    an option whose absence means "not given"), and when the help already says what the default
    is (``"(default: ..."`` or ``"(default from ..."``), so no option shows its default twice.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            action.required
            or _MENTIONS_DEFAULT.search(text)
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or (isinstance(default, list | tuple | dict | set) and not default)
        ):
            return action.help
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)"
        return action.help
