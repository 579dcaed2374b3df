"""``vitc quantize``: an FP32 ONNX → INT8 Q/DQ ONNX for TensorRT's explicit quantization.

ONNX Runtime's static quantizer, set up the way TensorRT consumes Q/DQ graphs (strongly typed
builds, no implicit calibrator — that API is deprecated in TRT 10 and removed in TRT 11):

* ``quant_pre_process`` first (ONNX + symbolic shape inference, basic graph clean-up), so every
  tensor that should be quantized has a known shape;
* ``QuantFormat.QDQ``, ``QuantType.QInt8`` activations with ``ActivationSymmetric=True`` (zero
  point 0, which TensorRT requires) and per-channel symmetric ``QInt8`` weights (output-channel
  axis: MatMul axis 1, Gemm per transB);
* only ``MatMul``/``Gemm`` are quantized — the GEMMs TensorRT fuses Q/DQ into; LayerNorm,
  Softmax, GELU and the residual adds stay in float (TensorRT keeps them in higher precision
  anyway, and Q/DQ around them only costs accuracy and reformat layers);
* the patch-embedding ``Conv`` stays float: it is ~1% of a ViT's MACs, and OpenVINO runs an INT8
  Conv on the normalised image as u8 × s8 (the input shifted by 128), whose pairwise 16-bit sums
  saturate on CPUs without VNNI (AVX2): on a trained vit-nano that one layer took OpenVINO's
  logits to cosine 0.93 against fp32 and top-1 from 90.3% to 81.7% on digits (ONNX Runtime: 0.99995);
  without it both runtimes give cosine 0.996 and 89.4–89.7%;
* biases stay float (``QuantizeBias=False``): TensorRT's DequantizeLinear takes INT8/FP8/INT4, not
  the INT32 biases ONNX Runtime would emit;
* ``attention=False`` (default) also keeps the two activation×activation products of attention
  (Q·Kᵀ and P·V) in float: their operands change per image, so one per-tensor scale fits them
  poorly, and the softmax probabilities would get only 127 levels on [0, 1];
* the DynamicViT token-selection path (predictor MLP + TopK, found structurally by
  :func:`vitc.onnx.graph.token_score_nodes`) is in ``nodes_to_exclude``, so the token scores are
  computed in float. (The tokens the predictor reads come out of quantized blocks, so a near-tie
  can still flip; the scores themselves add no INT8 error.)

Calibration: real images from the data source's train split (:mod:`vitc.onnx.calibration`) with a
progress bar; ``minmax``, ``entropy`` or ``percentile`` (``CalibPercentile``, default 99.999).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from vitc.core.errors import UsageError, VitcError
from vitc.core.fileio import check_output_file, refuse_overwriting_inputs
from vitc.core.progress import log, progress
from vitc.onnx.graph import name_nodes, token_score_nodes
from vitc.onnx.io import (
    META_CALIBRATION,
    META_PRECISION,
    graph_inputs,
    load_onnx,
    metadata,
    onnx_spec,
    precision_of,
    save_onnx,
    stamp,
)
from vitc.onnx.settings import QuantizeSettings

QUANTIZED_OPS = ("MatMul", "Gemm")


def quantize_onnx(
    onnx_path: str | os.PathLike[str],
    calib_data: str,
    out: str | os.PathLike[str],
    *,
    num_samples: int = 512,
    method: str = "minmax",
    batch_size: int = 32,
    percentile: float = 99.999,
    attention: bool = False,
    per_channel: bool = True,
    check: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Quantize the FP32 ONNX at ``onnx_path`` with ``num_samples`` images of ``calib_data``; write ``out``.

    The result keeps the source's ``vitc.*`` metadata with ``vitc.precision=int8`` and the calibration
    settings in ``vitc.onnx.quantize``; it must pass the TensorRT readiness check (``check``).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from vitc.core.data import parse_data
    from vitc.onnx.calibration import ImageCalibrationReader

    t0 = time.perf_counter()
    QuantizeSettings(data=calib_data, num_samples=num_samples, method=method, batch_size=batch_size, percentile=percentile,
                     attention=attention, per_channel=per_channel, check=check, seed=seed).validate()
    out, onnx_path = Path(out), Path(onnx_path)
    if out.suffix.lower() != ".onnx":
        raise UsageError(f"--out must name a .onnx file, got {out}")
    refuse_overwriting_inputs([("--out", out)], [onnx_path])
    check_output_file(out)
    model = load_onnx(onnx_path)
    spec = onnx_spec(model, str(onnx_path))
    if spec is None:
        raise UsageError(f"{onnx_path} carries no vitc spec (input size, normalisation); export it with `vitc export`")
    precision = precision_of(model)
    if precision != "fp32":
        raise UsageError(f"{onnx_path} is {precision}; quantize the fp32 ONNX (vitc export without --fp16)")
    source = parse_data(calib_data)
    inp = graph_inputs(model)[0]
    static_batch = inp.type.tensor_type.shape.dim[0].dim_value or None
    if static_batch:
        batch_size = static_batch
    reader = ImageCalibrationReader(source, spec, inp.name, num_samples=num_samples, batch_size=batch_size, seed=seed,
                                    drop_last=bool(static_batch))
    source_meta = metadata(model)
    log(f"calibrating {onnx_path.name} on {reader.num_samples} {source} train images ({method})")
    with tempfile.TemporaryDirectory(prefix=".vitc-quant-", dir=out.parent if out.parent.exists() else None) as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=False)
        except Exception as e:  # the symbolic shape inference raises plain Exceptions on odd graphs
            raise VitcError(f"quantization pre-processing failed for {onnx_path}: {_first_line(e)}") from None
        prepared = onnx.load(str(pre))
        name_nodes(prepared)
        score_nodes = token_score_nodes(prepared)
        op_types = list(QUANTIZED_OPS)
        inits = {t.name for t in prepared.graph.initializer}
        # MatMuls whose both operands are activations: attention's Q·Kᵀ and P·V
        attention_matmuls = [n.name for n in prepared.graph.node if n.op_type == "MatMul" and not set(n.input) & inits]
        excluded = score_nodes + ([] if attention else [n for n in attention_matmuls if n not in score_nodes])
        quantized_path = Path(tmp) / "int8.onnx"
        calib = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
        extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                 "CalibPercentile": percentile, "CalibTensorRangeSymmetric": True}
        with progress(f"calibrate ({method})", total=len(reader)) as bar:
            reader.bar = bar
            try:
                quantize_static(
                    prepared, str(quantized_path), reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=op_types,
                    per_channel=per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=excluded, calibrate_method=calib, extra_options=extra,
                )
            except UsageError:
                raise
            except Exception as e:
                raise VitcError(f"INT8 quantization of {onnx_path} failed: {_first_line(e)}") from None
        quantized = onnx.load(str(quantized_path))
    name_nodes(quantized)
    calibration = {"method": method, "data": str(source), "split": "train", "num_samples": reader.num_samples,
                   "batch_size": batch_size, "seed": seed, "attention": attention, "per_channel": per_channel}
    if method == "percentile":
        calibration["percentile"] = percentile
    stamp(quantized, {**source_meta, META_PRECISION: "int8", META_CALIBRATION: calibration})
    readiness = None
    if check:
        from vitc.onnx.readiness import check_trt_ready

        readiness = check_trt_ready(quantized)
    save_onnx(quantized, out)
    counts = {op: sum(n.op_type == op for n in quantized.graph.node) for op in ("QuantizeLinear", "DequantizeLinear")}
    return {
        "onnx": str(out),
        "source": str(onnx_path),
        "precision": "int8",
        "calibration": calibration,
        "quantized_ops": op_types,
        "quantize_linear": counts["QuantizeLinear"],
        "dequantize_linear": counts["DequantizeLinear"],
        "excluded_nodes": len(excluded),
        "token_score_nodes": len(score_nodes),
        "attention_matmuls": len(attention_matmuls),
        "trt_ready": None if readiness is None else readiness["ready"],
        "bytes": out.stat().st_size,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0][:300] if lines else type(e).__name__
