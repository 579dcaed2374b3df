"""Markdown tables for the reports: one writer, one way to print a cell."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


def cell(v: Any, digits: int = 3) -> str:
    """A value as a table cell: ``-`` for None, yes/no for booleans, ``digits`` significant digits for floats."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table with ``columns`` as its header; each row's values go through :func:`cell`."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


__all__ = ["cell", "markdown_table"]
