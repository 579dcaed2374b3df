from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vitc.cli.common import emit, json_option


def _human(r: dict[str, Any]) -> str:
    files = r["report"]
    skipped = f", {len(r['stages_skipped'])} skipped (unchanged)" if r["stages_skipped"] else ""
    return (f"{r['table']}\n\n{len(r['stages_run'])} stages run{skipped} in {r['meta']['seconds']:.0f}s\n"
            f"report: {files['markdown']}  {files['json']}  {files['plot']}")


@click.command()
@click.argument("pipeline", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default: the YAML's `out`, else runs/pipeline).")
@click.option("--resume", is_flag=True, help="Skip stages whose inputs and options are unchanged; continue interrupted training.")
@json_option
def run(pipeline: Path, out: Path | None, resume: bool, as_json: bool) -> None:
    """Run the whole chain described by PIPELINE.yaml and write the report.

    Stages: baseline → compress → materialize → export → verify → quantize → build (when TensorRT
    is installed) → eval (each variant through its deployed backend) → bench → report. The YAML is
    validated before any work; see examples/ and the README for the keys.
    """
    from vitc.pipeline import run_pipeline
    from vitc.pipeline_config import load_config

    cfg = load_config(pipeline)
    emit(run_pipeline(cfg, out, resume), as_json, _human)


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/demo"), show_default=True,
              help="Output folder: one sub-folder per variant, plus report.md, report.json and pareto.png.")
@click.option("--fast", is_flag=True, help="A few epochs per stage (< 3 min): checks the toolchain, not accuracy.")
@click.option("--resume", is_flag=True, help="Skip stages already done in OUT.")
@json_option
def demo(out: Path, fast: bool, resume: bool, as_json: bool) -> None:
    """End to end on the embedded digits data with vit-micro, on CPU.

    Trains the baseline, compresses it with UVC (budget 0.5) and DynamicViT (rho 0.7, materialized
    at 0.5/0.7/0.9), exports fp32/fp16/INT8 ONNX, verifies, evaluates, benchmarks and writes
    OUT/report.md, OUT/report.json and OUT/pareto.png. About 20 min on 2 CPU cores; --fast < 3 min.
    """
    from vitc.demo import demo_config
    from vitc.pipeline import run_pipeline

    emit(run_pipeline(demo_config(fast), out, resume), as_json, _human)
