"""Which backend × precision the pick may run on: those asked for, or the device's defaults, that can run here (the
reference first), each a :class:`Candidate` that :mod:`vitc.tune.device` then measures."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from vitc.backends import ARTIFACT, BACKENDS
from vitc.core.errors import UsageError
from vitc.tune.settings import TuneSettings


@dataclass
class Candidate:
    """One backend × precision the pick may run on: its dense file, latency model and measured gain."""

    backend: str
    precision: str
    dense_file: str
    profile: str
    gain: float = 1.0  # the dense file's paired speedup over the reference's dense file
    needed: float = 1.0  # the compression speedup still needed: S / gain

    @property
    def name(self) -> str:
        return f"{self.backend}:{self.precision}"

    @property
    def target(self) -> str:
        """The file as a bench target (``BACKEND:PATH``)."""
        return f"{self.backend}:{self.dense_file}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def device_name(name: str) -> str:
    """``auto`` as the device it means here (cuda where a GPU is visible); other names as they are."""
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def candidate_pairs(settings: TuneSettings, device: str, label: Any = None) -> list[tuple[str, str]]:
    """(backend, precision) to try: those asked for (or the device's defaults) that can run here; the reference first.
    ``label`` names the settings' fields in errors (default: the command's flags)."""
    from vitc.core.settings import cli_label

    label = label or cli_label(type(settings))
    gpu = device.startswith("cuda")
    backends = settings.backends or ([b for b, x in BACKENDS.items() if x.reads != ARTIFACT and x.unavailable() is None
                                      and (gpu or x.builder is None or x.runs_at("fp32", "cpu"))]
                                     if not gpu else [b for b, x in BACKENDS.items() if x.unavailable() is None
                                                      and (x.reads == ARTIFACT or x.builder is not None)])
    precisions = settings.precisions or (["fp16", "int8"] if gpu else ["fp32", "int8"])
    out = [settings.reference_pair]
    for b in backends:
        backend = BACKENDS[b]
        why = backend.unavailable()
        if why is not None:
            if settings.backends:
                raise UsageError(f"{label('backends')} lists {b}, which cannot run here: {why}")
            continue
        for p in precisions:
            if backend.runs_at(p, device if backend.reads == ARTIFACT or gpu else "cpu") and (b, p) not in out:
                if backend.reads == ARTIFACT and p == "int8":
                    continue
                out.append((b, p))
    return out


__all__ = ["Candidate", "candidate_pairs", "device_name"]
