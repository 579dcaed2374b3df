"""What made an artifact: recorded in its metadata (``provenance``, ``origin``) and shown by ``vitc info``.

* ``provenance``: vitc version, the step and the command line, its settings (seed included), the data
  spec, and the parent artifact (path, kind and content digest) when the step read one.
* ``origin``: name, MACs and parameters of the original dense model the chain started from, carried
  from parent to child, so a model compressed twice still reports its cost against the dense one.
"""

from __future__ import annotations

import os
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitc.core.version import __version__

if TYPE_CHECKING:  # the command line imports this module before any command: it must not import torch
    from vitc.core.spec import ViTSpec

_COMMAND: list[str] = []  # set by the vitc command line


def set_command(argv: list[str]) -> None:
    """Called by the ``vitc`` command line with its arguments, so artifacts record the command as typed."""
    _COMMAND[:] = ["vitc", *argv]


def command_line() -> str:
    """The ``vitc ...`` command as typed, or ``python <script> ...`` when vitc was called as a library."""
    argv = _COMMAND or ["python", Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "-", *sys.argv[1:]]
    return " ".join(shlex.quote(a) for a in argv)


def provenance(step: str, settings: Any = None, *, data: str | None = None,
               parent: str | os.PathLike[str] | None = None, **extra: Any) -> dict[str, Any]:
    """The ``provenance`` record of an artifact written by ``step``."""
    from vitc.core.settings import to_dict

    record: dict[str, Any] = {
        "vitc": __version__,
        "step": step,
        "command": command_line(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if settings is not None:
        record["settings"] = to_dict(settings) if hasattr(settings, "__dataclass_fields__") else dict(settings)
        if "seed" in record["settings"]:
            record["seed"] = record["settings"]["seed"]
    if data is not None:
        record["data"] = str(data)
    if parent is not None:
        record["parent"] = parent_record(parent)
    record.update(extra)
    return record


def parent_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Path, kind and content digest of an artifact (a model name is recorded as a name)."""
    from vitc.core.artifacts import META_DIGEST, read_metadata
    from vitc.core.models import is_artifact_path

    if not is_artifact_path(str(path)) or not Path(path).is_file():
        return {"name": str(path)}
    metadata = read_metadata(path)
    return {"path": str(path), "kind": metadata.get("vitc.kind", "model"), "sha256": metadata.get(META_DIGEST)}


def origin(spec: ViTSpec, parent_meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The parent's ``origin`` if it has one, else the parent itself is the original dense model."""
    if parent_meta and isinstance(parent_meta.get("origin"), dict):
        return dict(parent_meta["origin"])
    from vitc.core.flops import model_macs
    from vitc.core.summary import count_params

    dense = spec.without_token_selection()
    return {"name": spec.name, "macs": model_macs(dense), "params": count_params(dense)}
