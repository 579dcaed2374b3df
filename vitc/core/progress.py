"""Progress for long loops (training, calibration, eval, bench), on stderr so stdout stays JSON.

On rank 0 only. A terminal gets a live bar; anything else (a log file, a CI job, a pipe) gets a plain
line at most every ``LINE_INTERVAL_S`` seconds (``train epoch 1/30: 412/1875 (22%), 61 s``), so a long
epoch is never silent in a log. ``VITC_PROGRESS=1`` forces the bar, ``VITC_PROGRESS=0`` shows nothing.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

LINE_INTERVAL_S = 30.0


def _mode() -> str:
    """``bar``, ``lines`` or ``off``."""
    forced = os.environ.get("VITC_PROGRESS")
    if forced is not None:
        return "bar" if forced == "1" else "off"
    if int(os.environ.get("RANK", "0")) != 0:
        return "off"
    return "bar" if sys.stderr.isatty() else "lines"


class _Bar:
    def __init__(self, progress, task) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: int = 1, **fields: object) -> None:
        if self._progress is not None:
            desc = fields.pop("description", None)
            kwargs = {"description": desc} if desc is not None else {}
            self._progress.update(self._task, advance=n, **kwargs)


class _Lines(_Bar):
    """A throttled plain line instead of a bar, for logs."""

    def __init__(self, description: str, total: int | None, interval: float) -> None:
        super().__init__(None, None)
        self._description, self._total, self._interval = description, total, interval
        self._done = 0
        self._start = self._last = time.monotonic()

    def advance(self, n: int = 1, **fields: object) -> None:
        self._done += n
        desc = fields.get("description")
        if isinstance(desc, str):
            self._description = desc
        now = time.monotonic()
        if now - self._last < self._interval:
            return
        self._last = now
        count = f"{self._done}/{self._total} ({100 * self._done / self._total:.0f}%)" if self._total else f"{self._done}"
        print(f"{self._description}: {count}, {now - self._start:.0f} s", file=sys.stderr, flush=True)


@contextmanager
def progress(description: str, total: int | None, show: bool = True) -> Iterator[_Bar]:
    """``with progress("train epoch 1", total=steps) as bar: bar.advance()``; ``show=False``: a bar that shows
    nothing (for an inner loop whose caller shows the progress)."""
    mode = _mode() if show else "off"
    if mode != "bar":
        yield _Lines(description, total, LINE_INTERVAL_S) if mode == "lines" else _Bar(None, None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), transient=True,
    ) as p:
        yield _Bar(p, p.add_task(description, total=total))


def log(message: str) -> None:
    """A status line on stderr (rank 0 only)."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(message, file=sys.stderr, flush=True)
