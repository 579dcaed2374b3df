"""IDX files (the MNIST / Fashion-MNIST container), read and written with one-line errors naming the file.

An IDX file is a 4-byte magic number — two zero bytes, a type code (0x08 = unsigned byte) and the number
of dimensions — then each dimension as a big-endian uint32, then the data in row-major order. The
MNIST-style data sets ship them gzipped (``*-ubyte.gz``) or plain (``*-ubyte``); both are read here, told
apart by the gzip signature rather than by the name.

Every fault a downloaded or hand-made file can have (not gzip though named ``.gz``, a gzip stream that
ends early, a wrong magic number, a wrong number of dimensions, fewer data bytes than the header
promises, bytes after the data) is a :class:`~vitc.core.errors.UsageError` of one line that names the file.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from vitc.core.errors import UsageError
from vitc.core.fileio import atomic_path

GZIP_SIGNATURE = b"\x1f\x8b"
UBYTE = 0x08
_DTYPES: dict[int, np.dtype] = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The (decompressed, if gzipped) content of ``path``; an unreadable or broken file is one line."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist") from None
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from None
    if raw[:2] == GZIP_SIGNATURE:
        try:
            return gzip.decompress(raw)
        except EOFError:
            raise UsageError(f"{path} is truncated: its gzip stream ends early (download it again)") from None
        except (gzip.BadGzipFile, zlib.error, OSError) as e:
            raise UsageError(f"{path} is a damaged gzip file ({e})") from None
    if path.suffix == ".gz":
        raise UsageError(f"{path} is not a gzip file (its name ends in .gz but it does not start with the gzip signature)")
    return raw


def parse_idx(data: bytes, name: str | os.PathLike[str], *, ndim: int | None = None) -> np.ndarray:
    """The array held by IDX bytes ``data`` (``name`` is the file, for messages), checked against its header.

    ``ndim``, when given, is the number of dimensions the caller expects (its magic number is then
    ``0x0000080<ndim>`` for unsigned bytes).
    """
    if len(data) < 4:
        raise UsageError(f"{name} is truncated: {len(data)} bytes, shorter than the 4-byte IDX magic number")
    zero, code, dims = struct.unpack(">HBB", data[:4])
    magic = f"0x{data[:4].hex()}"
    wanted = f" (expected 0x{0x800 + ndim:08x}: unsigned bytes, {ndim} dimension{'s' if ndim != 1 else ''})" if ndim else ""
    if zero != 0 or code not in _DTYPES or dims == 0:
        raise UsageError(f"{name} has the wrong magic number {magic}: not an IDX file{wanted}")
    if ndim is not None and code != UBYTE:
        raise UsageError(f"{name} has the wrong magic number {magic}: not unsigned bytes{wanted}")
    if ndim is not None and dims != ndim:
        raise UsageError(f"{name} has the wrong dimensions: {dims} (magic number {magic}){wanted}")
    header = 4 + 4 * dims
    if len(data) < header:
        raise UsageError(f"{name} is truncated: {len(data)} bytes, shorter than its {header}-byte header")
    shape = struct.unpack(f">{dims}I", data[4:header])
    dtype = _DTYPES[code]
    want = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    have = len(data) - header
    if have < want:
        raise UsageError(f"{name} is truncated: {have} data bytes where its header ({'x'.join(map(str, shape))}) "
                         f"promises {want}")
    if have > want:
        raise UsageError(f"{name} has {have - want} bytes after the data its header ({'x'.join(map(str, shape))}) describes")
    array = np.frombuffer(data, dtype=dtype, count=want // dtype.itemsize, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike[str], *, ndim: int | None = None) -> np.ndarray:
    """The array in IDX file ``path`` (gzipped or not); ``ndim`` as in :func:`parse_idx`."""
    return parse_idx(read_bytes(path), path, ndim=ndim)


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` (unsigned bytes, 1 to 255 dimensions) as an IDX file's bytes."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"only uint8 arrays are written, got {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"an IDX array has 1 to 255 dimensions, got {array.ndim}")
    header = struct.pack(">HBB", 0, UBYTE, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` (uint8) as an IDX file, gzipped when ``path`` ends in ``.gz``; atomically."""
    path = Path(path)
    data = idx_bytes(array)
    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=6, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


__all__ = ["idx_bytes", "parse_idx", "read_bytes", "read_idx", "write_idx"]
