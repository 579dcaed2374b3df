"""``vitc quantize``: an FP32 ONNX → INT8 Q/DQ ONNX for TensorRT's explicit quantization (and ONNX Runtime, OpenVINO).

ONNX Runtime's static quantizer (after ``quant_pre_process``): QDQ format, symmetric INT8 activations (zero
point 0, as TensorRT requires), per-channel symmetric INT8 weights, only ``MatMul``/``Gemm`` quantized and only
on their inputs (no Q after a GEMM: ONNX Runtime then fuses MatMulIntegerToFloat instead of QLinearMatMul plus a
dequantize before the float bias Add), biases float. Kept float: the patch-embedding ``Conv``, attention's
activation×activation products (unless ``attention=True``) and the DynamicViT token-score path. Calibration on real train-split images
(:mod:`vitc.onnx.calibration`): ``minmax``, ``entropy`` or ``percentile``. Why each choice: docs/deployment.md
("INT8"); the measurements: benchmarks/README.md.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from vitc.core.data import DataSource

QUANTIZED_OPS = ("MatMul", "Gemm")


def quantize_onnx(
    onnx_path: str | os.PathLike[str],
    calib_data: str | DataSource,
    out: str | os.PathLike[str],
    *,
    num_samples: int = 512,
    method: str = "minmax",
    batch_size: int = 32,
    percentile: float | None = None,
    attention: bool = False,
    per_channel: bool = True,
    reduce_range: str = "auto",
    check: bool = True,
    seed: int = 0,
    float_blocks: list[int] | None = None,
) -> dict[str, Any]:
    """Quantize the FP32 ONNX at ``onnx_path`` with ``num_samples`` images of ``calib_data``; write ``out``.

    The result keeps the source's ``vitc.*`` metadata with ``vitc.precision=int8`` and the calibration
    settings in ``vitc.onnx.quantize``; it must pass the TensorRT readiness check (``check``). ``float_blocks``:
    transformer blocks whose MatMuls stay float (a mixed-precision file; the blocks are found by the module scopes
    vitc's export records on each node).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from vitc.core.data import parse_data
    from vitc.onnx.calibration import ImageCalibrationReader

    t0 = time.perf_counter()
    given = calib_data if isinstance(calib_data, str) else "digits"  # a parsed source is checked already
    percentile = QuantizeSettings(data=given, num_samples=num_samples, method=method, batch_size=batch_size,
                                  percentile=percentile, attention=attention, per_channel=per_channel,
                                  reduce_range=reduce_range, check=check, seed=seed,
                                  float_blocks=float_blocks).validate().percentile
    from vitc.core.host import cpu_has_int8_dot

    seven_bit = reduce_range == "yes" or (reduce_range == "auto" and not cpu_has_int8_dot())
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
    float_nodes: list[str] = []
    if float_blocks:
        from vitc.onnx.graph import block_of_nodes

        blocks = block_of_nodes(model)
        missing = sorted(set(float_blocks) - set(blocks.values()))
        if not blocks or missing:
            what = "records no block of its nodes (not a dynamo export by vitc)" if not blocks else \
                f"has no block {missing[0]} (blocks 0..{max(blocks.values())})"
            raise UsageError(f"--float-blocks: {onnx_path} {what}")
        float_nodes = [name for name, b in blocks.items() if b in set(float_blocks)]
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
        excluded += [n.name for n in prepared.graph.node
                     if n.name in set(float_nodes) and n.op_type in QUANTIZED_OPS and n.name not in excluded]
        quantized_path = Path(tmp) / "int8.onnx"
        calib = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
        # GEMM inputs only: DeiT-S INT8 on ONNX Runtime, 2 threads, paired with fp32: 1.65x -> 1.77x at batch 32
        extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                 **({"CalibPercentile": percentile} if method == "percentile" else {}), "CalibTensorRangeSymmetric": True,
                 "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS)}
        with progress(f"calibrate ({method})", total=len(reader)) as bar:
            reader.bar = bar
            try:
                quantize_static(
                    prepared, str(quantized_path), reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=op_types,
                    per_channel=per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=excluded, calibrate_method=calib, extra_options=extra, reduce_range=seven_bit,
                )
            except UsageError:
                raise
            except Exception as e:
                raise VitcError(f"INT8 quantization of {onnx_path} failed: {_first_line(e)}") from None
        quantized = onnx.load(str(quantized_path))
    name_nodes(quantized)
    calibration = {"method": method, "data": str(source), "split": "train", "num_samples": reader.num_samples,
                   "batch_size": batch_size, "seed": seed, "attention": attention, "per_channel": per_channel,
                   "weight_bits": 7 if seven_bit else 8, "float_blocks": sorted(float_blocks or [])}
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
