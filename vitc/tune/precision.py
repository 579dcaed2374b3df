"""Per-block precision: a block of an INT8 pick stays float where INT8 does not pay on this device (its INT8 latency,
from the INT8 latency model, is not below its float latency from the float one) or where it costs accuracy (that
block alone in INT8, every other float, loses more than ``block_drop`` top-1 points against the float file on the
held-out images, which calibration never sees). The Q/DQ placement follows (``vitc quantize --float-blocks``)."""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from vitc.core.progress import log
from vitc.tune.journal import Journal
from vitc.tune.trials import holdout_top1


@dataclass
class BlockPrecision:
    float_blocks: list[int] = field(default_factory=list)
    reasons: dict[int, str] = field(default_factory=dict)  # block -> why it stays float
    int8_ms: list[float | None] = field(default_factory=list)  # per block, from the INT8 latency model
    float_ms: list[float | None] = field(default_factory=list)  # per block, from the float one
    drop: list[float | None] = field(default_factory=list)  # per block: top-1 points lost with it alone in INT8
    fixed_ms: float = 0.0  # what is not a block (patch embedding, head), from the INT8 latency model

    def mixed_factor(self) -> float:
        """How much faster the mixed file runs than the all-INT8 one, per the two latency models (each float block at
        its float latency): the all-INT8 prediction times this is the mixed file's."""
        chosen = [f if i in self.float_blocks and f is not None else q
                  for i, (q, f) in enumerate(zip(self.int8_ms, self.float_ms))]
        int8 = self.fixed_ms + sum(q for q in self.int8_ms if q is not None)
        mixed = self.fixed_ms + sum(c for c in chosen if c is not None)
        return int8 / mixed if mixed > 0 else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reasons": {str(k): v for k, v in self.reasons.items()}, "mixed_factor": self.mixed_factor()}


def block_latencies(artifact: str, latency: str) -> tuple[list[float], float]:
    """Each block's modelled latency (ms, calibrated) of ``artifact``'s architecture on ``latency``'s device, and the
    rest's (patch embedding, head)."""
    from vitc.core.artifacts import read_header
    from vitc.core.latency import load_latency

    spec = read_header(artifact, verify=False)[0]
    pred = load_latency(latency).predict(spec, artifact)
    return [b["block_ms"] + b["selection_ms"] for b in pred["blocks"]], float(pred["fixed_ms"])


def choose(artifact: str, fp32_onnx: str, backend: str, int8_profile: str, float_profile: str | None, source: Any,
           calib: Any, settings: Any, journal: Journal) -> BlockPrecision:
    """Which blocks of ``artifact`` stay float in its INT8 file on ``backend``."""
    from vitc.core.artifacts import read_header

    depth = read_header(artifact, verify=False)[0].depth
    int8_ms, fixed_ms = block_latencies(artifact, int8_profile)
    out = BlockPrecision(int8_ms=list(int8_ms), fixed_ms=fixed_ms,
                         float_ms=list(block_latencies(artifact, float_profile)[0]) if float_profile else [None] * depth,
                         drop=[None] * depth)
    for i in range(depth):
        fast, slow = out.int8_ms[i], out.float_ms[i]
        if fast is not None and slow is not None and fast >= slow:
            out.reasons[i] = f"INT8 does not pay here: {fast:.3f} ms in INT8, {slow:.3f} ms float (latency models)"
    judged = [i for i in range(depth) if i not in out.reasons] if settings.block_drop < 100 else []
    base = holdout_top1(fp32_onnx, source, journal, backend) if judged else 0.0
    with tempfile.TemporaryDirectory(prefix=".vitc-blocks-", dir=Path(fp32_onnx).parent if judged else None) as tmp:
        for i in judged:
            others = [j for j in range(depth) if j != i]
            options = {"onnx": fp32_onnx, "block": i, "backend": backend, "calib": str(calib),
                       "samples": settings.calib_samples, "mtime": Path(fp32_onnx).stat().st_mtime_ns}
            top1 = journal.step(f"precision/{fp32_onnx}/block{i}", options,
                                partial(_alone, fp32_onnx, Path(tmp) / f"block{i}.int8.onnx", others, backend, source, calib,
                                        settings))["top1"]
            out.drop[i] = base - top1
            if out.drop[i] > settings.block_drop:
                out.reasons[i] = f"INT8 costs {out.drop[i]:.2f} top-1 points on the held-out images (> {settings.block_drop:g})"
    out.float_blocks = sorted(out.reasons)
    log(f"per-block precision: {depth - len(out.float_blocks)} of {depth} blocks INT8"
        + (f"; float: {', '.join(f'{b} ({r})' for b, r in out.reasons.items())}" if out.reasons else ""))
    return out


def _alone(fp32_onnx: str, out: Path, others: list[int], backend: str, source: Any, calib: Any,
           settings: Any) -> dict[str, Any]:
    """Held-out top-1 with one block in INT8 and the rest float."""
    from vitc.checks.evaluate import evaluate_target
    from vitc.onnx.quantize import quantize_onnx

    quantize_onnx(fp32_onnx, calib, out, num_samples=settings.calib_samples, check=False, float_blocks=others or None)
    top1 = evaluate_target(str(out), source, split="holdout", backend=backend, device="cpu").top1
    out.unlink(missing_ok=True)
    return {"top1": top1}


__all__ = ["BlockPrecision", "block_latencies", "choose"]
