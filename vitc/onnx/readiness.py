"""TensorRT readiness: would TensorRT's ONNX parser accept this graph, with every token count static?

Checked node by node against the parser's own support matrix (:mod:`vitc.onnx.trt_ops`): opset 9-20, only
supported default-domain ops (no ``com.microsoft`` or other custom domains), a constant sorted ``TopK`` with
1 <= K <= 3840, the matrix's restrictions that apply to exported ViTs, element types TensorRT has, and
static shapes — every node output inferred at two batch sizes is equal at both or scales with the batch.
All violations are collected; the ``CheckFailed`` message names the first node and counts the rest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vitc.core.errors import CheckFailed
from vitc.onnx import trt_ops
from vitc.onnx.graph import constant_value, consumers
from vitc.onnx.io import PROTOBUF_LIMIT, dims, graph_inputs, load_onnx

if TYPE_CHECKING:
    import onnx

@dataclass(frozen=True)
class Violation:
    node: str  # node name, or "graph input 'x'" / "model" for graph-level problems
    op: str
    message: str

    def __str__(self) -> str:
        where = f"node '{self.node}' ({self.op})" if self.op else self.node
        return f"{where}: {self.message}"


def check_trt_ready(model_or_path: onnx.ModelProto | str | os.PathLike[str], *, raise_on_fail: bool = True) -> dict[str, Any]:
    """Check an ONNX model (or file) for TensorRT; raise ``CheckFailed`` naming the first bad node.

    Returns a summary: ``ready``, ``opset``, ``nodes``, ``batch`` ("dynamic" or the static size),
    the ``topk`` nodes with their K, every ``violations`` line and the one-line ``message`` (None
    when ready) — with ``raise_on_fail=False`` nothing is raised.
    """
    import onnx

    model = model_or_path if isinstance(model_or_path, onnx.ModelProto) else load_onnx(model_or_path, check=False)
    violations, summary = find_violations(model)
    summary["ready"] = not violations
    summary["violations"] = [str(v) for v in violations]
    summary["message"] = None
    if violations:
        more = f" (and {len(violations) - 1} more violation{'s' if len(violations) > 2 else ''})" if len(violations) > 1 else ""
        summary["message"] = f"not TensorRT-ready: {violations[0]}{more}"
        if raise_on_fail:
            raise CheckFailed(summary["message"])
    return summary


def find_violations(model: onnx.ModelProto) -> tuple[list[Violation], dict[str, Any]]:
    """Every readiness violation in graph order, and the facts gathered on the way."""
    import onnx

    out: list[Violation] = []
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    lo, hi = trt_ops.OPSET_RANGE
    if not lo <= opset <= hi:
        out.append(Violation("model", "", f"opset {opset} is outside the range TensorRT 10 parses ({lo}-{hi})"))
    if model.functions:
        import onnx.inliner

        model = onnx.inliner.inline_local_functions(model)
    graph = model.graph
    cons = consumers(graph)
    inputs = graph_inputs(model)
    first = dims(inputs[0]) if inputs else None
    batch = first[0] if first else None

    for vi in inputs:
        users = cons.get(vi.name, [])
        where = f"graph input '{vi.name}'" + (f" (consumed by node '{users[0].name}')" if users else "")
        out += _input_violations(vi, where)
    # Shapes at two concrete batch sizes: a dimension that differs between them scales with the
    # batch (e.g. batch*heads inside attention); every other one must be the same number in both.
    # (A model over 2 GiB cannot be shape-inferred in memory; its graph I/O is still checked.)
    large = model.ByteSize() > PROTOBUF_LIMIT
    inference_error: Violation | None = None
    try:
        shapes = [] if large else [_infer_at_batch(model, b) for b in ((3, 5) if isinstance(batch, str) else (None,))]
    except ValueError as e:  # reported after the node checks, which usually name the culprit
        shapes, inference_error = [], Violation("model", "", str(e))
    topk: list[dict[str, Any]] = []
    graph_outputs = {o.name for o in graph.output}
    for node in graph.node:
        out += _node_violations(node, graph, cons, graph_outputs, topk)
        for name in node.output:
            if shapes and name and (name in cons or name in graph_outputs):
                out += _shape_violations(name, node, shapes)
    if inference_error is not None:
        out.append(inference_error)
    summary = {
        "opset": opset,
        "nodes": len(graph.node),
        "batch": "dynamic" if isinstance(batch, str) else batch,
        "inputs": [{"name": v.name, "shape": dims(v)} for v in inputs],
        "outputs": [{"name": v.name, "shape": dims(v)} for v in graph.output],
        "topk": topk,
        "intermediate_shapes": "skipped (model over 2 GiB)" if large else ("unknown" if inference_error else "static"),
        "checked_against": trt_ops.SOURCE,
    }
    return out, summary


def _infer_at_batch(model: onnx.ModelProto, batch: int | None) -> dict[str, onnx.ValueInfoProto]:
    """Inferred tensor types with axis 0 of every dynamic graph input set to ``batch`` (None: as is)."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    if batch is not None:
        for vi in graph_inputs(m):
            shape = vi.type.tensor_type.shape
            if shape.dim and not shape.dim[0].HasField("dim_value"):
                shape.dim[0].dim_value = batch
        for vi in m.graph.output:
            vi.type.tensor_type.ClearField("shape")
        del m.graph.value_info[:]
    try:
        m = onnx.shape_inference.infer_shapes(m, data_prop=True)
    except Exception as e:  # InferenceError on inconsistent graphs or unknown domains
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"ONNX shape inference failed: {first[:200]}") from None
    return {v.name: v for v in list(m.graph.value_info) + list(m.graph.output)}


