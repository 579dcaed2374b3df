"""What a run folder remembers (a `vitc run` or a `vitc tune`): the stage records (``stages.json``), their keys, and the lock.

Each finished stage is recorded in ``DIR/stages.json`` with a key made of its options and the size
and modification time of its input files. With ``--resume`` a stage whose key is unchanged and whose
outputs exist is skipped. ``DIR/.vitc-run.lock`` keeps two runs out of one folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitc.core.errors import UsageError
from vitc.core.fileio import check_output_dir, write_json
from vitc.core.host import process_running

STATE_NAME = "stages.json"
LOCK_NAME = ".vitc-run.lock"
CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class Stage:
    name: str
    options: dict[str, Any]
    inputs: list[Path]
    outputs: list[Path]
    fn: Callable[[], dict[str, Any]]
    checkpoints: Path | None = None  # a training stage: the folder its per-epoch checkpoints go to


def stage_key(options: dict[str, Any], inputs: list[Path]) -> str:
    h = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode())
    for p in inputs:
        st = p.stat()
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


class StageRecords:
    """``DIR/stages.json``: per finished stage, its key, result and wall time."""

    def __init__(self, out: Path, resume: bool) -> None:
        self.path, self.resume = out / STATE_NAME, resume
        self.state: dict[str, Any] = {}
        if resume and self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text())
                self.state = loaded if isinstance(loaded, dict) else {}
            except (json.JSONDecodeError, UnicodeDecodeError):
                self.state = {}

    def unchanged(self, stage: Stage) -> bool:
        """Finished with the same key and every input and output still there (``--resume`` only)."""
        done = self.state.get(stage.name)
        if not (self.resume and isinstance(done, dict) and "result" in done
                and all(p.exists() for p in stage.inputs + stage.outputs)):
            return False
        return bool(done.get("key") == stage_key(stage.options, stage.inputs))

    def changed(self, stage: Stage) -> bool:
        """Recorded (finished or started) with another key: other settings or inputs than this run's."""
        done = self.state.get(stage.name)
        return isinstance(done, dict) and done.get("key") != stage_key(stage.options, stage.inputs)

    def start(self, stage: Stage) -> None:
        """Record that ``stage`` is under way with its key (an interrupted stage is continued only with it)."""
        self.state[stage.name] = {"key": stage_key(stage.options, stage.inputs), "running": True}
        write_json(self.path, self.state)

    def result(self, stage: Stage) -> dict[str, Any]:
        return dict(self.state[stage.name]["result"])

    def record(self, stage: Stage, result: dict[str, Any], seconds: float) -> None:
        self.state[stage.name] = {"key": stage_key(stage.options, stage.inputs), "result": result,
                                  "seconds": round(seconds, 2)}
        write_json(self.path, self.state)


class Lock:
    """``DIR/.vitc-run.lock`` holding the owner's pid; a lock whose process is gone is taken over."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME

    def __enter__(self) -> Lock:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and process_running(owner):
                    raise UsageError(f"{self.path.parent} is in use by another vitc run (pid {owner}); wait for it or "
                                     f"use another --out") from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone (killed, or another machine's)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            return self
        raise UsageError(f"could not lock {self.path.parent}")

    def _owner(self) -> int | None:
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None

    def __exit__(self, *exc: object) -> None:
        if self._owner() == os.getpid():
            self.path.unlink(missing_ok=True)


def drop_checkpoints(folder: Path) -> int:
    """Delete the training checkpoints under ``folder`` (a stage whose settings changed starts over)."""
    found = list(folder.rglob(CHECKPOINT_NAME)) if folder.is_dir() else []
    for ckpt in found:
        ckpt.unlink()
    return len(found)


def has_checkpoint(folder: Path, resume: bool) -> bool:
    """An interrupted training stage left a checkpoint to continue from (``--resume`` only)."""
    return resume and folder.is_dir() and any(folder.rglob(CHECKPOINT_NAME))


def prepare_out(out: Path, resume: bool, force: bool) -> None:
    """Refuse a folder that holds an earlier run unless ``resume`` (continue) or ``force`` (start over)."""
    check_output_dir(out)
    if resume and force:
        raise UsageError("--resume continues the run in DIR and --force starts it over; give one of them")
    entries = [p for p in out.iterdir() if p.name != LOCK_NAME] if out.is_dir() else []
    if not entries or resume:
        return
    if not force:
        raise UsageError(f"{out} already holds files (an earlier run?): add --resume to continue it, --force to start "
                         "over there, or choose another --out")
    (out / STATE_NAME).unlink(missing_ok=True)
    drop_checkpoints(out)
