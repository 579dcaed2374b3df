from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vitc.cli.common import emit, json_option


@click.command()
@click.argument("onnx", metavar="MODEL.onnx", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--calib-data", required=True, metavar="SPEC",
              help="Real calibration images: digits | imagefolder:PATH (its train split; never synthetic).")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="INT8 Q/DQ ONNX to write (e.g. model.int8.onnx).")
@click.option("--num-samples", type=click.IntRange(min=1), default=512, show_default=True, help="Calibration images.")
@click.option("--method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax", show_default=True,
              help="Activation range calibration: minmax, entropy (KL), or percentile of |x|.")
@click.option("--percentile", type=click.FloatRange(min=0, max=100, min_open=True), default=99.999, show_default=True,
              help="Percentile (percent) for --method percentile.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Calibration batch (images).")
@click.option("--quantize-attention", is_flag=True,
              help="Also quantize attention's activation x activation matmuls (Q.K^T, P.V); off by default.")
@click.option("--check/--no-check", default=True, show_default=True, help="Run the TensorRT readiness check before writing.")
@json_option
def quantize(onnx: Path, calib_data: str, out: Path, num_samples: int, method: str, percentile: float, batch_size: int,
             quantize_attention: bool, check: bool, as_json: bool) -> None:
    """INT8 Q/DQ ONNX for TensorRT's explicit quantization, calibrated on real images.

    ONNX Runtime static quantization: QDQ format, symmetric signed INT8 activations (zero point 0),
    per-channel symmetric INT8 weights of MatMul/Gemm/Conv, float biases; the DynamicViT token-score
    path (predictor + TopK) stays float so the scores gain no INT8 error. MODEL.onnx must be the
    fp32 export; the result keeps its vitc metadata with precision int8.
    """
    from vitc.calibration.quantize import quantize_onnx

    result = quantize_onnx(onnx, calib_data, out, num_samples=num_samples, method=method, batch_size=batch_size,
                           percentile=percentile, attention=quantize_attention, check=check)
    emit(result, as_json, _human)


def _human(r: dict[str, Any]) -> str:
    c = r["calibration"]
    return (f"wrote {r['onnx']} (int8 Q/DQ, {r['quantize_linear']} QuantizeLinear / {r['dequantize_linear']} DequantizeLinear)\n"
            f"calibrated with {c['method']} on {c['num_samples']} {c['data']} {c['split']} images; "
            f"{r['excluded_nodes']} nodes kept float ({r['token_score_nodes']} token-score, "
            f"{0 if c['attention'] else r['attention_matmuls']} attention matmuls)"
            + ("\nTensorRT-ready: yes" if r["trt_ready"] else ""))
