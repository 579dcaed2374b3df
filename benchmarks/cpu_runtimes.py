#!/usr/bin/env python
"""DeiT-S shapes on the CPU through every runtime × precision, stacked against dense ONNX Runtime fp32:

    python -m benchmarks.cpu_runtimes                      # batch 32 and 1, 2 threads -> runs/cpu_runtimes/

Variants (throughput depends on shapes, not weights: seeded random weights, vitc's own ONNX files):
dense DeiT-S, and a UVC-like architecture that keeps 4 of the 12 blocks at full width with DynamicViT
token selection at ρ 0.7 on top (floor(196·0.7^s) patch tokens before blocks 1, 2, 3: 0.239 of the
dense MACs). Each is exported to fp32 ONNX and quantized to INT8 Q/DQ by ``vitc quantize`` (calibrated
on digits images resized to 224², enough for a speed measurement; accuracy is not measured here).
Runtimes: ONNX Runtime and OpenVINO (LATENCY hint, f32 inference precision for fp32 files).

All eight (variant × precision × runtime) runners are timed round-robin in one process
(:func:`vitc.checks.bench.stack_report`, ``vitc bench REF T1 T2 ...``), so every speedup is paired with
the reference — dense fp32 on ONNX Runtime — and machine drifts hit all of them alike. Also reported:
achieved GFLOP/s and its fraction of an fp32 2048³ GEMM on the same threads. Writes
``OUT/cpu_runtimes.json`` and ``OUT/cpu_runtimes.md``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from benchmarks.shapes import DENSE_MODEL, dense_artifact, save_shape, with_tokens

KEEP_BLOCKS = 4
KEEP_RATIO = 0.7
CALIB_DATA, CALIB_SAMPLES, CALIB_BATCH = "digits", 32, 8


def shapes(out: Path, model: str) -> dict[str, Path]:
    """``{"dense": artifact, "uvc4+dvt0.7": artifact}``: the dense model and the combined stand-in."""
    from vitc.core.artifacts import read_header

    dense = dense_artifact(model, out)
    spec = read_header(dense)[0]
    four = spec.replace(name=f"{spec.name}-{KEEP_BLOCKS}blocks", blocks=spec.blocks[:KEEP_BLOCKS])
    combined, _ = with_tokens(four, KEEP_RATIO)
    name = f"uvc{KEEP_BLOCKS}+dvt{KEEP_RATIO:g}"
    return {"dense": dense, name: save_shape(combined, out / f"{name}.safetensors", method="hand-built",
                                              keep_ratio=KEEP_RATIO)}


def deploy(artifact: Path) -> dict[str, Path]:
    """fp32 ONNX and INT8 Q/DQ ONNX beside ``artifact`` (vitc's one deploy path; reused when present)."""
    from vitc.backends.deploy import DeploySettings
    from vitc.backends.deploy import deploy as make
    from vitc.onnx.settings import ExportSettings, QuantizeSettings

    settings = DeploySettings(export=ExportSettings(verify=False, check=False),
                              quantize=QuantizeSettings(data=CALIB_DATA, num_samples=CALIB_SAMPLES, batch_size=CALIB_BATCH,
                                                        check=False))
    return {p: make(artifact, "onnxruntime", p, settings) for p in ("fp32", "int8")}


def time_budget(latency: str | os.PathLike[str], dense: Path, combined: Path) -> dict[str, Any]:
    """Where the combined model's time goes against its ideal (dense time x MACs ratio), part by part, by the
    latency model of ``latency`` (a ``vitc profile`` of the dense model at the batch size in question)."""
    from vitc.core.artifacts import read_header
    from vitc.core.flops import head_macs, model_macs, patch_embed_macs, per_block_macs
    from vitc.core.latency import load_latency

    model = load_latency(latency)
    parts: dict[str, dict[str, float]] = {}
    for name, artifact in (("dense", dense), ("combined", combined)):
        spec = read_header(artifact)[0]
        pred = model.predict(spec, str(artifact))
        macs = per_block_macs(spec)
        rows = {"fixed (patch embedding, head, the call)": (pred["fixed_ms"], patch_embed_macs(spec) + head_macs(spec)),
                "blocks": (sum(b["block_ms"] for b in pred["blocks"]), sum(m.total - m.predictor for m in macs)),
                "token selection (predictors, TopK, gather)": (sum(b["selection_ms"] for b in pred["blocks"]),
                                                               sum(m.predictor for m in macs)),
                "total": (pred["latency_ms"], model_macs(spec))}
        for part, (ms, part_macs) in rows.items():
            parts.setdefault(part, {})[f"{name}_ms"] = ms
            parts[part][f"{name}_macs"] = part_macs
    per_mac = parts["total"]["dense_ms"] / parts["total"]["dense_macs"]  # the dense model's ms per MAC: "ideal" scaling
    for row in parts.values():
        row["ideal_ms"] = row["combined_macs"] * per_mac
        row["over_ideal_ms"] = row["combined_ms"] - row["ideal_ms"]
    total = parts["total"]
    return {"latency": str(latency), "batch_size": model.target["batch_size"], "parts": parts,
            "ideal_speedup": total["dense_macs"] / total["combined_macs"],
            "predicted_speedup": total["dense_ms"] / total["combined_ms"]}


def budget_markdown(budget: dict[str, Any]) -> str:
    lines = [f"Where the combined model's time goes at batch {budget['batch_size']} (latency model {budget['latency']}): "
             f"ideal {budget['ideal_speedup']:.2f}x (1 / MACs ratio), predicted {budget['predicted_speedup']:.2f}x.", "",
             "| part | dense ms | combined ms | combined MACs (M) | ideal ms | over ideal ms | share of the shortfall |",
             "|---|---|---|---|---|---|---|"]
    short = budget["parts"]["total"]["over_ideal_ms"]
    for part, r in budget["parts"].items():
        share = "" if part == "total" or short <= 0 else f"{100 * r['over_ideal_ms'] / short:.0f}%"
        lines.append(f"| {part} | {r['dense_ms']:.2f} | {r['combined_ms']:.2f} | {r['combined_macs'] / 1e6:.0f} | "
                     f"{r['ideal_ms']:.2f} | {r['over_ideal_ms']:+.2f} | {share} |")
    return "\n".join(lines) + "\n"


def markdown(report: dict[str, Any], names: dict[str, str]) -> str:
    """One table per batch size: images/s, speedup over the reference (median and paired), GFLOP/s, share of the GEMM
    peak of the file's own precision (timed in the same rounds)."""
    ref = report["targets"][0]
    lines = [f"Reference: {names[ref['target']]} ({ref['label']}). Speedup = reference median latency / variant's "
             "(paired: median of per-round ratios). MACs ratio = variant MACs / dense MACs. Of peak: of a GEMM of the "
             "file's precision timed in the same rounds."]
    ratios = {t["target"]: t["macs_ratio"] for t in report["targets"]}
    for res in report["results"]:
        peaks = ", ".join(f"{p['precision']} {p['gflops']:.1f} GFLOP/s" for p in res["peaks"] if p.get("gflops"))
        lines += ["", f"GEMM peaks at batch {res['batch']}: {peaks or 'not timed'}.", "",
                  f"| batch {res['batch']} | MACs ratio | images/s | speedup | paired | GFLOP/s | of peak |",
                  "|---|---|---|---|---|---|---|"]
        for x in res["rows"]:
            frac = "-" if x["peak_fraction"] is None else f"{x['peak_fraction']:.2f}"
            lines.append(f"| {names[x['target']]} | {ratios[x['target']]:.3f} | {x['images_per_s']:.1f} | "
                         f"{x['speedup']:.2f}x | {x['speedup_paired']:.2f}x | {x['gflops']:.0f} | {frac} |")
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--model", default=DENSE_MODEL, show_default=True, help="Dense model: timm name, vitc config or artifact.")
@click.option("--batch", "batches", default="32,1", show_default=True, help="Batch sizes (images).")
@click.option("--threads", type=int, default=2, show_default=True, help="Intra-op threads of every runtime (and the GEMM peak).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/cpu_runtimes"), show_default=True)
@click.option("--warmup-ms", type=float, default=1000.0, show_default=True)
@click.option("--min-iters", type=int, default=5, show_default=True)
@click.option("--min-seconds", type=float, default=10.0, show_default=True)
@click.option("--latency", "latencies", multiple=True, type=click.Path(dir_okay=False),
              help="A `vitc profile` of the dense model (repeatable, one per batch size): adds where the combined "
                   "model's time goes against its ideal speedup.")
