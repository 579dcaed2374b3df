from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vitc.backends.tensorrt.build import BuildSettings
from vitc.cli.common import emit, json_option, out_option
from vitc.cli.options import collect, settings_options


@click.command()
@click.argument("onnx", metavar="MODEL.onnx", type=click.Path(dir_okay=False, path_type=Path))
@out_option("Engine file to write (e.g. model.engine); its JSON sidecar goes to OUT.json.")
@settings_options(BuildSettings)
@json_option
@click.pass_context
def build(ctx: click.Context, onnx: Path, out: Path, as_json: bool, **params: Any) -> None:
    """Build a TensorRT engine from MODEL.onnx (TensorRT >= 10, strongly typed; needs an NVIDIA GPU).

    Precision comes from the ONNX: fp32, FP16 (vitc export --fp16) or INT8 Q/DQ (vitc quantize).
    One optimization profile covers batch MIN..MAX (tuned for OPT); image size and token counts
    are the ONNX's static shape. Writes OUT atomically plus OUT.json (TensorRT version, GPU,
    profile, precision, builder settings, source ONNX hash, vitc spec).
    """
    settings = collect(BuildSettings, params, ctx)
    from vitc.backends.tensorrt.build import build_engine

    emit(build_engine(onnx, out, settings), as_json, _human)


def _human(r: dict[str, Any]) -> str:
    gpu = (r.get("gpu") or {}).get("name", "?")
    batches = next(iter(r["profile"].values()))
    return (f"wrote {r['engine']} ({r['engine_bytes'] / 2**20:.1f} MiB, {r['precision']}, TensorRT {r['tensorrt']}, {gpu})\n"
            f"batch {batches['min'][0]}..{batches['max'][0]} (opt {batches['opt'][0]}); built in {r['build_seconds']:.1f} s; "
            f"timing cache {r['timing_cache']}{' (reused)' if r['timing_cache_reused'] else ''}")
