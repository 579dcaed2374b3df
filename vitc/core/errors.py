"""Errors that reach the user as one line and an exit code, never as a traceback.

Exit codes follow Polygraphy/Click: 2 for usage errors (bad option, missing file, bad YAML),
1 for a check that ran and failed (verification, readiness, a NaN loss).
"""

from __future__ import annotations

EXIT_FAILED = 1
EXIT_USAGE = 2


class VitcError(Exception):
    """A failure the user can act on; the CLI prints ``error: <message>`` and exits ``exit_code``."""

    exit_code = EXIT_FAILED


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
