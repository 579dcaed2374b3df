"""Progress bars for long loops (training, calibration, eval, bench), on stderr so stdout stays JSON.

Shown only on rank 0 and only when stderr is a terminal, unless ``VITC_PROGRESS=1`` forces it;
``VITC_PROGRESS=0`` hides it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


def _enabled() -> bool:
    forced = os.environ.get("VITC_PROGRESS")
    if forced is not None:
        return forced == "1"
    return sys.stderr.isatty() and int(os.environ.get("RANK", "0")) == 0


class _Bar:
    def __init__(self, progress, task) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: int = 1, **fields: object) -> None:
        if self._progress is not None:
            desc = fields.pop("description", None)
            kwargs = {"description": desc} if desc is not None else {}
            self._progress.update(self._task, advance=n, **kwargs)


@contextmanager
def progress(description: str, total: int | None) -> Iterator[_Bar]:
    """``with progress("train epoch 1", total=steps) as bar: bar.advance()``."""
    if not _enabled():
        yield _Bar(None, None)
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
