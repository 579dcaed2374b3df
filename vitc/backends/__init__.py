"""Runners behind one interface (``runner(batch) -> logits``) and the one list of backends.

``BACKENDS`` maps a backend name to what opens it, what it needs and which options it understands;
``load_runner``, every ``--backend`` choice and the pipeline's ``bench.backends`` read it. Adding a
backend = a runner class with an ``open`` classmethod plus one line here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitc.core.errors import UsageError

if TYPE_CHECKING:
    from vitc.backends.base import Runner


@dataclass(frozen=True)
class Backend:
    """One backend: its runner (``module:Class``, imported on use), what it needs, the files it opens by
    default (suffixes) and the runner options only it understands."""

    name: str
    runner: str
    needs: str
    suffixes: tuple[str, ...] = ()
    options: frozenset[str] = frozenset()
    builder: str | None = None  # ``module:function`` behind ``vitc build --backend NAME`` (ONNX → deployable file)
    build_settings: str | None = None  # ``module:Class``: that builder's settings dataclass

    def runner_class(self) -> Any:
        return _resolve(self.runner)

    def build_settings_class(self) -> Any:
        if self.build_settings is None:
            raise UsageError(f"the {self.name} backend has no build step (it runs its files as they are)")
        return _resolve(self.build_settings)

    def build(self, onnx: str | Path, out: str | Path, settings: Any = None) -> dict[str, Any]:
        """Build ``out`` from ``onnx`` with this backend's builder; the builder's report."""
        if self.builder is None:
            raise UsageError(f"the {self.name} backend has no build step (it runs its files as they are)")
        result: dict[str, Any] = _resolve(self.builder)(onnx, out, settings)
        return result


def _resolve(ref: str) -> Any:
    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("torch", "vitc.backends.torch_runner:TorchRunner", "PyTorch (CPU, or a CUDA GPU for fp16/compile/CUDA graphs)",
            options=frozenset({"compile", "cuda_graph", "pretrained", "checkpoint"})),
    Backend("onnxruntime", "vitc.backends.ort_runner:OrtRunner", "onnxruntime (its CUDA provider needs onnxruntime-gpu)",
            suffixes=(".onnx",), options=frozenset({"threads", "providers", "optimization", "spinning"})),
    Backend("tensorrt", "vitc.backends.tensorrt.runner:TensorRTRunner", "TensorRT >= 10 and a CUDA GPU",
            suffixes=(".engine", ".plan", ".trt"), options=frozenset({"cuda_graph"}),
            builder="vitc.backends.tensorrt.build:build_engine", build_settings="vitc.backends.tensorrt.build:BuildSettings"),
    Backend("openvino", "vitc.backends.openvino_runner:OpenVinoRunner", "OpenVINO (pip install 'vitc[openvino]'; runs on the CPU)",
            suffixes=(".onnx", ".xml"), options=frozenset({"threads", "cache_dir"}),
            builder="vitc.backends.openvino_build:build_ir", build_settings="vitc.backends.openvino_build:OpenVinoBuildSettings"),
)}
BUILDERS = tuple(b.name for b in BACKENDS.values() if b.builder)
# what a pipeline benches unless told: the optional CPU runtime only when asked (`bench.backends: [..., openvino]`)
DEFAULT_BENCH_BACKENDS = ("torch", "onnxruntime", "tensorrt")
DEFAULT_BACKEND = "torch"  # artifacts and model names
BACKEND_CHOICES = ("auto", *BACKENDS)


def backend_help() -> str:
    """``auto: ...; torch: needs ...`` for --backend help texts."""
    auto = {b.name: [s for s in b.suffixes if detect_backend("x" + s) == b.name] for b in BACKENDS.values()}
    suffixes = ", ".join(f"{name} for {'/'.join(sfx)}" for name, sfx in auto.items() if sfx)
    return f"auto: {suffixes}, {DEFAULT_BACKEND} otherwise. " + "; ".join(f"{b.name} needs {b.needs}" for b in BACKENDS.values()) + "."


def detect_backend(target: str) -> str:
    """The backend that opens ``target`` by its suffix (``.onnx`` → onnxruntime, ``.engine`` → tensorrt, ``.xml`` →
    openvino), else torch: the first backend listing the suffix (OpenVINO opens ``.onnx`` too, when named)."""
    suffix = Path(target).suffix.lower()
    for b in BACKENDS.values():
        if suffix in b.suffixes:
            return b.name
    return DEFAULT_BACKEND


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r} (expected {', '.join(BACKENDS)})")
    return name


def load_runner(target: str, backend: str = "auto", device: str = "auto", precision: str | None = None,
                **options: Any) -> Runner:
    """Open ``target`` (artifact, timm name, .onnx or .engine) with the requested backend.

    ``precision``: the torch compute dtype (fp32 when None). An ONNX file or an engine computes in
    the precision it was exported/built with; a different explicit ``precision`` is a usage error
    rather than a silent substitution. ``options``: those in the backend's ``options`` (compile,
    cuda_graph, pretrained, checkpoint); a truthy option another backend owns is a usage error.
    """
    chosen = BACKENDS[check_backend(detect_backend(target) if backend == "auto" else backend)]
    for name in list(options):
        if name in chosen.options:
            continue
        owners = [b.name for b in BACKENDS.values() if name in b.options]
        if not owners:
            raise UsageError(f"unknown runner option {name!r} (options: "
                             f"{', '.join(sorted({o for b in BACKENDS.values() for o in b.options}))})")
        if options[name]:
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} applies to the {' and '.join(owners)} backend{'s' if len(owners) > 1 else ''}, "
                             f"not {chosen.name} ({target})")
        del options[name]
    runner: Runner = chosen.runner_class().open(target, device=device, precision=precision, **options)
    if precision is not None and runner.precision not in (precision, "unknown"):
        runner.close()
        raise UsageError(f"{target} computes in {runner.precision} (fixed when it was exported or built); "
                         f"--precision {precision} does not apply to it")
    return runner


__all__ = ["BACKENDS", "BUILDERS", "DEFAULT_BENCH_BACKENDS", "Backend", "backend_help", "detect_backend", "load_runner"]
