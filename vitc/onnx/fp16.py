"""FP16 ONNX with FP32 islands, for strongly typed TensorRT builds and ONNX Runtime.

The verified FP32 graph is converted with ONNX Runtime's ``convert_float_to_float16`` (a pure type rewrite:
the same ops and names) with FP32 input/output (``keep_io_types``). LayerNormalization, Softmax/LogSoftmax
and the DynamicViT token-score path (predictor, log-softmax, TopK) stay FP32 behind Cast nodes; the matmuls,
GELU and residual adds run in FP16. Why each island, and the limit near tied token scores:
docs/deployment.md ("FP16").
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from vitc.onnx.graph import name_nodes, token_score_nodes, topological_sort

if TYPE_CHECKING:
    import onnx

FP32_OPS = ("LayerNormalization", "Softmax", "LogSoftmax", "TopK")


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """An FP16 copy of an FP32 model: FP32 input/output, FP32 islands as described in the module doc."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # the converter edits its argument in place
    model = copy
    name_nodes(model)
    blocked_nodes = token_score_nodes(model)
    op_block_list = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS))
    converted = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=op_block_list, node_block_list=blocked_nodes,
        disable_shape_infer=False,
    )
    # The converter appends its Cast nodes at the end and leaves stale value_info types: restore
    # the topological order ONNX requires, give every node a unique name, and re-infer the types.
    _drop_duplicate_casts(converted.graph)
    topological_sort(converted.graph)
    name_nodes(converted)
    del converted.graph.value_info[:]
    with contextlib.suppress(Exception):  # value_info is optional; the readiness check re-infers shapes itself
        converted = onnx.shape_inference.infer_shapes(converted)
    return converted


def _drop_duplicate_casts(graph: onnx.GraphProto) -> None:
    """Remove repeated identical Cast nodes writing the same output name.

    The converter inserts one Cast per FP32 consumer of an initializer, all named after the
    initializer; when one initializer feeds several blocked nodes (the exporter de-duplicates equal
    constants, e.g. LayerNorm weights at init) that breaks single assignment. The copies compute
    the same value, so keeping the first is exact.
    """
    seen: dict[str, tuple[object, ...]] = {}
    keep = []
    for node in graph.node:
        key = (node.op_type, *node.input, *(a.SerializeToString() for a in node.attribute))
        out = node.output[0] if node.output else ""
        if node.op_type == "Cast" and out in seen and seen[out] == key:
            continue
        if out:
            seen.setdefault(out, key)
        keep.append(node)
    if len(keep) != len(graph.node):
        copies = [type(n)() for n in keep]
        for dst, src in zip(copies, keep):
            dst.CopyFrom(src)
        del graph.node[:]
        graph.node.extend(copies)
