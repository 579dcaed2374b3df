"""Running ``pytest -m gpu`` where the device image may lack pytest's plugins, and reading its ``-v -rfEs`` output
(benchmarks/gpu_check.py's tests step)."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Any

_OUTCOME = re.compile(r"^(tests/\S+::\S+)\s+(PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b(.*)$")
_SHORT = re.compile(r"^(FAILED|ERROR) (tests/\S+::\S+)(?: - (.*))?$")
_SKIP_REASON = re.compile(r"^SKIPPED \[(\d+)\] (\S+): (.*)$")
_SUMMARY = re.compile(r"^=+ (.*\d+ \w+.*) in ([\d.]+)s")


def pytest_command(per_test_timeout: float) -> list[str]:
    """``pytest -m gpu tests/test_gpu.py`` that runs where pytest-timeout or hypothesis are missing: addopts cleared
    (it only deselects), no cache; ``-o timeout=N`` is read by pytest-timeout, an ignored unknown option without it."""
    return [sys.executable, "-m", "pytest", "tests/test_gpu.py", "-m", "gpu", "-p", "no:cacheprovider", "-o", "addopts=",
            "-o", f"timeout={int(per_test_timeout)}", "-v", "-rfEs", "--durations=10", "--color=no"]


def parse_pytest(lines: Sequence[str]) -> dict[str, Any]:
    """Per-test outcomes, failure and skip reasons, and the summary line of ``pytest -v -rfEs`` output."""
    tests: dict[str, dict[str, Any]] = {}
    skips: list[str] = []
    summary, seconds = None, None
    for line in (raw.rstrip() for raw in lines):
        if m := _OUTCOME.match(line):
            detail = re.sub(r"\s*\[\s*\d+%\]\s*$", "", m.group(3)).strip().strip("() ")
            tests[m.group(1)] = {"outcome": m.group(2).lower(), **({"detail": detail} if detail else {})}
        elif m := _SHORT.match(line):
            tests.setdefault(m.group(2), {"outcome": m.group(1).lower()})["message"] = (m.group(3) or "")[:400]
        elif m := _SKIP_REASON.match(line):
            skips.append(f"{m.group(1)} × {m.group(2)}: {m.group(3)}")
        elif m := _SUMMARY.match(line):
            summary, seconds = m.group(1), float(m.group(2))
    counts = {(w.rstrip("s") if w.startswith("error") else w): int(n) for n, w in
              re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)", summary or "")}
    return {"summary": summary, "seconds": seconds, "counts": counts, "tests": tests, "skip_reasons": skips}


__all__ = ["parse_pytest", "pytest_command"]
