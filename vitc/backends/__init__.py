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


ARTIFACT, ONNX, BUILT = "artifact", "onnx", "built"  # what a backend runs: vitc artifacts, ONNX files, files it builds


@dataclass(frozen=True)
class Backend:
    """One backend: what it runs and needs, how it is named, what a deployment makes for it, and its runner options.

    ``reads``: ARTIFACT (a vitc artifact or model name, computing in any ``precisions``), ONNX (vitc's ONNX
    files: fp32, an FP16 export, an INT8 Q/DQ file) or BUILT (a file its ``builder`` makes from such an ONNX).
    ``precisions``: what a deployment (:func:`vitc.backends.deploy.deploy`, the pipeline) makes for it, the first
    being its default. ``short``: the report's format label. ``available``: ``module:function`` returning why it
    cannot run here (None when it can), for backends that need more than the package's dependencies."""

    name: str
    title: str
    runner: str
    needs: str
    reads: str
    short: str
    precisions: tuple[str, ...]
    gpu_only: tuple[str, ...] = ()  # precisions it runs only on a CUDA device
    suffixes: tuple[str, ...] = ()
    options: frozenset[str] = frozenset()
    builder: str | None = None  # ``module:function`` behind ``vitc build --backend NAME`` (ONNX → deployable file)
    build_settings: str | None = None  # ``module:Class``: that builder's settings dataclass
    build_summary: str | None = None  # ``module:function``: the builder's report as one or two lines of text
    available: str | None = None
    version: str | None = None  # ``module:function``: the installed version of what it needs (None when absent)
    inspect: str | None = None  # ``module:function``: (spec, facts) of a file it built, for `vitc info`
    markers: tuple[tuple[str, str], ...] = ()  # (precision, matplotlib marker) in the report's plot

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

    def describe_build(self, report: dict[str, Any]) -> str:
        return str(_resolve(self.build_summary)(report)) if self.build_summary else str(report)

    def installed_version(self) -> str | None:
        return _resolve(self.version)() if self.version else None

    def inspect_file(self, path: Path) -> tuple[Any, dict[str, Any]]:
        """The spec and facts (format, precision, versions) a file this backend built records about itself."""
        if self.inspect is None:
            raise UsageError(f"{path}: vitc cannot read what a {self.title} file records about itself")
        result: tuple[Any, dict[str, Any]] = _resolve(self.inspect)(path)
        return result

    def unavailable(self) -> str | None:
        """Why this backend cannot run on this machine, or None."""
        return _resolve(self.available)() if self.available else None

    def runs_at(self, precision: str, device: str) -> bool:
        """Whether it runs files (or computes) at ``precision`` on ``device`` (cpu, cuda, cuda:N)."""
        return precision in self.precisions and (precision not in self.gpu_only or device.startswith("cuda"))

    def format_label(self, precision: str) -> str:
        """How the report names a file of this backend and precision (``onnx int8``, ``trt fp16``, ``pytorch``)."""
        return self.short if self.reads == ARTIFACT and precision == self.precisions[0] else f"{self.short} {precision}"

    def marker(self, precision: str) -> str:
        return dict(self.markers).get(precision, "o")

    @property
    def built_suffix(self) -> str:
        """The file a build writes (``.engine``, ``.xml``)."""
        return self.suffixes[0] if self.suffixes else ""


def _resolve(ref: str) -> Any:
    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("torch", "PyTorch", "vitc.backends.torch_runner:TorchRunner",
            "PyTorch (CPU, or a CUDA GPU for fp16/compile/CUDA graphs)", reads=ARTIFACT, short="pytorch",
            precisions=("fp32", "fp16", "bf16"), gpu_only=("fp16",),
            options=frozenset({"compile", "cuda_graph", "pretrained", "checkpoint", "threads"}),
            version="vitc.backends.torch_runner:torch_version", markers=(("fp32", "P"), ("fp16", "X"), ("bf16", "X"))),
    Backend("onnxruntime", "ONNX Runtime", "vitc.backends.ort_runner:OrtRunner",
            "onnxruntime (its CUDA provider needs onnxruntime-gpu)", reads=ONNX, short="onnx",
            precisions=("fp32", "fp16", "int8"), suffixes=(".onnx",),
            options=frozenset({"threads", "providers", "optimization", "spinning"}),
            version="vitc.backends.ort_runner:onnxruntime_version", markers=(("fp32", "o"), ("fp16", "s"), ("int8", "D"))),
    Backend("tensorrt", "TensorRT", "vitc.backends.tensorrt.runner:TensorRTRunner", "TensorRT >= 10 and a CUDA GPU",
            reads=BUILT, short="trt", precisions=("fp16", "int8", "fp32"), suffixes=(".engine", ".plan", ".trt"),
            options=frozenset({"cuda_graph"}), builder="vitc.backends.tensorrt.build:build_engine",
            build_settings="vitc.backends.tensorrt.build:BuildSettings",
            build_summary="vitc.backends.tensorrt.build:summary_line", available="vitc.backends.tensorrt.common:unavailable",
            version="vitc.backends.tensorrt.common:tensorrt_version", inspect="vitc.backends.tensorrt.build:inspect_engine",
            markers=(("fp32", "^"), ("fp16", "v"), ("int8", ">"))),
    Backend("openvino", "OpenVINO", "vitc.backends.openvino_runner:OpenVinoRunner",
            "OpenVINO (pip install 'vitc[openvino]'; runs on the CPU)", reads=ONNX, short="openvino",
            precisions=("fp32", "fp16", "int8"), suffixes=(".onnx", ".xml"), options=frozenset({"threads", "cache_dir"}),
            builder="vitc.backends.openvino_build:build_ir", build_settings="vitc.backends.openvino_build:OpenVinoBuildSettings",
            build_summary="vitc.backends.openvino_build:summary_line", available="vitc.backends.openvino_runner:unavailable",
            version="vitc.backends.openvino_runner:openvino_version", markers=(("fp32", "h"), ("fp16", "p"), ("int8", "d"))),
)}
BUILDERS = tuple(b.name for b in BACKENDS.values() if b.builder)
ONNX_BACKENDS = tuple(b.name for b in BACKENDS.values() if b.reads == ONNX)  # backends that run vitc's ONNX files as they are
# what a pipeline benches unless told: the optional CPU runtime only when asked (`deploy.backends: [..., openvino]`)
DEFAULT_BENCH_BACKENDS = ("torch", "onnxruntime", "tensorrt")
DEFAULT_BACKEND = "torch"  # artifacts and model names
REFERENCE_BACKEND = "onnxruntime"  # every exported ONNX is verified through it; stacked speedups are over its dense fp32
BACKEND_CHOICES = ("auto", *BACKENDS)


def split_target(target: str) -> tuple[str | None, str]:
    """``"openvino:model.onnx"`` → ``("openvino", "model.onnx")``; a target without a backend prefix → ``(None, target)``."""
    name, sep, rest = target.partition(":")
    if sep and name in BACKENDS and rest:
        return name, rest
    return None, target


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


__all__ = ["ARTIFACT", "BACKENDS", "BACKEND_CHOICES", "BUILDERS", "BUILT", "DEFAULT_BACKEND", "DEFAULT_BENCH_BACKENDS", "ONNX",
           "ONNX_BACKENDS", "REFERENCE_BACKEND", "Backend", "backend_help", "check_backend", "detect_backend", "load_runner",
           "split_target"]
