from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vitc.checks.settings import BenchSettings
from vitc.cli.common import emit, json_option, model_options
from vitc.cli.options import collect, settings_options


@click.command()
@click.argument("targets", metavar="[TARGET]...", nargs=-1)
@click.option("--compare", nargs=2, metavar="A B", default=None,
              help="Bench B against A (the reference): the same as `vitc bench A B`. The two may differ in precision "
                   "(e.g. model.onnx vs model.int8.onnx); each side is labelled.")
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
    """Throughput (images/s) and latency (ms) of each TARGET per batch size, trtexec-style, round-robin.

    TARGET is an artifact, a timm name, an ONNX file, a TensorRT engine or an OpenVINO IR; it runs
    through the backend it ships in (or BACKEND:PATH, e.g. openvino:model.int8.onnx) on a synthetic
    batch of its own input shape, staged on the device (host transfers not timed). Per batch size:
    each target warms up for --warmup-ms, then all run in turn (T1, T2, ..., T1, T2, ...) until each
    has --min-iters iterations and --min-seconds of timed latency. Reported per target: images/s,
    latency median/p90/p99, GPU compute time where CUDA events exist, the coefficient of variation
    (warning above 0.10), achieved GFLOP/s (2 x MACs x images/s) and its share of a GEMM of the same
    precision timed in the same rounds (--no-peak skips it). A static-batch ONNX is benched only at
    its own batch size.

    Several TARGETs (or --compare A B): the first is the reference (say, the dense fp32 ONNX on
    onnxruntime); every other one gets its speedup over it (reference time / its time; paired: the
    median of the per-round ratios, with its IQR) and its MACs ratio, across method x precision x
    backend. One JSON shape (format vitc.bench/2) for one target or many.
    """
    from vitc.core.errors import UsageError

    settings = collect(BenchSettings, params, ctx)
    report = report or report_alias
    if compare is not None and targets:
        raise UsageError("give TARGET... or --compare A B, not both (several TARGETs: each against the first)")
    names = list(compare) if compare is not None else list(targets)
    if not names:
        raise UsageError("give at least one TARGET (or --compare A B)")
    if report is not None:
        from vitc.core.fileio import check_output_file

        check_output_file(report)
    latency_model = None
    if latency is not None:  # before measuring: a profile of another model, backend, precision or batch is refused
        from vitc.checks.predict import check_bench_predictions
        from vitc.core.latency import load_latency

        latency_model = load_latency(latency)
        check_bench_predictions(latency_model, names, settings)
    from vitc.checks.bench import bench_targets
    from vitc.core.fileio import write_json

    result = bench_targets(names, settings, pretrained=pretrained, checkpoint=str(checkpoint) if checkpoint else None)
    if latency_model is not None:
        from vitc.checks.predict import add_predictions

        add_predictions(result, latency_model)
    if report is not None:
        write_json(report, result.to_dict())
    emit(result.to_dict(), as_json, lambda _: result.to_text())
