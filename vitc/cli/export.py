from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vitc.cli.common import emit, json_option, model_options
from vitc.errors import CheckFailed, UsageError


@click.command()
@click.argument("source", metavar="ARTIFACT")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="ONNX file to write (e.g. model.onnx); written atomically, only if the checks pass.")
@click.option("--opset", type=click.Choice(["18", "19", "20"]), default="18", show_default=True,
              help="ONNX opset (dynamo export needs >= 18; TensorRT 10 parses <= 20).")
@click.option("--batch", type=click.IntRange(min=1), default=None, help="Export a static batch of N images.")
@click.option("--dynamic-batch", is_flag=True, help="Dynamic batch axis (the default; traced at batch 2).")
@click.option("--fp16", is_flag=True,
              help="FP16 model converted from the checked FP32 graph (onnxruntime float16 converter): FP32 "
                   "input/output, FP16 matmuls/GELU/adds; LayerNorm and softmax (overflow/precision) and the "
                   "DynamicViT token-score path (predictor + TopK, so scores are not rounded) stay FP32. Tokens "
                   "whose scores nearly tie can still flip, since the predictor reads FP16 activations.")
@click.option("--keep-ratio", type=float, default=None,
              help="DynamicViT artifacts: keep ratio rho in (0, 1] (default: the trained one).")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Check ONNX Runtime against PyTorch once before writing (default tolerances for the precision).")
@click.option("--data", default="random", show_default=True, metavar="SPEC|random",
              help="Images for the parity check: random (seeded uniform [0,1) pixels) or digits | imagefolder:PATH.")
@click.option("--check/--no-check", default=True, show_default=True, help="Run the TensorRT readiness check before writing.")
@click.option("--check-only", is_flag=True, help="Only run the TensorRT readiness check on ARTIFACT, an existing .onnx file.")
@model_options
@json_option
def export(source: str, out: Path | None, opset: str, batch: int | None, dynamic_batch: bool, fp16: bool,
           keep_ratio: float | None, verify: bool, data: str, check: bool, check_only: bool, pretrained: bool,
           checkpoint: Path | None, as_json: bool) -> None:
    """Export ARTIFACT (vitc artifact of any kind, or a timm name) to a TensorRT-ready ONNX.

    torch.onnx.export(dynamo=True): LayerNormalization as one op, attention as MatMul/Softmax,
    DynamicViT token selection as TopK with constant K; the batch is dynamic unless --batch N, every
    other dimension static. UVC artifacts are sliced first. The ONNX carries the spec, precision,
    kind and keep ratio in its metadata. Before writing, the TensorRT readiness check (ops against
    TensorRT's ONNX parser matrix, static shapes, TopK K <= 3840, no com.microsoft ops) and one
    ONNX Runtime vs PyTorch parity check run (--data, default random images; fp32 atol 1e-4/rtol 1e-3
    elemwise, fp16 1e-2 mean); either failing exits 1 and writes nothing.

    `vitc export --check-only model.onnx` runs only the readiness check (exit 1 naming the node).
    """
    if check_only:
        from vitc.export.readiness import check_trt_ready

        summary = check_trt_ready(source, raise_on_fail=False)
        emit({"onnx": source, **summary}, as_json, _human_check)
        if not summary["ready"]:
            raise CheckFailed(summary["message"])
        return
    if out is None:
        raise UsageError("--out is required (or use --check-only MODEL.onnx)")
    if batch is not None and dynamic_batch:
        raise UsageError("--batch N (static) and --dynamic-batch exclude each other")
    from vitc.export.onnx_export import export_onnx

    result = export_onnx(source, out, opset=int(opset), batch=batch, fp16=fp16, verify=verify, data=data,
                         keep_ratio=keep_ratio, check=check, pretrained=pretrained,
                         checkpoint=str(checkpoint) if checkpoint else None)
    emit(result, as_json, _human)


def _shape(dims: list[Any] | None) -> str:
    return "[" + ", ".join(str(d) for d in (dims or [])) + "]"


def _human(r: dict[str, Any]) -> str:
    lines = [
        f"wrote {r['onnx']} ({r['precision']}, opset {r['opset']}, batch {r['batch']}, {r['nodes']} nodes, {r['bytes'] / 2**20:.2f} MiB)",
        f"{r['input']['name']} {_shape(r['input']['shape'])} -> {r['output']['name']} {_shape(r['output']['shape'])}"
        + (f"; TopK K = {', '.join(str(t['k']) for t in r['topk'])}" if r["topk"] else ""),
    ]
    if r["trt_ready"] is not None:
        lines.append("TensorRT-ready: yes (onnx-tensorrt 10.1 operator matrix, static token counts)")
    if r["verify"] is not None:
        v = r["verify"]
        lines.append(f"verify: {'PASSED' if v['passed'] else 'FAILED'} vs PyTorch on {v['images']} {v['data']} images: "
                     f"max abs {v['max_abs']:.3g}, top-1 agreement {v['top1_agreement']:.2f}%")
    return "\n".join(lines)


def _human_check(r: dict[str, Any]) -> str:
    if not r["ready"]:
        return "\n".join(["NOT TensorRT-ready:"] + [f"  {v}" for v in r["violations"]])
    topk = ", ".join(f"{t['node']} K={t['k']}" for t in r["topk"]) or "none"
    return (f"TensorRT-ready: {r['onnx']} (opset {r['opset']}, {r['nodes']} nodes, batch {r['batch']}; TopK: {topk})\n"
            f"checked against {r['checked_against']}")