def _node_violations(node: onnx.NodeProto, graph: onnx.GraphProto, cons: dict[str, list[Any]],
                     graph_outputs: set[str], topk: list[dict[str, Any]]) -> list[Violation]:
    op = node.op_type
    if node.domain == trt_ops.CONTRIB_DOMAIN:
        return [Violation(node.name, f"{node.domain}.{op}",
                          "ONNX Runtime contrib op; TensorRT's ONNX parser cannot parse com.microsoft ops")]
    if node.domain not in ("", "ai.onnx"):
        return [Violation(node.name, f"{node.domain}.{op}", f"custom-domain op '{node.domain}' needs a TensorRT plugin")]
    if op not in trt_ops.SUPPORTED_OPS:
        return [Violation(node.name, op, f"op {op} is not supported by TensorRT's ONNX parser ({trt_ops.SOURCE})")]
    out: list[Violation] = []
    if op == "TopK":
        out += _topk_violations(node, graph, topk)
    for index, what in trt_ops.CONSTANT_INPUTS.get(op, {}).items():
        if len(node.input) > index and node.input[index] and constant_value(graph, node.input[index]) is None:
            out.append(Violation(node.name, op, f"input '{what}' ('{node.input[index]}') is computed at run time; "
                                                "TensorRT needs an initializer"))
    if op == "LayerNormalization":
        extra = [o for o in node.output[1:] if o and (o in cons or o in graph_outputs)]
        if extra:
            out.append(Violation(node.name, op, f"uses the statistics output '{extra[0]}'; TensorRT supports only the first output Y"))
    if op in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
        zp = constant_value(graph, node.input[2])
        if zp is None or zp.any():
            out.append(Violation(node.name, op, "zero point must be a constant 0 (symmetric quantization) for TensorRT"))
    return out


def _topk_violations(node: onnx.NodeProto, graph: onnx.GraphProto, topk: list[dict[str, Any]]) -> list[Violation]:
    attrs = {a.name: a for a in node.attribute}
    if len(node.input) > 1 and node.input[1]:
        value = constant_value(graph, node.input[1])
        if value is None:
            return [Violation(node.name, "TopK", f"K ('{node.input[1]}') is computed at run time; TensorRT needs a "
                                                 f"constant K (initializer or Constant) <= {trt_ops.MAX_TOPK_K}")]
        k = int(value.reshape(-1)[0])
    else:  # opset < 10: K is an attribute
        k = int(attrs["k"].i) if "k" in attrs else 0
    topk.append({"node": node.name, "k": k})
    out = []
    if not 1 <= k <= trt_ops.MAX_TOPK_K:
        out.append(Violation(node.name, "TopK", f"K = {k} is outside TensorRT's range 1-{trt_ops.MAX_TOPK_K}"))
    if "sorted" in attrs and attrs["sorted"].i != 1:
        out.append(Violation(node.name, "TopK", "sorted=0; TensorRT requires sorted=1"))
    return out


def _input_violations(vi: onnx.ValueInfoProto, where: str) -> list[Violation]:
    """A graph input: a supported tensor type, axis 0 (batch) static or symbolic, the rest static."""
    if not vi.type.HasField("tensor_type"):
        return [Violation(where, "", "is not a tensor (sequence/map/optional types are unsupported)")]
    bad_type = _type_violation(vi)
    if bad_type:
        return [Violation(where, "", bad_type)]
    shape = dims(vi)
    if shape is None:
        return [Violation(where, "", "has no shape; every dimension but the batch must be static")]
    for axis, d in enumerate(shape[1:], start=1):
        if not isinstance(d, int):
            return [Violation(where, "", f"has a dynamic dimension {d or '?'!r} at axis {axis}; only the batch (axis 0) may be dynamic")]
    return []


def _type_violation(vi: onnx.ValueInfoProto) -> str | None:
    from onnx import TensorProto

    dtype = TensorProto.DataType.Name(vi.type.tensor_type.elem_type)
    return None if dtype in trt_ops.SUPPORTED_TYPES else f"has element type {dtype}, which TensorRT does not support"


def _shape_violations(name: str, node: onnx.NodeProto, shapes: list[dict[str, onnx.ValueInfoProto]]) -> list[Violation]:
    """Node output ``name``: known rank, and each dimension a number at every probed batch size."""
    infos = [s.get(name) for s in shapes]
    if any(vi is None or not vi.type.HasField("tensor_type") for vi in infos):
        return [Violation(node.name, node.op_type, f"output '{name}' has no inferable tensor type/shape")]
    bad_type = _type_violation(infos[0])  # type: ignore[arg-type]
    if bad_type:
        return [Violation(node.name, node.op_type, f"output '{name}' {bad_type}")]
    probed = [dims(vi) for vi in infos]  # type: ignore[arg-type]
    if any(p is None for p in probed):
        return [Violation(node.name, node.op_type, f"output '{name}' has an unknown rank after shape inference")]
    for axis, ds in enumerate(zip(*probed)):
        if not all(isinstance(d, int) for d in ds):
            d = next(d for d in ds if not isinstance(d, int))
            return [Violation(node.name, node.op_type,
                              f"output '{name}' has a dynamic dimension {d or '?'!r} at axis {axis}; only the batch may be dynamic")]
    return []


__all__ = ["Violation", "check_trt_ready", "find_violations"]
