"""A tune's steps, recorded as they finish, so a killed tune resumes where it stopped.

``Journal.step(name, options, fn)`` runs ``fn`` unless the journal (``DIR/tune.json``) holds a finished step of
that name with the same options, in which case its recorded result is returned; a step whose options changed
runs again, and so does one whose output file (its ``artifact``, ``file`` or ``profile``) is gone. Results are
JSON. Training steps also resume mid-way from their own checkpoints (their ``--resume``).
Every step says what it does and, from the steps timed so far, about how long the rest takes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vitc.core.fileio import write_json
from vitc.core.progress import log

JOURNAL_NAME = "tune.json"
OUTPUTS = ("artifact", "file", "profile")  # result keys that name a step's output file


def _key(options: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Journal:
    def __init__(self, folder: Path, resume: bool, planned: int = 0) -> None:
        self.path = folder / JOURNAL_NAME
        self.state: dict[str, Any] = {}
        if resume and self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text())
                self.state = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                self.state = {}
        self.planned = planned
        self.done = 0
        self.seconds: list[float] = []
        self.resumed: list[str] = []

    def recorded(self, name: str, options: dict[str, Any]) -> dict[str, Any] | None:
        entry = self.state.get(name)
        if not (isinstance(entry, dict) and entry.get("key") == _key(options) and isinstance(entry.get("result"), dict)):
            return None
        result = dict(entry["result"])
        if any(isinstance(result.get(k), str) and not Path(result[k]).exists() for k in OUTPUTS):
            return None  # its file is gone: made again
        return result

    @property
    def resumed_seconds(self) -> float:
        """The time the steps taken from the journal took when they ran (in earlier runs of this tune)."""
        return sum(float(self.state[n].get("seconds") or 0.0) for n in self.resumed if isinstance(self.state.get(n), dict))

    def step(self, name: str, options: dict[str, Any], fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The result of step ``name`` (recorded, or run now and recorded)."""
        self.done += 1
        where = f"tune step {self.done}" + (f"/{self.planned}" if self.planned >= self.done else "")
        old = self.recorded(name, options)
        if old is not None:
            log(f"[skip] {where} {name} (done before)")
            self.resumed.append(name)
            return old
        left = ""
        if self.seconds and self.planned > self.done:
            each = sum(self.seconds) / len(self.seconds)
            left = f"; about {max(1, round(each * (self.planned - self.done + 1) / 60))} min left"
        log(f"[run] {where} {name}{left}")
        self.state[name] = {"key": _key(options), "running": True}
        write_json(self.path, self.state)
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
        self.seconds.append(seconds)
        self.state[name] = {"key": _key(options), "result": result, "seconds": round(seconds, 2)}
        write_json(self.path, self.state)
        return result


__all__ = ["JOURNAL_NAME", "Journal"]
