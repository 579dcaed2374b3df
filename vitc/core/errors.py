"""Errors that reach the user as one line and an exit code, never as a traceback.

Exit codes follow Polygraphy/Click: 2 for usage errors (bad option, missing file, bad YAML),
1 for a check that ran and failed (verification, readiness, a NaN loss).
"""

from __future__ import annotations

EXIT_FAILED = 1
EXIT_USAGE = 2


class VitcError(Exception):
    """A failure the user can act on; the CLI prints ``error: <message>`` and exits ``exit_code``.

    Raised inside a DataLoader worker, torch re-raises it in the main process as ``type(e)(text)`` with
    "Caught X in DataLoader worker process N." and the worker's whole traceback in ``text``; built from
    such a text, the error keeps only its original message (the traceback's last line), so the CLI
    still prints one line.
    """

    exit_code = EXIT_FAILED

    def __init__(self, message: object = "", *args: object) -> None:
        if isinstance(message, str) and "\nOriginal Traceback" in message:
            message = _original_message(message, type(self))
        super().__init__(message, *args)


def _original_message(text: str, cls: type) -> str:
    """The message of the ``cls`` exception at the end of a formatted traceback ``text``."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    for name in (f"{cls.__module__}.{cls.__qualname__}", cls.__qualname__):
        for line in reversed(lines):
            if line.startswith(name + ": "):
                return line[len(name) + 2 :]
    return lines[-1] if lines else text


class UsageError(VitcError):
    """Bad input: an option out of range, a missing or foreign file, an unknown name."""

    exit_code = EXIT_USAGE


class CheckFailed(VitcError):
    """A check ran and failed (parity, TensorRT readiness, numerical fault)."""

    exit_code = EXIT_FAILED


class OutputError(VitcError, OSError):
    """A file could not be written (no space, read-only, permission); the message names the path."""

    exit_code = EXIT_FAILED

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "cannot write"
