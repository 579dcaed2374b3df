"""Small ONNX graph queries shared by the readiness check, FP16 conversion and INT8 quantization."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

# Ops through which TopK's indices travel to the gather that picks the kept tokens.
_INDEX_PLUMBING = {"Unsqueeze", "Expand", "Reshape", "Cast", "Identity", "Squeeze", "Tile", "Add", "Mul", "Flatten"}
_GATHERS = {"Gather", "GatherElements", "GatherND"}


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name (``<op>_<i>``), so errors and block/exclude lists can name it."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            base = node.name or node.op_type.lower()
            node.name = f"{base}_{i}"
        seen.add(node.name)


SCOPES_KEY = "pkg.torch.onnx.name_scopes"  # the torch module path the dynamo exporter records on each node


def block_of_nodes(model: onnx.ModelProto) -> dict[str, int]:
    """Node name → index of the transformer block (``blocks.N``) it computes, from the module scopes
    ``torch.onnx.export(dynamo=True)`` records; nodes outside the blocks (and graphs without the record) are left out."""
    import ast
    import re

    out: dict[str, int] = {}
    for node in model.graph.node:
        for prop in node.metadata_props:
            if prop.key != SCOPES_KEY:
                continue
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                continue
            for scope in scopes if isinstance(scopes, list) else []:
                m = re.fullmatch(r"blocks\.(\d+)", str(scope))
                if m and node.name:
                    out[node.name] = int(m.group(1))
                    break
    return out


def topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` so every node follows the producers of its inputs (ONNX requires it;
    graph rewriters such as the FP16 converter append new nodes at the end)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:  # a cycle or a dangling input: leave the rest in their original order
            ordered += pending
            break
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
        for n in ready:
            ordered.append(n)
            available.update(n.output)
    copies = [type(n)() for n in ordered]
    for dst, src in zip(copies, ordered):
        dst.CopyFrom(src)
    del graph.node[:]
    graph.node.extend(copies)


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output if out}


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    table: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            if name:
                table[name].append(node)
    return table


def constant_value(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    """The value of tensor ``name`` if it is an initializer or a ``Constant`` node's output, else None."""
    from onnx import numpy_helper

    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    node = producers(graph).get(name)
    if node is not None and node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
        for attr in node.attribute:
            if attr.name == "value":
                return numpy_helper.to_array(attr.t)
            if attr.name == "value_int":
                return np.array(attr.i)
            if attr.name == "value_ints":
                return np.array(list(attr.ints))
    return None


def ancestors(graph: onnx.GraphProto, tensor: str, table: dict[str, onnx.NodeProto] | None = None) -> set[str]:
    """Names of the nodes ``tensor`` depends on (its producer included)."""
    table = producers(graph) if table is None else table
    seen: set[str] = set()
    stack = [tensor]
    while stack:
        node = table.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        stack.extend(i for i in node.input if i)
    return seen


def token_score_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes that compute DynamicViT token scores and pick the kept tokens (predictor MLP + TopK).

    For each ``TopK``, the kept-token gather is found by following its indices to the first
    Gather/GatherElements/GatherND; the gather's data input is the patch-token tensor the predictor
    reads. The score path is then every node the TopK's scores depend on that the token tensor does
    not depend on, plus the TopK itself. This is structural, so it holds for any exporter's naming.
    Nodes must be named (see :func:`name_nodes`). A graph without TopK returns [].
    """
    graph = model.graph
    prod, cons = producers(graph), consumers(graph)
    selected: set[str] = set()
    for node in graph.node:
        if node.op_type != "TopK":
            continue
        selected.add(node.name)
        tokens = _gathered_tensor(node, cons)
        if tokens is None:  # an unfamiliar pattern: keep only the TopK itself out of low precision
            continue
        selected |= ancestors(graph, node.input[0], prod) - ancestors(graph, tokens, prod)
    return [n.name for n in graph.node if n.name in selected]


def _gathered_tensor(topk: onnx.NodeProto, cons: dict[str, list[onnx.NodeProto]]) -> str | None:
    frontier, seen = [topk.output[1]] if len(topk.output) > 1 else [], set()
    while frontier:
        tensor = frontier.pop(0)
        for node in cons.get(tensor, []):
            if node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type in _GATHERS and tensor in node.input[1:]:
                return node.input[0]
            if node.op_type in _INDEX_PLUMBING:
                frontier.extend(o for o in node.output if o)
    return None
