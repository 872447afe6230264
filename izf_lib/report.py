"""Printing for the book's column: sentences and tables wrapped to the width a reader sees.

The chapters print their findings and tables through these two functions, so that nothing a
reader sees is cut behind a horizontal scrollbar (at a 1280 px window the column holds 79
characters of the book's code font; `tests/test_book_render.py` checks the built pages).
"""

from __future__ import annotations

import textwrap
from typing import Any

WIDTH = 79  # characters of one printed line in the book's column


def say(*parts: Any, sep: str = " ") -> None:
    """Print ``parts`` as one paragraph wrapped to WIDTH (continuation lines indented by 2).

    Lines already shorter than WIDTH print unchanged; a blank ``say()`` prints an empty line.
    """
    text = sep.join(str(p) for p in parts)
    lines = []
    for line in text.split("\n"):
        if len(line) <= WIDTH:
            lines.append(line)
        else:
            lines.extend(textwrap.wrap(line, WIDTH, subsequent_indent="  ", break_long_words=False,
                                       break_on_hyphens=False))
    print("\n".join(lines))


def show(table: Any, **to_string: Any) -> None:
    """Print a pandas DataFrame or Series in blocks of columns that fit WIDTH (``to_string`` options pass on)."""
    if hasattr(table, "columns"):  # a DataFrame: wrap its columns into blocks
        to_string.setdefault("line_width", WIDTH)
    print(table.to_string(**to_string))
