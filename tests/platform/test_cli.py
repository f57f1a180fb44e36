"""The top-level `causalrec` parser: --version and the help of every subcommand."""

from __future__ import annotations

import argparse
import importlib.metadata

import pytest

from causalrec.platform.cli import build_parser, main
from causalrec.platform.cli_help import DefaultsHelpFormatter


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


SUBCOMMANDS = subcommands()


def test_version_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"causalrec {importlib.metadata.version('causalrec')}\n"


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_help_shows_each_default_once(name, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    parser = SUBCOMMANDS[name]
    assert parser.formatter_class is DefaultsHelpFormatter
    text = parser.format_help()
    assert "(default: None)" not in text
    assert "(default: False)" not in text
    for line in text.splitlines():
        assert line.count("(default") <= 1, line
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.help in (None, argparse.SUPPRESS):
            continue
        expanded = formatter._expand_help(action)  # the option's whole help, before wrapping
        assert expanded.count("(default") <= 1, (action.option_strings, expanded)
        shown = (
            not action.required
            and not any(action.default is empty for empty in (None, False, argparse.SUPPRESS))
            and action.default != []
            and bool(action.option_strings)
        )
        if shown:  # a real default is stated, and it is the one argparse applies
            assert "(default" in expanded, (action.option_strings, expanded)
            if "(default:" in expanded and "%(default)s" not in (action.help or ""):
                continue  # the help states it in words, e.g. "(default: the world seed)"
            assert f"(default: {action.default})" in expanded, (action.option_strings, expanded)


def toy_help(**kwargs) -> str:
    parser = argparse.ArgumentParser(prog="toy", formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--x", **kwargs)
    return " ".join(parser.format_help().split())


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"default": 3, "help": "three"}, "three (default: 3)"),
        ({"default": "a", "help": "one of a, default, b"}, "one of a, default, b (default: a)"),
        ({"default": None, "help": "maybe"}, "maybe"),
        ({"action": "store_true", "help": "flag"}, "flag"),
        ({"action": "append", "default": [], "help": "many"}, "many"),
        ({"required": True, "help": "needed"}, "needed"),
        (
            {"default": None, "help": "seed (default: the world seed)"},
            "seed (default: the world seed)",
        ),
        (
            {"default": 7, "help": "n (default from the preset; built-in 7)"},
            "n (default from the preset; built-in 7)",
        ),
    ],
)
def test_formatter_appends_only_informative_defaults(kwargs, expected):
    text = toy_help(**kwargs)
    assert text.endswith(expected)
    assert text.count("(default") <= 1
