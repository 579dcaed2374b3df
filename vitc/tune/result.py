"""What ``vitc tune`` decided and measured (the report's and ``--json``'s content)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitc.core.tables import cell, markdown_table
from vitc.tune.candidates import Candidate
from vitc.tune.trials import Trial

TUNE_FORMAT = "vitc.tune/1"


@dataclass
class Entry:
    """One row of the answer: a file this device runs, measured against the reference."""

    name: str
    kind: str  # "dense", "trial", "round" or "final"
    backend: str
    precision: str
    file: str
    artifact: str
    predicted: float | None = None  # predicted speedup over the reference (gain x compression)
    measured: float | None = None  # paired speedup over the reference
    measured_iqr: list[float] | None = None
    images_per_s: float | None = None
    top1: float | None = None  # val split, through its own backend
    holdout_top1: float | None = None
    macs: int | None = None
    params: int | None = None
    float_blocks: list[int] | None = None
    meets: bool = False
    within_drop: bool = True
    verified: bool | None = None  # a compressed file against PyTorch (None: not checked, as the dense files)


@dataclass
class TuneResult:
    """What ``vitc tune`` decided and measured; ``to_dict()`` is its ``--json`` and ``report.json``."""

    target_speedup: float
    reference: str
    batch_size: int
    candidates: list[Candidate]
    trials: list[Trial]
    rounds: list[dict[str, Any]]
    entries: list[Entry]
    winner: str | None
    why: str
    deployed: str | None
    dense_holdout_top1: float
    settings: dict[str, Any]
    environment: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0  # every step's time, those of earlier runs a resumed tune took from its journal included
    resumed_seconds: float = 0.0
    report: dict[str, str] = field(default_factory=dict)
    format: str = TUNE_FORMAT

    @property
    def met(self) -> bool:
        return self.winner is not None

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "target_speedup": self.target_speedup, "reference": self.reference,
                "batch_size": self.batch_size, "met": self.met, "winner": self.winner, "why": self.why,
                "deployed": self.deployed, "dense_holdout_top1": self.dense_holdout_top1,
                "candidates": [c.to_dict() for c in self.candidates], "trials": [t.to_dict() for t in self.trials],
                "rounds": self.rounds, "entries": [dataclasses.asdict(e) for e in self.entries],
                "settings": self.settings, "environment": self.environment, "seconds": self.seconds,
                "resumed_seconds": self.resumed_seconds, "report": self.report}

    def to_text(self) -> str:
        head = (f"tune {self.target_speedup:g}x over {self.reference} at batch {self.batch_size}: "
                + (f"{self.winner} ({self.deployed})" if self.winner else "not met"))
        return "\n".join([head, self.why, *tables(self)])



def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _iqr(iqr: list[float] | None) -> str:
    return f" ({iqr[0]:.2f}-{iqr[1]:.2f})" if iqr else ""


def _round_note(x: dict[str, Any]) -> str:
    noisy = [f"{t['speedup']:.2f}x{_iqr(t.get('iqr'))}" for t in x.get("noisy_tries") or []]
    return "; ".join(([f"measured again after {', '.join(noisy)}"] if noisy else []) + ([x["note"]] if x.get("note") else []))


def tables(r: TuneResult) -> list[str]:
    lines = [f"## Device: what each backend and precision gives (dense, paired against {r.reference})", "",
             markdown_table(["candidate", "dense speedup", "compression still needed", "latency model"],
                            [[c.name, _x(c.gain), _x(c.needed), Path(c.profile).name] for c in r.candidates]), "",
             "## Method split (trained briefly on the largest gain's latency model)", "",
             markdown_table(["trial", "methods", "predicted compression", "held-out top-1 (%)", "MACs (M)", "blocks",
                             "keep ratio", "note"],
                            [[t.label, " then ".join(t.plan) or "-",
                              _x(t.predicted), _pct(t.holdout_top1), cell(t.macs / 1e6 if t.macs else None), t.blocks,
                              t.keep_ratio, t.unreachable or ""] for t in r.trials])]
    if r.rounds:
        lines += ["", "## The loop: the pick deployed and measured", "",
                  markdown_table(["round", "pick", "predicted", "measured (IQR)", "within tolerance", "float blocks",
                                  "recalibrated", "note"],
                                 [[x["round"], x["trial"], _x(x["predicted"]), _x(x["measured"]) + _iqr(x.get("measured_iqr")),
                                   x["within_tolerance"], ",".join(map(str, x["float_blocks"] or [])) or "-",
                                   Path(x["recalibrated"]).name if x.get("recalibrated") else "-", _round_note(x)]
                                  for x in r.rounds])]
    lines += ["", f"## Every candidate, round-robin with the reference at batch {r.batch_size}", "",
              markdown_table(["candidate", "runs as", "predicted", "measured (IQR)", "meets S", "within max drop", "top-1 val (%)",
                              "held-out top-1 (%)", "MACs (M)", "params (M)", "float blocks", "verified"],
                             [[e.name + (" ★" if e.name == r.winner else ""), f"{e.backend} {e.precision}", _x(e.predicted),
                               _x(e.measured) + _iqr(e.measured_iqr),
                               e.meets, e.within_drop, _pct(e.top1), _pct(e.holdout_top1),
                               cell(e.macs / 1e6 if e.macs else None), cell(e.params / 1e6 if e.params else None),
                               ",".join(map(str, e.float_blocks or [])) or "-",
                               "-" if e.verified is None else ("PASS" if e.verified else "FAIL")] for e in r.entries])]
    return lines



__all__ = ["TUNE_FORMAT", "Entry", "TuneResult", "tables"]
