"""A report as a list of blocks, rendered once to Markdown and once to self-contained HTML.

Every block holds plain text: the renderers do all escaping (CommonMark backslash escapes for
Markdown, :func:`html.escape` for HTML), so a value such as a candidate named ``<script>`` reads
literally in both outputs and can never inject markup.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "Block",
    "Heading",
    "Image",
    "Notice",
    "Paragraph",
    "Table",
    "format_interval",
    "format_number",
    "format_p_value",
    "to_html",
    "to_markdown",
]


@dataclass(frozen=True)
class Heading:
    """A section heading; ``level`` 1 is the title."""

    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    """A paragraph of plain text."""

    text: str


@dataclass(frozen=True)
class Notice:
    """A highlighted note, e.g. that a section is not available."""

    text: str


@dataclass(frozen=True)
class Table:
    """A table of preformatted cells.

    Attributes:
        columns: Header cells, shape ``(n_columns,)``.
        rows: Body cells, shape ``(n_rows, n_columns)``.
    """

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(
                    f"table row {i} has {len(row)} cells; expected {len(self.columns)}"
                )


@dataclass(frozen=True)
class Image:
    """A figure: ``src`` is a path relative to the report, ``alt`` doubles as the caption."""

    src: str
    alt: str


Block = Heading | Paragraph | Notice | Table | Image

# Characters that could start markup; "]" only where it would close a link ("](", "][").
_MARKDOWN_SPECIAL = re.compile(r"([\\`*<>|&]|\](?=[(\[]))")
_NUMBER = re.compile(r"^[-+<]?\d")
_NUMERIC_CELL = re.compile(r"^([-+<]?\d|n/a$|$)")
_CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       line-height: 1.45; color: #222; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.92rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafafa; }
.notice { border-left: 4px solid #d9822b; background: #fff6ec; padding: 0.4rem 0.8rem; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; }
figcaption { font-size: 0.85rem; color: #555; }
"""


def format_number(value: float | None) -> str:
    """Format a statistic: ``0.4183``; ``1.235e-05`` when tiny or huge; ``n/a`` when missing.

    >>> format_number(0.418349), format_number(-2.5), format_number(1.23456e-5)
    ('0.4183', '-2.5000', '1.235e-05')
    """
    if value is None or not math.isfinite(value):
        return "n/a"
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4f}"
    return f"{value:.3e}"


def format_p_value(value: float | None) -> str:
    """Format a p-value: ``0.0123``, or ``<1e-4`` below 1e-4.

    >>> format_p_value(0.012345), format_p_value(3e-7)
    ('0.0123', '<1e-4')
    """
    if value is None or not math.isfinite(value):
        return "n/a"
    return "<1e-4" if value < 1e-4 else f"{value:.4f}"


def format_interval(value: float | None, low: float | None, high: float | None) -> str:
    """Format ``value [low, high]``; just ``value`` when both bounds are missing.

    >>> format_interval(0.5, 0.25, float("nan"))
    '0.5000 [0.2500, n/a]'
    """
    bounds = [format_number(low), format_number(high)]
    if bounds == ["n/a", "n/a"]:
        return format_number(value)
    return f"{format_number(value)} [{bounds[0]}, {bounds[1]}]"


def _md(text: str) -> str:
    """Escape ``text`` so Markdown shows it literally (newlines become spaces)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def _numeric_columns(table: Table) -> list[bool]:
    """Whether each column holds only numbers (right-aligned)."""
    columns = [[row[j] for row in table.rows] for j in range(len(table.columns))]
    return [
        any(_NUMBER.match(cell) for cell in cells) and all(_NUMERIC_CELL.match(c) for c in cells)
        for cells in columns
    ]


def to_markdown(blocks: Sequence[Block]) -> str:
    """Render ``blocks`` as CommonMark (with GitHub-style tables)."""
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {_md(block.text)}")
        elif isinstance(block, Paragraph):
            parts.append(_md(block.text))
        elif isinstance(block, Notice):
            parts.append(f"> {_md(block.text)}")
        elif isinstance(block, Image):
            parts.append(f"![{_md(block.alt)}]({block.src})")
        else:
            rule = ["---:" if numeric else "---" for numeric in _numeric_columns(block)]
            lines = [block.columns, rule, *block.rows]
            escaped = [
                "| " + " | ".join(cell if line is rule else _md(cell) for cell in line) + " |"
                for line in lines
            ]
            parts.append("\n".join(escaped))
    return "\n\n".join(parts) + "\n"


def _html_table(table: Table) -> str:
    numeric = _numeric_columns(table)
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in table.columns)
    body = "\n".join(
        "<tr>"
        + "".join(
            ('<td class="num">' if num else "<td>") + f"{html.escape(cell)}</td>"
            for cell, num in zip(row, numeric, strict=True)
        )
        + "</tr>"
        for row in table.rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def to_html(blocks: Sequence[Block], *, title: str) -> str:
    """Render ``blocks`` as one HTML page with inline CSS; images stay relative links."""
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Notice):
            parts.append(f'<p class="notice">{html.escape(block.text)}</p>')
        elif isinstance(block, Image):
            src, alt = html.escape(block.src), html.escape(block.alt)
            parts.append(
                f'<figure><img src="{src}" alt="{alt}"><figcaption>{alt}</figcaption></figure>'
            )
        else:
            parts.append(_html_table(block))
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )
