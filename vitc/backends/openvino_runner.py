"""OpenVINO runner: a vitc ONNX (fp32, fp16, INT8 Q/DQ) or an OpenVINO IR behind ``runner(batch) -> logits``.

On a CPU, OpenVINO plays the part TensorRT plays on a GPU: it reads vitc's ONNX as it is (Q/DQ pairs
become INT8 kernels through its low-precision transformations) and compiles it for the CPU it runs
on. ``vitc build --backend openvino`` writes the IR (``model.xml`` + ``model.bin``, what ``ovc``
writes) with vitc's metadata in its ``rt_info``, and fills the compiled-model cache beside it.

* **Precision is never changed silently.** fp32 files run with ``INFERENCE_PRECISION_HINT=f32`` set
  explicitly (OpenVINO's CPU plugin otherwise picks bf16 on CPUs that have it); ``precision="bf16"``
  or ``"fp16"`` on an fp32 file asks for that hint, and a CPU that cannot honour it is an error, not
  an f32 run under a bf16 label. INT8 Q/DQ files run as INT8 with their float parts at f32. An fp16
  file keeps its fp16 weights and computes at f32 (CPUs without AMX-FP16 have no fp16 arithmetic).
* **Performance hint LATENCY**: one stream using every thread for one request, the right setting for
  ``vitc eval``/``bench``, which run one synchronous request per batch (THROUGHPUT mode splits the
  threads into streams that only pay with several requests in flight).
* Threads: ``threads=N`` (``INFERENCE_NUM_THREADS``); by default ``OMP_NUM_THREADS`` when set, like the
  ONNX Runtime runner, else OpenVINO's default (all cores).
* ``cache_dir``: OpenVINO's compiled-model cache (``CACHE_DIR``); an IR from ``vitc build`` uses the
  cache its build filled, unless told otherwise.
* A static-batch file runs any batch in chunks of its batch, the last one padded.
* **One ``openvino.Core`` per process** (:func:`ov_core`), never one per runner: see its docstring (a
  SIGSEGV at the next signal otherwise).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from vitc.backends.base import HostArrayRunner
from vitc.core.errors import UsageError, VitcError
from vitc.core.spec import ViTSpec

INSTALL_HINT = "OpenVINO is not installed: pip install 'vitc[openvino]'"
IR_SUFFIX = ".xml"
RT_KEY = "vitc"  # rt_info section holding vitc's metadata in an IR written by vitc build
HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}  # vitc precision -> OpenVINO inference precision
_NUMPY = {"f32": np.float32, "f16": np.float16, "f64": np.float64}


class OpenVinoUnavailable(VitcError):
    """The ``openvino`` package cannot be imported here (exit 1: the step cannot run on this machine)."""


def openvino_version() -> str | None:
    """The installed OpenVINO version (``"2026.4.1-..."``), or None when the package is absent."""
    try:
        import openvino
    except (ImportError, OSError):
        return None
    return str(openvino.get_version())


def unavailable() -> str | None:
    """Why OpenVINO cannot run here (the package is missing), or None."""
    return None if openvino_version() is not None else INSTALL_HINT


@functools.cache
def ov_core() -> Any:
    """The process's one ``openvino.Core``, created on first use and kept until the interpreter exits.

    OpenVINO's CPU plugin (one instance per Core) points the calling thread's alternate signal stack at an
    mmap'ed buffer of its own when it is created (``SigAltStackSetup``, for AMX), and when destroyed puts back
    the stack it found only if its own is still the current one, then unmaps its buffer. Two plugins destroyed
    in the order they were made (a runner's Core, then a later one's, as garbage collection frees them) leave
    the thread's alternate stack pointing at unmapped memory; the next signal whose handler runs there —
    CPython installs every Python-level handler with SA_ONSTACK: vitc's Ctrl-C handler, torch's DataLoader
    SIGCHLD handler — cannot be delivered and the kernel kills the process with SIGSEGV (si_code SI_KERNEL).
    One Core means one plugin, set up once and never torn down while vitc runs.
    """
    import openvino as ov

    return ov.Core()


def require_openvino() -> str:
    version = openvino_version()
    if version is None:
        raise OpenVinoUnavailable(INSTALL_HINT)
    return version


def read_source(path: str | os.PathLike[str]) -> tuple[Any, dict[str, str]]:
    """The OpenVINO model of an ONNX file or IR and vitc's metadata (``vitc.*`` keys); one-line errors.

    An ONNX file is checked with vitc's own loader first (missing, truncated, not ONNX), so OpenVINO's
    frontends never see a corrupt file (they would try every framework and log each failure).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from vitc.onnx.io import load_onnx, metadata, precision_of

        proto = load_onnx(path)
        meta = metadata(proto)
        meta.setdefault("vitc.precision", precision_of(proto))
        del proto
    elif suffix == IR_SUFFIX:
        _check_ir(path)
        meta = {}
    else:
        raise UsageError(f"OpenVINO opens an ONNX file (.onnx) or an OpenVINO IR (.xml + .bin), not {path}")
    require_openvino()
    try:
        model = ov_core().read_model(str(path))
    except RuntimeError as e:
        raise UsageError(f"OpenVINO cannot read {path}: {_reason(e)}") from None
    if suffix == IR_SUFFIX:
        meta = ir_metadata(model)
    return model, meta


