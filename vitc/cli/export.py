from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vitc.cli.common import emit, json_option, model_options, out_option
from vitc.cli.options import collect, settings_options
from vitc.core.errors import CheckFailed, UsageError
from vitc.onnx.settings import ExportSettings


@click.command()
@click.argument("source", metavar="ARTIFACT")
@out_option("ONNX file to write (e.g. model.onnx); written atomically, only if the checks pass.", required=False)
@settings_options(ExportSettings)
@click.option("--check-only", is_flag=True, help="Only run the TensorRT readiness check on ARTIFACT, an existing .onnx file.")
@model_options
@json_option
@click.pass_context
def export(ctx: click.Context, source: str, out: Path | None, check_only: bool, pretrained: bool,
           checkpoint: Path | None, as_json: bool, **params: Any) -> None:
    """Export ARTIFACT (vitc artifact of any kind, or a timm name) to a TensorRT-ready ONNX.

    torch.onnx.export(dynamo=True): LayerNormalization as one op, attention as MatMul/Softmax,
    token selection as TopK with constant K; the batch is dynamic unless --static-batch N, every
    other dimension static. Compressed artifacts are materialized first (UVC sliced). The ONNX
    carries the spec, precision, kind and keep ratio in its metadata. Before writing, the TensorRT
    readiness check (ops against TensorRT's ONNX parser matrix, static shapes, TopK K <= 3840, no
    com.microsoft ops) and one ONNX Runtime vs PyTorch parity check run (--data, default random
    images; fp32 atol 1e-4/rtol 1e-3 elemwise, fp16 1e-2 mean); either failing exits 1 and writes
    nothing.

    `vitc export --check-only model.onnx` runs only the readiness check (exit 1 naming the node).
    """
    settings = collect(ExportSettings, params, ctx)
    if check_only:
        from vitc.onnx.readiness import check_trt_ready

        summary = check_trt_ready(source, raise_on_fail=False)
        emit({"onnx": source, **summary}, as_json, _human_check)
        if not summary["ready"]:
            raise CheckFailed(summary["message"])
        return
    if out is None:
        raise UsageError("--out is required (or use --check-only MODEL.onnx)")
    from vitc.checks.export import export_verified

    result = export_verified(source, out, settings, pretrained=pretrained,
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
