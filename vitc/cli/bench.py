from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vitc.cli.common import emit, format_table, human_count, json_option, model_options, parse_int_list


@click.command()
@click.argument("target", required=False)
@click.option("--compare", nargs=2, metavar="A B", default=None,
              help="Run targets A and B alternately (ABAB...) and report the speedup of B over A per batch size.")
@click.option("--backend", type=click.Choice(["auto", "torch", "onnxruntime", "tensorrt"]), default="auto", show_default=True,
              help="auto: torch for artifacts/names, onnxruntime for .onnx, tensorrt for .engine.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto (cuda when available).")
@click.option("--batch", "batches", default="1,8,32,64", show_default=True, metavar="B1,B2,...",
              help="Batch sizes (images per call), comma-separated.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16", "int8"]), default=None,
              help="torch: compute dtype [default fp32]. ONNX/engine: must match the file's own precision [default: the file's].")
@click.option("--warmup-ms", type=click.FloatRange(min=0), default=500.0, show_default=True, help="Warm-up per batch size, ms.")
@click.option("--min-iters", type=click.IntRange(min=1), default=50, show_default=True,
              help="Timed iterations per batch size, at least (and --min-seconds).")
@click.option("--min-seconds", type=click.FloatRange(min=0), default=3.0, show_default=True,
              help="Timed seconds per batch size, at least (and --min-iters).")
@click.option("--cuda-graph", is_flag=True, help="Replay CUDA graphs (torch, tensorrt; CUDA only).")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model (torch backend, CUDA only).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic input batch.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the JSON report to this file.")
@model_options
@json_option
def bench(target: str | None, compare: tuple[str, str] | None, backend: str, device: str, batches: str, precision: str | None,
          warmup_ms: float, min_iters: int, min_seconds: float, cuda_graph: bool, compile_: bool, seed: int, out: Path | None,
          pretrained: bool, checkpoint: Path | None, as_json: bool) -> None:
    """Throughput (images/s) and latency (ms) of TARGET per batch size, trtexec-style.

    TARGET is an artifact, a timm name, an ONNX file or a TensorRT engine; it runs through the
    backend it ships in on a synthetic batch of its own input shape, staged on the device (host
    transfers not timed). Per batch size: warm up --warmup-ms, then iterate until both --min-iters
    and --min-seconds are met; report images/s, latency min/median/mean/p90/p95/p99, GPU compute
    time where CUDA events exist, and the coefficient of variation (warning above 0.10).
    """
    from vitc.engines.bench import bench_target, compare_targets
    from vitc.errors import UsageError
    from vitc.fileio import write_json

    opts: dict[str, Any] = dict(backend=backend, device=device, batch_sizes=parse_int_list(batches, "--batch"), precision=precision,
                                warmup_ms=warmup_ms, min_iters=min_iters, min_seconds=min_seconds, seed=seed, compile=compile_,
                                cuda_graph=cuda_graph, pretrained=pretrained, checkpoint=str(checkpoint) if checkpoint else None)
    if compare is not None and target is None:
        result = compare_targets(compare[0], compare[1], **opts)
    elif target is not None and compare is None:
        result = bench_target(target, **opts)
    else:
        raise UsageError("give either TARGET or --compare A B, not both")
    if out is not None:
        write_json(out, result)
    emit(result, as_json, format_compare if compare else format_bench)


def _stats_row(r: dict[str, Any]) -> dict[str, Any]:
    lat, gpu = r["latency_ms"], r["gpu_compute_ms"]
    return {"batch": r["batch"], "ips": r["images_per_s"], "median": lat["median"], "mean": lat["mean"], "p90": lat["p90"],
            "p99": lat["p99"], "min": lat["min"], "gpu": gpu["median"] if gpu else None, "cv": r["cv"], "iters": r["iterations"]}


def format_bench(r: dict[str, Any]) -> str:
    """A bench report as a text table (the non-JSON output)."""
    head = f"{r['target']}: {r['backend']} {r['precision']} on {r['device']}"
    if r["macs"]:
        head += f", {human_count(r['macs'])} MACs/image"
    cols = [("batch", "batch"), ("ips", "img/s"), ("median", "median ms"), ("mean", "mean ms"), ("p90", "p90 ms"),
            ("p99", "p99 ms"), ("min", "min ms"), ("gpu", "GPU ms"), ("cv", "CV"), ("iters", "iters")]
    return head + "\n" + format_table([_stats_row(x) for x in r["results"]], cols)


def format_compare(r: dict[str, Any]) -> str:
    """A compare report as text: both targets, the analytic MACs ratio, speedup per batch size."""
    a, b = r["a"], r["b"]
    head = f"A = {a['target']} ({a['backend']} {a['precision']})\nB = {b['target']} ({b['backend']} {b['precision']})  on {a['device']}"
    if r["macs"]:
        head += f"\nanalytic MACs: A {human_count(r['macs']['a'])}, B {human_count(r['macs']['b'])}, A/B {r['macs']['ratio']:.3f}"
    rows = [{"batch": x["batch"], "a_ms": x["a"]["latency_ms"]["median"], "b_ms": x["b"]["latency_ms"]["median"],
             "a_ips": x["a"]["images_per_s"], "b_ips": x["b"]["images_per_s"], "speedup": x["speedup"],
             "paired": x["speedup_paired"], "rounds": x["rounds"]} for x in r["results"]]
    cols = [("batch", "batch"), ("a_ms", "A median ms"), ("b_ms", "B median ms"), ("a_ips", "A img/s"), ("b_ips", "B img/s"),
            ("speedup", "speedup B/A"), ("paired", "paired"), ("rounds", "rounds")]
    return head + "\n" + format_table(rows, cols)
