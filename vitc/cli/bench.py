from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vitc.checks.settings import BenchSettings
from vitc.cli.common import emit, format_table, human_count, json_option, model_options
from vitc.cli.options import collect, settings_options


@click.command()
@click.argument("targets", metavar="[TARGET]...", nargs=-1)
@click.option("--compare", nargs=2, metavar="A B", default=None,
              help="Run targets A and B alternately (ABAB...) and report the speedup of B over A per batch size; the "
                   "two may differ in precision (e.g. model.onnx vs model.int8.onnx), each side is labelled.")
@settings_options(BenchSettings)
@click.option("--report", "report", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Also write the JSON report to FILE.")
@click.option("--out", "report_alias", type=click.Path(path_type=Path), default=None, hidden=True,
              help="Old spelling of --report.")
@click.option("--latency", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="LATENCY.json",
              help="A `vitc profile` latency model: show its prediction (latency, or speedup with several targets) beside "
                   "the measurement at the batch size it was profiled for.")
@model_options
@json_option
@click.pass_context
def bench(ctx: click.Context, targets: tuple[str, ...], compare: tuple[str, str] | None, report: Path | None,
          report_alias: Path | None, latency: Path | None, pretrained: bool, checkpoint: Path | None, as_json: bool,
          **params: Any) -> None:
    """Throughput (images/s) and latency (ms) of TARGET per batch size, trtexec-style.

    TARGET is an artifact, a timm name, an ONNX file, a TensorRT engine or an OpenVINO IR; it runs
    through the backend it ships in (or BACKEND:PATH, e.g. openvino:model.int8.onnx) on a synthetic
    batch of its own input shape, staged on the device (host transfers not timed). Per batch size:
    warm up --warmup-ms, then iterate until both --min-iters and --min-seconds are met; report
    images/s, latency min/median/mean/p90/p95/p99, GPU compute time where CUDA events exist, the
    coefficient of variation (warning above 0.10), achieved GFLOP/s (2 x MACs x images/s) and, on a
    CPU, its fraction of an fp32 2048^3 GEMM on the same threads. A static-batch ONNX is benched
    only at its own batch size.

    Several TARGETs: the first is the reference (say, the dense fp32 ONNX on onnxruntime) and all run
    round-robin; each gets its stacked speedup over the reference (reference time / its time) and
    its MACs ratio (its MACs / the reference's), across method x precision x backend.
    """
    from vitc.core.errors import UsageError

    settings = collect(BenchSettings, params, ctx)
    report = report or report_alias
    if report is not None:
        from vitc.core.fileio import check_output_file

        check_output_file(report)
    from vitc.checks.bench import bench_target, compare_targets
    from vitc.core.fileio import write_json

    ckpt = str(checkpoint) if checkpoint else None
    if latency is not None:  # before measuring: a profile of another model, backend, precision or batch is refused
        from vitc.checks.deployment import check_bench_predictions
        from vitc.core.latency import load_latency

        check_bench_predictions(load_latency(latency), list(compare) if compare else list(targets), settings)
    if compare is not None and not targets:
        result, fmt = compare_targets(compare[0], compare[1], settings, pretrained=pretrained, checkpoint=ckpt), format_compare
    elif len(targets) == 1 and compare is None:
        result, fmt = bench_target(targets[0], settings, pretrained=pretrained, checkpoint=ckpt), format_bench
    elif len(targets) > 1 and compare is None:
        from vitc.checks.bench import stack_targets

        result, fmt = stack_targets(targets, settings, pretrained=pretrained, checkpoint=ckpt), format_stack
    else:
        raise UsageError("give either TARGET or --compare A B, not both (several TARGETs: a stacked bench against the first)")
    if latency is not None:
        from vitc.checks.profile import add_predictions

        add_predictions(result, latency, list(compare) if compare else list(targets))
    if report is not None:
        write_json(report, result)
    emit(result, as_json, lambda r: fmt(r) + _prediction_lines(r))


def _stats_row(r: dict[str, Any]) -> dict[str, Any]:
    lat, gpu = r["latency_ms"], r["gpu_compute_ms"]
    return {"batch": r["batch"], "ips": r["images_per_s"], "median": lat["median"], "mean": lat["mean"], "p90": lat["p90"],
            "p99": lat["p99"], "min": lat["min"], "gpu": gpu["median"] if gpu else None, "cv": r["cv"], "iters": r["iterations"],
            "gflops": r.get("gflops"), "peak": r.get("peak_fraction")}


def _peak_line(peak: dict[str, Any] | None) -> str:
    return f"\nfp32 GEMM peak: {peak['gflops']:.1f} GFLOP/s ({peak['how']})" if peak else ""


def format_bench(r: dict[str, Any]) -> str:
    """A bench report as a text table (the non-JSON output)."""
    head = f"{r['target']}: {r['backend']} {r['precision']} on {r['device']}"
    if r["macs"]:
        head += f", {human_count(r['macs'])} MACs/image"
    cols = [("batch", "batch"), ("ips", "img/s"), ("median", "median ms"), ("mean", "mean ms"), ("p90", "p90 ms"),
            ("p99", "p99 ms"), ("min", "min ms"), ("gpu", "GPU ms"), ("cv", "CV"), ("iters", "iters"),
            ("gflops", "GFLOP/s"), ("peak", "of peak")]
    return head + _peak_line(r.get("peak")) + "\n" + format_table([_stats_row(x) for x in r["results"]], cols)


def format_compare(r: dict[str, Any]) -> str:
    """A compare report as text: both targets, the analytic MACs ratio, speedup per batch size."""
    a, b = r["a"], r["b"]
    head = f"A = {a['target']} ({a['label']})\nB = {b['target']} ({b['label']})"
    if r["macs"]:
        head += (f"\nanalytic MACs: A {human_count(r['macs']['a'])}, B {human_count(r['macs']['b'])}, "
                 f"MACs ratio B/A {r['macs']['macs_ratio']:.3f}")
    rows = [{"batch": x["batch"], "a_ms": x["a"]["latency_ms"]["median"], "b_ms": x["b"]["latency_ms"]["median"],
             "a_ips": x["a"]["images_per_s"], "b_ips": x["b"]["images_per_s"], "speedup": x["speedup"],
             "paired": x["speedup_paired"], "rounds": x["rounds"]} for x in r["results"]]
    cols = [("batch", "batch"), ("a_ms", "A median ms"), ("b_ms", "B median ms"), ("a_ips", "A img/s"), ("b_ips", "B img/s"),
            ("speedup", "speedup B/A"), ("paired", "paired"), ("rounds", "rounds")]
    return head + "\n" + format_table(rows, cols)


def format_stack(r: dict[str, Any]) -> str:
    """A stacked report as text: per batch size, every target's speedup over the reference."""
    ref = r["reference"]
    head = f"reference = {ref['target']} ({ref['label']}); speedup = reference time / target time" + _peak_line(ref.get("peak"))
    ratios = {t["target"]: t["macs_ratio"] for t in r["targets"]}
    rows = [{"target": x["target"], "label": x["label"], "batch": res["batch"], "ips": x["images_per_s"],
             "median": x["latency_ms"]["median"], "speedup": x["speedup"], "paired": x["speedup_paired"],
             "gflops": x.get("gflops"), "peak": x.get("peak_fraction"), "macs": ratios.get(x["target"])}
            for res in r["results"] for x in res["rows"]]
    cols = [("target", "target"), ("label", "runs as"), ("batch", "batch"), ("ips", "img/s"), ("median", "median ms"),
            ("speedup", "speedup"), ("paired", "paired"), ("gflops", "GFLOP/s"), ("peak", "of peak"), ("macs", "MACs ratio")]
    return head + "\n" + format_table(rows, cols)


def _prediction_lines(r: dict[str, Any]) -> str:
    """What ``--latency`` predicted, beside the measured table above it."""
    p = r.get("prediction")
    if not p:
        return ""
    lines = [f"\npredicted by {p['latency']} (profiled at batch {p['batch_size']}, {p['profile']['backend']} "
             f"{p['profile']['precision']} on {p['profile']['device']}):"]
    for res in r.get("results", []):
        if "predicted_speedup" in res:
            lines.append(f"  batch {res['batch']}: speedup predicted {res['predicted_speedup']:.2f}x, measured "
                         f"{res['speedup_paired']:.2f}x (paired)")
        if "predicted_latency_ms" in res:
            lines.append(f"  batch {res['batch']}: latency predicted {res['predicted_latency_ms']:.2f} ms, measured "
                         f"{res['latency_ms']['median']:.2f} ms (median)")
        for row in res.get("rows", [])[1:]:
            if "predicted_speedup" in row:
                lines.append(f"  batch {res['batch']} {row['target']}: speedup predicted {row['predicted_speedup']:.2f}x, "
                             f"measured {row['speedup_paired']:.2f}x (paired)")
    return "\n".join(lines)
