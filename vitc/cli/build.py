from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vitc.cli.common import emit, json_option


@click.command()
@click.argument("onnx", metavar="MODEL.onnx", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Engine file to write (e.g. model.engine); its JSON sidecar goes to OUT.json.")
@click.option("--min-batch", type=click.IntRange(min=1), default=1, show_default=True, help="Smallest batch (images) the engine accepts.")
@click.option("--opt-batch", type=click.IntRange(min=1), default=32, show_default=True, help="Batch (images) TensorRT tunes kernels for.")
@click.option("--max-batch", type=click.IntRange(min=1), default=64, show_default=True, help="Largest batch (images) the engine accepts.")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Timing cache file to load (if present) and update  [default: timing.cache beside OUT].")
@click.option("--workspace-gb", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True,
              help="Builder workspace memory pool limit, GiB.")
@click.option("--builder-level", type=click.IntRange(0, 5), default=3, show_default=True,
              help="TensorRT builder optimization level 0-5 (higher: longer build, maybe faster engine).")
@click.option("--verbose", is_flag=True, help="Show TensorRT's verbose log on stderr.")
@json_option
def build(onnx: Path, out: Path, min_batch: int, opt_batch: int, max_batch: int, timing_cache: Path | None,
          workspace_gb: float, builder_level: int, verbose: bool, as_json: bool) -> None:
    """Build a TensorRT engine from MODEL.onnx (TensorRT >= 10, strongly typed; needs an NVIDIA GPU).

    Precision comes from the ONNX: fp32, FP16 (vitc export --fp16) or INT8 Q/DQ (vitc quantize).
    One optimization profile covers batch MIN..MAX (tuned for OPT); image size and token counts
    are the ONNX's static shape. Writes OUT atomically plus OUT.json (TensorRT version, GPU,
    profile, precision, builder settings, source ONNX hash, vitc spec).
    """
    from vitc.engines.trt_build import build_engine

    result = build_engine(onnx, out, min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch, timing_cache=timing_cache,
                          workspace_gb=workspace_gb, builder_level=builder_level, verbose=verbose)
    emit(result, as_json, _human)


def _human(r: dict[str, Any]) -> str:
    gpu = (r.get("gpu") or {}).get("name", "?")
    batches = next(iter(r["profile"].values()))
    return (f"wrote {r['engine']} ({r['engine_bytes'] / 2**20:.1f} MiB, {r['precision']}, TensorRT {r['tensorrt']}, {gpu})\n"
            f"batch {batches['min'][0]}..{batches['max'][0]} (opt {batches['opt'][0]}); built in {r['build_seconds']:.1f} s; "
            f"timing cache {r['timing_cache']}{' (reused)' if r['timing_cache_reused'] else ''}")
