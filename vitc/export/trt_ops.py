"""What the TensorRT ONNX parser accepts, transcribed from its own support matrix.

Source: onnx/onnx-tensorrt ``docs/operators.md`` at the ONNX-TensorRT 10.1 GA release (commit
96e7811, 2024-06-17, Apache-2.0), stored at ``shared/reference/onnx-tensorrt-operators-10.1.md``.
Later TensorRT 10.x/11 parsers support a superset, so a graph that passes against 10.1 parses on
every TensorRT >= 10.1. ``tests/test_export.py`` re-reads that file (when present) and checks
that this transcription still matches it.
"""

from __future__ import annotations

SOURCE = "onnx-tensorrt 10.1 operator support matrix (docs/operators.md, commit 96e7811)"

#: TensorRT 10 parses opsets 9..20 (the matrix's header); vitc exports at 18..20.
OPSET_RANGE = (9, 20)

#: ``ITopKLayer``'s limit on K. The matrix row says "less than 3840"; the layer API documents
#: K <= 3840 (kMAX_TOPK_K), which is what this check enforces.
MAX_TOPK_K = 3840

#: Operators marked "Y" in the matrix (default ONNX domain).
SUPPORTED_OPS = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh", "AveragePool",
    "BatchNormalization", "Cast", "CastLike", "Ceil", "Celu", "Clip", "Concat", "Constant", "ConstantOfShape",
    "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum", "DeformConv", "DepthToSpace", "DequantizeLinear", "Div",
    "Dropout", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten", "Floor", "GRU",
    "Gather", "GatherElements", "GatherND", "Gelu", "Gemm", "GlobalAveragePool", "GlobalLpPool",
    "GlobalMaxPool", "Greater", "GreaterOrEqual", "GridSample", "GroupNormalization", "HardSigmoid",
    "HardSwish", "Hardmax", "Identity", "If", "ImageScaler", "InstanceNormalization", "IsInf", "IsNaN", "LRN",
    "LSTM", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop",
    "LpNormalization", "LpPool", "MatMul", "Max", "MaxPool", "Mean", "MeanVarianceNormalization", "Min",
    "Mish", "Mod", "Mul", "Neg", "NonMaxSuppression", "NonZero", "Not", "OneHot", "Or", "PRelu", "Pad",
    "ParametricSoftplus", "Pow", "QuantizeLinear", "RNN", "RandomNormal", "RandomNormalLike", "RandomUniform",
    "RandomUniformLike", "Range", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
    "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape",
    "Resize", "ReverseSequence", "RoiAlign", "Round", "ScaledTanh", "Scan", "Scatter", "ScatterElements",
    "ScatterND", "Selu", "Shape", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax",
    "Softplus", "Softsign", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh",
    "ThresholdedRelu", "Tile", "TopK", "Transpose", "Trilu", "Unsqueeze", "Upsample", "Where", "Xor",
})

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
