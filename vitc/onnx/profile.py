"""What a TensorRT build reads from an ONNX file, without TensorRT: inputs, precision, profile shapes.

The exported ViT has a dynamic batch (axis 0) and every other dimension static (image size, token
counts), so one optimization profile over the batch range describes every shape the engine will see.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vitc.core.errors import UsageError

if TYPE_CHECKING:
    import onnx

    from vitc.onnx.io import Dim

Shape = tuple[int, ...]



@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output: ``dims`` holds ints (static), names (symbolic) or None (unknown)."""

    name: str
    dims: tuple[Dim, ...]
    dtype: str  # ONNX element type name: "FLOAT", "FLOAT16", ...


@dataclass(frozen=True)
class OnnxInfo:
    path: Path
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    precision: str  # fp32 | fp16 | bf16 | int8 | fp8 | int4
    opset: int
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchProfile:
    """Min/opt/max shapes per input for one TensorRT optimization profile."""

    shapes: dict[str, tuple[Shape, Shape, Shape]]

    def to_dict(self) -> dict[str, dict[str, list[int]]]:
        return {name: {"min": list(lo), "opt": list(opt), "max": list(hi)} for name, (lo, opt, hi) in self.shapes.items()}

    @property
    def max_batch(self) -> int:
        return min(hi[0] for _, _, hi in self.shapes.values())

    @property
    def min_batch(self) -> int:
        return max(lo[0] for lo, _, _ in self.shapes.values())


def read_onnx(path: str | os.PathLike[str]) -> OnnxInfo:
    """Inputs, outputs, precision, opset and metadata of an ONNX file (one-line error if unreadable)."""
    from vitc.onnx.io import graph_inputs, load_onnx, metadata, precision_of

    path = Path(path)
    model = load_onnx(path, check=False)
    inputs = [_tensor_info(v) for v in graph_inputs(model)]
    outputs = [_tensor_info(v) for v in model.graph.output]
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return OnnxInfo(path, inputs, outputs, precision_of(model), opset, metadata(model))


def batch_profile(info: OnnxInfo, min_batch: int, opt_batch: int, max_batch: int) -> BatchProfile:
    """One profile varying axis 0 of every input over [min, max] (optimised for ``opt``).

    Every other dimension must be static in the ONNX; a static batch admits only itself.
    """
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise UsageError(f"need 1 <= --min-batch <= --opt-batch <= --max-batch, got {min_batch}, {opt_batch}, {max_batch}")
    if not info.inputs:
        raise UsageError(f"{info.path} has no graph inputs")
    shapes: dict[str, tuple[Shape, Shape, Shape]] = {}
    for t in info.inputs:
        if not t.dims:
            raise UsageError(f"{info.path}: input {t.name!r} has no known shape; expected (batch, C, H, W)")
        rest = t.dims[1:]
        for axis, d in enumerate(rest, start=1):
            if not isinstance(d, int) or d < 1:
                raise UsageError(f"{info.path}: input {t.name!r} has a dynamic dimension {d!r} at axis {axis}; "
                                 "only the batch (axis 0) may vary — export with a static image size and token counts")
        static_rest = tuple(int(d) for d in rest if isinstance(d, int))
        batch = t.dims[0]
        if isinstance(batch, int) and batch > 0 and not min_batch == opt_batch == max_batch == batch:
            raise UsageError(f"{info.path}: input {t.name!r} has a static batch of {batch}; re-export with a dynamic "
                             f"batch or pass --min-batch {batch} --opt-batch {batch} --max-batch {batch}")
        shapes[t.name] = ((min_batch, *static_rest), (opt_batch, *static_rest), (max_batch, *static_rest))
    return BatchProfile(shapes)


def _tensor_info(value: onnx.ValueInfoProto) -> TensorInfo:
    from onnx import TensorProto

    from vitc.onnx.io import dims

    return TensorInfo(value.name, tuple(dims(value) or ()), TensorProto.DataType.Name(value.type.tensor_type.elem_type))
