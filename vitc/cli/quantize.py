from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vitc.cli.common import emit, json_option, out_option
from vitc.cli.options import collect, settings_options
from vitc.onnx.settings import QuantizeSettings


@click.command()
@click.argument("onnx", metavar="MODEL.onnx", type=click.Path(dir_okay=False, path_type=Path))
@out_option("INT8 Q/DQ ONNX to write (e.g. model.int8.onnx).")
@settings_options(QuantizeSettings)
@json_option
@click.pass_context
def quantize(ctx: click.Context, onnx: Path, out: Path, as_json: bool, **params: Any) -> None:
    """INT8 Q/DQ ONNX for TensorRT's explicit quantization, calibrated on real images.

    ONNX Runtime static quantization: QDQ format, symmetric signed INT8 activations (zero point 0),
    per-channel symmetric INT8 weights of MatMul/Gemm (the patch-embedding Conv stays float), float
    biases; the token-score path of token-selection models (predictor + TopK) stays float so the
    scores gain no INT8 error.
    MODEL.onnx must be the fp32 export; the result keeps its vitc metadata with precision int8.
    """
    s = collect(QuantizeSettings, params, ctx)
    from vitc.onnx.quantize import quantize_onnx

    result = quantize_onnx(onnx, s.data, out, num_samples=s.num_samples, method=s.method, batch_size=s.batch_size,
                           percentile=s.percentile, attention=s.attention, per_channel=s.per_channel,
                           reduce_range=s.reduce_range, check=s.check, seed=s.seed, float_blocks=s.float_blocks)
    emit(result, as_json, _human)


def _human(r: dict[str, Any]) -> str:
    c = r["calibration"]
    return (f"wrote {r['onnx']} (int8 Q/DQ, {r['quantize_linear']} QuantizeLinear / {r['dequantize_linear']} DequantizeLinear)\n"
            f"calibrated with {c['method']} on {c['num_samples']} {c['data']} {c['split']} images; "
            f"{r['excluded_nodes']} nodes kept float ({r['token_score_nodes']} token-score, "
            f"{0 if c['attention'] else r['attention_matmuls']} attention matmuls)"
            + ("\nTensorRT-ready: yes" if r["trt_ready"] else ""))
