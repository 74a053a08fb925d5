"""Formula-safe CSV: every CSV the platform writes goes through `writer`, and our own CSVs are read
back through `unescape_cell`.

A spreadsheet runs a cell that starts with `=`, `+`, `-` or `@` (and, in some, a tab or carriage
return before one) as a formula, so a class or file name such as `=HYPERLINK("http://x","y")` would
run when an export is opened (OWASP "CSV injection"). Such a text cell is written with a leading
`'`, which spreadsheets show as plain text. A text cell that already starts with `'` gets one more,
so reading back strips exactly one `'` and every name returns unchanged.

Only text is escaped. Numbers we generate (0/1 class columns, scores, confidences) are passed as int
or float, or as text that starts with a digit, and stay numeric; none of them is negative. A user's
text that looks like a number (a class named `-2`) is text and is escaped.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any, TextIO

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
QUOTE = "'"


def escape_cell(value: Any) -> Any:
    """The cell as written: text that a spreadsheet would run (or that starts with `'`) gets a `'`."""
    if isinstance(value, str) and value.startswith((*FORMULA_STARTS, QUOTE)):
        return QUOTE + value
    return value


def unescape_cell(text: str) -> str:
    """Undo `escape_cell`: drop one leading `'` when what follows starts with a formula character or
    `'` (a `'` before anything else was the author's own and stays)."""
    if text.startswith(QUOTE) and text[1:2] and text[1] in (*FORMULA_STARTS, QUOTE):
        return text[1:]
    return text


class SafeWriter:
    """`csv.writer` with every row passed through `escape_cell`."""

    def __init__(self, stream: TextIO, **csv_options):
        self._writer = csv.writer(stream, **csv_options)

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([escape_cell(cell) for cell in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def writer(stream: TextIO, **csv_options) -> SafeWriter:
    return SafeWriter(stream, **csv_options)
