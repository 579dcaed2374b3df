from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vitc.backends import BACKENDS, BUILDERS
from vitc.backends.openvino_build import OpenVinoBuildSettings
from vitc.backends.tensorrt.build import BuildSettings
from vitc.cli.common import emit, json_option, out_option
from vitc.cli.options import collect, settings_options
from vitc.core.errors import UsageError
from vitc.core.settings import fields, flag_of

_SETTINGS = {"tensorrt": BuildSettings, "openvino": OpenVinoBuildSettings}  # the option sets declared below


@click.command()
@click.argument("onnx", metavar="MODEL.onnx", type=click.Path(dir_okay=False, path_type=Path))
@out_option("File to write: a TensorRT engine (e.g. model.engine; its JSON sidecar goes to OUT.json), or with "
            "--backend openvino the IR's .xml (weights to .bin beside it).")
@click.option("--backend", type=click.Choice(BUILDERS), default="tensorrt", show_default=True,
              help="tensorrt: an engine for this GPU; openvino: an OpenVINO IR compiled and cached for this CPU.")
@settings_options(BuildSettings)
@settings_options(OpenVinoBuildSettings)
@json_option
@click.pass_context
def build(ctx: click.Context, onnx: Path, out: Path, backend: str, as_json: bool, **params: Any) -> None:
    """Build a deployable file from MODEL.onnx: a TensorRT engine (default) or an OpenVINO IR.

    Precision comes from the ONNX: fp32, FP16 (vitc export --fp16) or INT8 Q/DQ (vitc quantize).

    TensorRT (>= 10, strongly typed; needs an NVIDIA GPU): one optimization profile covers batch
    MIN..MAX (tuned for OPT); image size and token counts are the ONNX's static shape. Writes OUT
    atomically plus OUT.json (TensorRT version, GPU, profile, precision, builder settings, source
    ONNX hash, vitc spec).

    OpenVINO (CPU): writes the IR OUT.xml + OUT.bin as ovc does, weights at the ONNX's precision,
    vitc's metadata in its rt_info, and compiles it once into the cache (--cache-dir, default
    ov_cache beside OUT), so vitc eval/bench OUT.xml start from the compiled model.
    """
    for name, cls in _SETTINGS.items():
        if name == backend:
            continue
        for f, spec, _ in fields(cls):
            if ctx.get_parameter_source(f.name) not in (click.core.ParameterSource.DEFAULT, None):
                raise UsageError(f"{flag_of(f.name, spec)} applies to --backend {name}, not {backend}")
            params.pop(f.name, None)
    settings = collect(_SETTINGS[backend], params, ctx)
    result = BACKENDS[backend].build(onnx, out, settings)
    emit(result, as_json, _human_trt if backend == "tensorrt" else _human_ov)


def _human_trt(r: dict[str, Any]) -> str:
    gpu = (r.get("gpu") or {}).get("name", "?")
    batches = next(iter(r["profile"].values()))
    return (f"wrote {r['engine']} ({r['engine_bytes'] / 2**20:.1f} MiB, {r['precision']}, TensorRT {r['tensorrt']}, {gpu})\n"
            f"batch {batches['min'][0]}..{batches['max'][0]} (opt {batches['opt'][0]}); built in {r['build_seconds']:.1f} s; "
            f"timing cache {r['timing_cache']}{' (reused)' if r['timing_cache_reused'] else ''}")


def _human_ov(r: dict[str, Any]) -> str:
    return (f"wrote {r['ir']} + {Path(r['weights']).name} ({r['ir_bytes'] / 2**20:.1f} MiB, {r['precision']}, inference "
            f"precision {r['inference_precision']}, OpenVINO {r['openvino'].split('-')[0]})\n"
            f"compiled in {r['compile_seconds']:.1f} s ({r['threads']} threads); cache {r['cache_dir']}")
