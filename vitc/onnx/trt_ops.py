"""What the TensorRT ONNX parser accepts, transcribed from its own support matrix.

Source: onnx/onnx-tensorrt ``docs/operators.md`` at the ONNX-TensorRT 10.1 GA release (commit
96e7811, 2024-06-17, Apache-2.0), shipped with vitc as package data (``vitc/onnx/data/``): the
supported-op set is read from that file, the one place those facts live. Later TensorRT 10.x/11
parsers support a superset, so a graph that passes against 10.1 parses on every TensorRT >= 10.1.
"""

from __future__ import annotations

import re

SOURCE = "onnx-tensorrt 10.1 operator support matrix (docs/operators.md, commit 96e7811)"

#: TensorRT 10 parses opsets 9..20 (the matrix's header); vitc exports at 18..20.
OPSET_RANGE = (9, 20)

#: ``ITopKLayer``'s limit on K. The matrix row says "less than 3840"; the layer API documents
#: K <= 3840 (kMAX_TOPK_K), which is what this check enforces.
MAX_TOPK_K = 3840

MATRIX_FILE = "onnx-tensorrt-operators-10.1.md"  # package data: vitc/onnx/data/


def matrix_rows() -> dict[str, bool]:
    """Operator → supported ("Y"/"N" column) from the parser's own matrix, shipped as package data."""
    from importlib import resources

    text = resources.files("vitc.onnx").joinpath("data").joinpath(MATRIX_FILE).read_text(encoding="utf-8")
    return {op: flag == "Y" for op, flag in re.findall(r"^\|\s*([A-Za-z0-9]+)\s*\|\s*([YN])\s*\|", text, flags=re.M)}


#: Operators marked "Y" in the matrix (default ONNX domain).
SUPPORTED_OPS = frozenset(op for op, supported in matrix_rows().items() if supported)

#: Inputs the matrix's "Restrictions" column requires to be initializers/constants: op -> input index.
CONSTANT_INPUTS = {
    "Slice": {3: "axes"},
    "Squeeze": {1: "axes"},
    "Unsqueeze": {1: "axes"},
    "Pad": {3: "axes"},
    "CumSum": {1: "axis"},
    "OneHot": {1: "depth"},
    **{op: {1: "axes"} for op in (
        "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
        "ReduceProd", "ReduceSum", "ReduceSumSquare",
    )},
}

#: Element types TensorRT has (DOUBLE is cast down to FLOAT with clamping; UINT8 only at the I/O).
SUPPORTED_TYPES = frozenset({
    "FLOAT", "FLOAT16", "BFLOAT16", "DOUBLE", "INT32", "INT64", "INT8", "UINT8", "BOOL", "FLOAT8E4M3FN", "INT4",
})

#: Domains whose ops TensorRT can never parse without a plugin.
CONTRIB_DOMAIN = "com.microsoft"