def _check_ir(path: Path) -> None:
    import xml.etree.ElementTree as ET

    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    if not path.with_suffix(".bin").is_file():
        raise UsageError(f"{path} has no weights file {path.with_suffix('.bin').name} beside it (an IR is .xml + .bin)")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise UsageError(f"{path} is not an OpenVINO IR (not valid XML: {e})") from None
    if root.tag != "net":
        raise UsageError(f"{path} is not an OpenVINO IR (root element <{root.tag}>, expected <net>)")


def ir_metadata(model: Any) -> dict[str, str]:
    """vitc's metadata stored in an IR's ``rt_info`` by ``vitc build`` (empty for a foreign IR)."""
    if not model.has_rt_info([RT_KEY, "meta"]):
        return {}
    try:
        meta = json.loads(model.get_rt_info([RT_KEY, "meta"]).astype(str))
    except (ValueError, TypeError):
        raise UsageError("the IR's vitc metadata (rt_info vitc/meta) is not valid JSON") from None
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def compile_config(hint: str, threads: int | None, cache_dir: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The CPU plugin's configuration: inference precision, LATENCY, threads, cache folder."""
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    config: dict[str, Any] = {hints.inference_precision: getattr(ov.Type, hint),
                              hints.performance_mode: hints.PerformanceMode.LATENCY}
    if threads:
        config[props.inference_num_threads] = int(threads)
    if cache_dir is not None:
        config[props.cache_dir] = str(cache_dir)
    return config


def default_threads(threads: int | None) -> int | None:
    if threads is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = int(os.environ["OMP_NUM_THREADS"])
    if threads is not None and threads < 0:
        raise UsageError(f"threads must be >= 0, got {threads}")
    return threads or None


def choose_hint(path: Path, file_precision: str, precision: str | None) -> tuple[str, str]:
    """(precision the runner reports, OpenVINO inference precision) for a file and a requested precision."""
    if file_precision == "fp32" and precision in HINTS:
        return precision, HINTS[precision]
    if precision in ("bf16", "fp16") and file_precision != precision:
        raise UsageError(f"{path} is {file_precision}; an OpenVINO {precision} inference precision applies to fp32 files only")
    return file_precision, "f32"  # int8: float parts at f32; fp16 files compute at f32; mismatches: load_runner says so


class OpenVinoRunner(HostArrayRunner):
    backend = "openvino"

    @classmethod
    def open(cls, target: str, device: str = "auto", precision: str | None = None, **options: Any) -> OpenVinoRunner:
        return cls(target, device=device, precision=precision, **options)

    def __init__(self, path: str | os.PathLike[str], device: str = "auto", precision: str | None = None,
                 threads: int | None = None, cache_dir: str | os.PathLike[str] | None = None) -> None:
        if device not in ("auto", "cpu"):
            raise UsageError(f"vitc runs OpenVINO on the CPU; --device {device} does not apply (use cpu or auto)")
        self.path = Path(path)
        model, meta = read_source(self.path)
        import openvino.properties.hint as hints

        from vitc.onnx.io import META_KEEP_RATIO, META_PRECISION

        spec = None
        if meta.get("vitc.spec"):
            try:
                spec = ViTSpec.from_json(meta["vitc.spec"])
            except UsageError as e:
                raise UsageError(f"{self.path}: corrupt vitc.spec metadata: {e}") from None
        if len(model.inputs) != 1:
            raise UsageError(f"{self.path}: expected one image input, got {len(model.inputs)}")
        shape = model.input(0).get_partial_shape()
        if shape.rank.is_dynamic or len(shape) != 4 or any(d.is_dynamic for d in list(shape)[1:]):
            raise UsageError(f"{self.path}: expected one image input (B, C, H, W) with static C, H, W; got {shape}")
        dims = list(shape)
        self.static_batch: int | None = None if dims[0].is_dynamic else dims[0].get_length()
        file_precision = meta.get(META_PRECISION, "fp32")
        reported, hint = choose_hint(self.path, file_precision, precision)
        self.threads = default_threads(threads)
        if cache_dir is None and self.path.suffix.lower() == IR_SUFFIX and meta.get("vitc.openvino_cache"):
            beside = self.path.parent / meta["vitc.openvino_cache"]
            cache_dir = beside if beside.is_dir() else None
        self.cache_dir = None if cache_dir is None else str(cache_dir)
        self.core = ov_core()
        self.config = compile_config(hint, self.threads, self.cache_dir)
        try:
            self.compiled = self.core.compile_model(model, "CPU", self.config)
        except RuntimeError as e:
            raise VitcError(f"OpenVINO cannot compile {self.path} for the CPU: {_reason(e)}") from None
        actual = self.compiled.get_property(hints.inference_precision).get_type_name()
        if actual != hint:
            raise UsageError(f"this CPU runs OpenVINO at {actual}, not the {hint} asked for ({reported}); "
                             "OpenVINO's CPU plugin has no such arithmetic here")
        self.inference_precision = actual
        self._request = self.compiled.create_infer_request()
        self._output = self.compiled.output(0)
        classes = self._output.get_partial_shape()[-1]
        self.output_classes = None if classes.is_dynamic else classes.get_length()
        self.input_dtype = _NUMPY.get(self.compiled.input(0).get_element_type().get_type_name(), np.float32)
        self.keep_ratio = float(meta[META_KEEP_RATIO]) if META_KEEP_RATIO in meta else None
        self.metadata = meta
        self._model = model
        super().__init__(spec, (dims[1].get_length(), dims[2].get_length(), dims[3].get_length()), reported, "cpu")
        if spec is not None and tuple(spec.input_shape) != self.input_shape:
            raise UsageError(f"{self.path}: graph input {self.input_shape} does not match its vitc.spec input {spec.input_shape}")

    # ---- the Runner interface (HostArrayRunner: staging, chunks of a static batch) ------------------
    def _once(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._request.infer({0: x}, share_inputs=True)[self._output])

    def selection_probe(self, graph: Any, num_patches: int) -> SelectionProbe:
        """This model compiled with the TopK index tensors of ``graph`` (its ONNX) as extra outputs (what
        :class:`vitc.onnx.selection.SelectionProbe` does with ONNX Runtime), so verification judges
        OpenVINO's own token decisions."""
        from vitc.onnx.selection import topk_index_outputs

        model = self._model.clone()
        model.add_outputs(list(topk_index_outputs(graph)))
        return SelectionProbe(self.core.compile_model(model, "CPU", self.config), self.input_dtype, num_patches)

    def describe(self) -> dict[str, Any]:
        import openvino.properties as props

        return {**super().describe(), "openvino": openvino_version(), "path": str(self.path),
                "batch": self.static_batch or "dynamic", "threads": self.compiled.get_property(props.inference_num_threads),
                "inference_precision": self.inference_precision, "performance_hint": "LATENCY",
                "cache_dir": self.cache_dir}

    def close(self) -> None:
        for name in ("_request", "compiled", "_model"):
            self.__dict__.pop(name, None)


class SelectionProbe:
    """``probe(x)`` → (logits (B, classes) float32, TopK indices per stage (B, K_s) int64)."""

    def __init__(self, compiled: Any, input_dtype: Any, num_patches: int) -> None:
        self.request = compiled.create_infer_request()
        self.outputs = list(compiled.outputs)
        self.input_dtype = input_dtype
        self.num_patches = num_patches

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        res = self.request.infer({0: np.ascontiguousarray(x, dtype=self.input_dtype)})
        return (np.asarray(res[self.outputs[0]], dtype=np.float32),
                [np.asarray(res[o], dtype=np.int64) for o in self.outputs[1:]])


def _reason(e: BaseException) -> str:
    """The informative line of an OpenVINO exception (its text starts with 'Exception from src/...' lines)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception from src", "Check '"))]
    return (useful or lines or [type(e).__name__])[0][:300]
