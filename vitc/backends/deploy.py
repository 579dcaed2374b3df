"""One way to turn a model into the file a backend runs: ``deploy(artifact, backend, precision) -> path``.

What a backend runs comes from its registry record (:data:`vitc.backends.BACKENDS`):

* ARTIFACT backends (torch) run the artifact itself, in the precision asked for at load: nothing to make.
* ONNX backends (onnxruntime, openvino) run vitc's ONNX: ``STEM.onnx`` (``export``, fp32), ``STEM.fp16.onnx``
  (``export-fp16``) or ``STEM.int8.onnx`` (``quantize``: INT8 Q/DQ calibrated on real images, from the fp32 file).
* BUILT backends (tensorrt) run a file their builder makes from the ONNX of that precision: ``STEM.engine``,
  ``STEM.fp16.engine``, ``STEM.int8.engine`` (``build-PRECISION``).

``STEM`` is the artifact's path without ``.safetensors``. :func:`deploy_steps` lists the steps (each with its
input, output and options), so the pipeline can run and record them one by one and resume between them;
:func:`deploy` runs the missing ones and returns the file. ``vitc profile``'s probes, the pipeline, ``vitc tune``
and the GPU check all make their files here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from vitc.backends import ARTIFACT, BACKENDS, BUILT, check_backend
from vitc.core.errors import UsageError
from vitc.core.settings import to_dict
from vitc.onnx.settings import ExportSettings, QuantizeSettings


@dataclass
class DeploySettings:
    """How each step is done: ``vitc export``'s, ``vitc quantize``'s and each builder's settings (``build``: backend
    name → its build settings; missing ones take their defaults). ``quantize`` is needed for int8 (its ``data`` are
    the calibration images)."""

    export: ExportSettings = field(default_factory=lambda: ExportSettings(verify=False))
    quantize: QuantizeSettings | None = None
    build: dict[str, Any] = field(default_factory=dict)
    quick_export: bool = False  # TorchScript's exporter (latency probes: ~0.5 s instead of ~5 s; not for deployment)
    calib_source: Any = None  # a parsed data source to calibrate on instead of ``quantize.data`` (one with held-out images)

    def build_settings(self, backend: str) -> Any:
        given = self.build.get(backend)
        return given if given is not None else BACKENDS[backend].build_settings_class()()


@dataclass
class Step:
    """One step of a deployment: ``run()`` writes ``output`` from ``inputs``; ``options`` say how (for records)."""

    name: str
    inputs: list[Path]
    output: Path
    options: dict[str, Any]
    run: Callable[[], dict[str, Any]]


def onnx_path(artifact: str | os.PathLike[str], precision: str) -> Path:
    """``STEM.onnx`` (fp32), ``STEM.fp16.onnx``, ``STEM.int8.onnx``."""
    stem = _stem(artifact)
    return Path(f"{stem}.onnx") if precision == "fp32" else Path(f"{stem}.{precision}.onnx")


def deployed_path(artifact: str | os.PathLike[str], backend: str, precision: str) -> Path:
    """The file ``backend`` runs for ``artifact`` at ``precision``."""
    b = BACKENDS[check_backend(backend)]
    if b.reads == ARTIFACT:
        return Path(artifact)
    onnx = onnx_path(artifact, precision)
    return onnx.with_suffix(b.built_suffix) if b.reads == BUILT else onnx


def deploy_steps(artifact: str | os.PathLike[str], backend: str, precision: str,
                 settings: DeploySettings | None = None) -> list[Step]:
    """The steps that make :func:`deployed_path` from ``artifact`` (none for backends that run artifacts)."""
    settings = settings or DeploySettings()
    b = BACKENDS[check_backend(backend)]
    if precision not in b.precisions:
        raise UsageError(f"{b.title} runs {', '.join(b.precisions)} files, not {precision}")
    if b.reads == ARTIFACT:
        return []
    artifact = Path(artifact)
    fp32 = onnx_path(artifact, "fp32")
    export = replace(settings.export, fp16=False)
    steps = [Step("export", [artifact], fp32, {"export": to_dict(export), "quick": settings.quick_export},
                  partial(_export, artifact, fp32, export, settings.quick_export))]
    if precision == "fp16":
        fp16 = replace(settings.export, fp16=True)
        steps.append(Step("export-fp16", [artifact], onnx_path(artifact, "fp16"), {"export": to_dict(fp16),
                          "quick": settings.quick_export},
                          partial(_export, artifact, onnx_path(artifact, "fp16"), fp16, settings.quick_export)))
    elif precision == "int8":
        if settings.quantize is None:
            raise UsageError(f"an INT8 file for {b.title} needs calibration images (quantize settings with data)")
        q = settings.quantize
        calib = settings.calib_source if settings.calib_source is not None else q.data
        steps.append(Step("quantize", [fp32], onnx_path(artifact, "int8"), {"quantize": {**to_dict(q), "data": str(calib)}},
                          partial(_quantize, fp32, onnx_path(artifact, "int8"), q, calib)))
    if b.reads == BUILT:
        source = onnx_path(artifact, precision)
        target = deployed_path(artifact, backend, precision)
        build = settings.build_settings(backend)
        steps.append(Step(f"build-{precision}", [source], target, {"backend": backend, "build": to_dict(build)},
                          partial(b.build, source, target, build)))
    return steps


def deploy(artifact: str | os.PathLike[str], backend: str, precision: str, settings: DeploySettings | None = None, *,
           force: bool = False) -> Path:
    """Make the file ``backend`` runs for ``artifact`` at ``precision`` (the steps whose output is missing, or all
    with ``force``) and return its path."""
    for step in deploy_steps(artifact, backend, precision, settings):
        if force or not step.output.exists():
            step.run()
    return deployed_path(artifact, backend, precision)


def _stem(artifact: str | os.PathLike[str]) -> str:
    path = Path(artifact)
    return str(path.with_suffix("")) if path.suffix == ".safetensors" else str(path)


def _export(artifact: Path, out: Path, settings: ExportSettings, quick: bool) -> dict[str, Any]:
    from vitc.onnx.export import export_onnx

    return export_onnx(str(artifact), out, settings, exporter="torchscript" if quick else "dynamo")


def _quantize(onnx: Path, out: Path, settings: QuantizeSettings, calib: Any) -> dict[str, Any]:
    from vitc.onnx.quantize import quantize_onnx

    return quantize_onnx(str(onnx), calib, out, **{k: v for k, v in to_dict(settings).items() if k != "data"})


__all__ = ["DeploySettings", "Step", "deploy", "deploy_steps", "deployed_path", "onnx_path"]
