"""What a file is, from its first bytes: so a file of another kind than a command expects is called by its
name ("is an ONNX model, not a vitc artifact") instead of "corrupt"."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

PLAIN = "model"  # the artifact kind of a plain (possibly materialized) timm ViT; compressed kinds belong to vitc.methods

SAFETENSORS, ONNX, TORCH_ZIP, PICKLE, ENGINE_SIDECAR, UNKNOWN = (
    "safetensors", "onnx", "torch-zip", "pickle", "json", "unknown")

DESCRIPTIONS = {
    SAFETENSORS: "a safetensors file (vitc artifact or weights)",
    ONNX: "an ONNX model",
    TORCH_ZIP: "a PyTorch checkpoint (.pt/.pth)",
    PICKLE: "a pickled file (an old-style PyTorch checkpoint?)",
    ENGINE_SIDECAR: "a JSON file",
    UNKNOWN: "an unrecognised file",
}


def sniff(path: str | os.PathLike[str]) -> str:
    """The kind of file ``path`` holds, judged by its first bytes (never parses all of it)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError:
        return UNKNOWN
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n < (1 << 30) and head[8:9] == b"{":
            return SAFETENSORS
    if head.startswith(b"PK\x03\x04"):
        return TORCH_ZIP
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return PICKLE
    if head.lstrip()[:1] in (b"{", b"["):
        try:
            json.loads(Path(path).read_text(encoding="utf-8"))
            return ENGINE_SIDECAR
        except (ValueError, OSError):
            pass
    if _looks_like_onnx(head):
        return ONNX
    return UNKNOWN


def _looks_like_onnx(head: bytes) -> bool:
    """An ONNX ModelProto starts with field 1 (ir_version, varint: byte 0x08) and small versions."""
    return len(head) >= 2 and head[0] == 0x08 and 1 <= head[1] <= 20


def describe(path: str | os.PathLike[str]) -> str:
    return DESCRIPTIONS[sniff(path)]
