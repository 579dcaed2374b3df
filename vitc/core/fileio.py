"""Atomic file writes: every artifact is written to a temporary file in the same folder, then renamed.

An interrupted command therefore never leaves a file that a later step would accept. Output locations
are checked before long work (:func:`check_output_file`, :func:`check_output_dir`: a folder where a file
is expected, a parent that is a file, a folder that cannot be written), and a write that fails (a full
disk, a read-only file system) is one line naming the path, with the temporary file removed.

No command writes over one of its own inputs, however the path is spelled (relative, ``./``, a symlink,
a hard link): :func:`refuse_overwriting_inputs` checks the outputs against the inputs before any work,
and inside :func:`protect_inputs` every atomic write checks its target again (the files a command
writes into an output folder are known only to the step that writes them).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from vitc.core.errors import OutputError, UsageError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, else delete it.

    An operating-system error while writing (no space, read-only, permission) becomes a one-line
    :class:`~vitc.core.errors.VitcError` naming ``path``.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a folder; expected a file path to write")
    for source in _PROTECTED.get():
        if same_file(path, source):
            raise UsageError(f"{_over(path, source)}; choose another output path")
    make_dirs(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _write_error(path, e) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file open()'s usual mode
        os.replace(tmp_path, path)
    except OSError as e:
        raise _write_error(path, e) from None
    except RuntimeError as e:  # torch.save and other C++ writers wrap the OS error
        if _disk_full(path.parent) or "write" in str(e).lower():
            raise _write_error(path, e) from None
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


_PROTECTED: ContextVar[tuple[Path, ...]] = ContextVar("vitc_protected_inputs", default=())


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two spellings name one existing file (relative or absolute, ``./``, a symlink, a hard link)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # one does not exist (nothing to overwrite), or a name the OS refuses
        return False


def _over(out: Path, source: Path, label: str | None = None) -> str:
    same = "" if os.path.abspath(out) == os.path.abspath(source) else " (the same file)"
    return f"{label + ' ' if label else ''}{out} would write over the input {source}{same}"


def refuse_overwriting_inputs(outputs: Iterable[tuple[str | None, str | os.PathLike[str]]],
                              inputs: Iterable[str | os.PathLike[str]]) -> None:
    """Before any work: refuse (one line, exit 2) an output that is one of the inputs, under any spelling.

    ``outputs`` are ``(label, path)`` pairs; ``label`` (e.g. ``--out``) names the option in the message.
    """
    sources = [Path(p) for p in inputs]
    for label, out in outputs:
        for source in sources:
            if same_file(out, source):
                raise UsageError(f"{_over(Path(out), source, label)}; choose another path")


@contextlib.contextmanager
def protect_inputs(inputs: Iterable[str | os.PathLike[str]]) -> Iterator[None]:
    """Within the block, an :func:`atomic_path` write onto one of ``inputs`` is refused (one line, exit 2)."""
    token = _PROTECTED.set(_PROTECTED.get() + tuple(Path(p) for p in inputs if Path(p).is_file()))
    try:
        yield
    finally:
        _PROTECTED.reset(token)


def make_dirs(folder: str | os.PathLike[str]) -> Path:
    """``mkdir -p`` with one-line errors (a parent that is a file, a folder that cannot be created)."""
    folder = Path(folder)
    blocker = first_existing(folder)
    if not blocker.is_dir():
        raise UsageError(f"cannot create {folder}: {blocker} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _write_error(folder, e) from None
    return folder


def first_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_file(path: str | os.PathLike[str]) -> Path:
    """Before long work: ``path`` can be written (not a folder; its folder exists or can be made and is writable)."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a folder; expected a file path to write")
    _check_writable(path.parent)
    return path


def check_output_dir(path: str | os.PathLike[str]) -> Path:
    """Before long work: ``path`` is a folder (or can be made) that can be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} is an existing file; expected a folder")
    _check_writable(path)
    return path


def _check_writable(folder: Path) -> None:
    base = first_existing(folder)
    if not base.is_dir():
        raise UsageError(f"cannot create {folder}: {base} is a file, not a folder")
    try:  # a real probe: os.access says yes to root even on a read-only file system
        fd, probe = tempfile.mkstemp(prefix=".vitc-probe-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise _write_error(folder, e) from None


def _disk_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(first_existing(folder)).free < (1 << 20)
    except OSError:
        return False


def _write_error(path: Path, e: BaseException) -> OutputError:
    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or _disk_full(path.parent):
        reason = "no space left on the device"
    elif isinstance(e, OSError) and e.errno == errno.EROFS:
        reason = "read-only file system"
    elif isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM):
        reason = "permission denied"
    return OutputError(f"cannot write {path}: {reason}")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Strict JSON (NaN/Inf become null, which every JSON reader accepts), written atomically."""
    return write_text(path, json.dumps(json_safe(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, ±Inf) replaced by None, in nested dicts/lists/tuples."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # NumPy scalars/arrays, tensors
        return json_safe(obj.tolist())
    return obj


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB chunks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