def main(model: str, batches: str, threads: int, out: Path, warmup_ms: float, min_iters: int, min_seconds: float,
         latencies: tuple[str, ...]) -> None:
    """DeiT-S shapes x {ONNX Runtime, OpenVINO} x {fp32, INT8}, stacked on dense ONNX Runtime fp32."""
    os.environ["OMP_NUM_THREADS"] = str(threads)  # both runners default to it; the peak follows the runners
    from benchmarks import write_results
    from vitc.checks.bench import bench_targets
    from vitc.core.errors import VitcError
    from vitc.core.progress import log
    from vitc.core.validation import parse_int_list

    try:
        out.mkdir(parents=True, exist_ok=True)
        targets, names = [], {}
        variants = shapes(out, model)
        budgets = [time_budget(lat, *variants.values()) for lat in latencies]
        for variant, artifact in variants.items():
            files = deploy(artifact)
            for backend in ("onnxruntime", "openvino"):
                for precision, path in files.items():
                    target = f"{backend}:{path}"
                    targets.append(target)
                    names[target] = f"{variant}, {'ONNX Runtime' if backend == 'onnxruntime' else 'OpenVINO'} {precision}"
        log(f"timing {len(targets)} runners round-robin, {threads} threads each")
        report = bench_targets(targets, device="cpu", batch_sizes=parse_int_list(batches, "--batch"), warmup_ms=warmup_ms,
                               min_iters=min_iters, min_seconds=min_seconds).to_dict()
    except VitcError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    report["variants"] = names
    report["calibration"] = {"data": CALIB_DATA, "num_samples": CALIB_SAMPLES, "batch_size": CALIB_BATCH}
    report["time_budget"] = budgets
    table = "\n".join([markdown(report, names), *(budget_markdown(b) for b in budgets)])
    write_results(out, "cpu_runtimes", report, table)
    click.echo(table)


if __name__ == "__main__":
    main()
