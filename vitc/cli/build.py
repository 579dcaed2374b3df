from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vitc.backends import BACKENDS, BUILDERS
from vitc.cli.common import emit, json_option, out_option
from vitc.cli.options import collect, settings_options
from vitc.core.errors import UsageError
from vitc.core.settings import fields, flag_of

_SETTINGS = {name: BACKENDS[name].build_settings_class() for name in BUILDERS}  # the option sets declared below


def _build_options(f: Any) -> Any:
    for cls in reversed(_SETTINGS.values()):
        f = settings_options(cls)(f)
    return f


@click.command()
@click.argument("onnx", metavar="MODEL.onnx", type=click.Path(dir_okay=False, path_type=Path))
@out_option("File to write: a TensorRT engine (e.g. model.engine; its JSON sidecar goes to OUT.json), or with "
            "--backend openvino the IR's .xml (weights to .bin beside it).")
@click.option("--backend", type=click.Choice(BUILDERS), default=BUILDERS[0], show_default=True,
              help="tensorrt: an engine for this GPU; openvino: an OpenVINO IR compiled and cached for this CPU.")
@_build_options
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
    emit(result, as_json, BACKENDS[backend].describe_build)
