"""Benchmark scripts over the vitc library; each runs as ``python -m benchmarks.NAME``."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_results(out: Path, name: str, result: dict[str, Any], markdown: str) -> dict[str, Any]:
    """A benchmark's two outputs: ``OUT/NAME.json`` (the measurements) and ``OUT/NAME.md`` (their tables)."""
    from vitc.core.fileio import write_json, write_text

    write_json(out / f"{name}.json", result)
    write_text(out / f"{name}.md", markdown)
    return result
