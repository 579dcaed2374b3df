"""ONNX Runtime runner: an exported ONNX (fp32, fp16 or INT8 Q/DQ) behind ``runner(batch) -> logits``.

* The spec (input size, normalisation), precision and keep ratio come from the file's ``vitc.*``
  metadata; a foreign ONNX still runs, with ``spec=None`` and the precision inferred from the graph.
* Execution providers: ``device="auto"`` takes the CUDA provider when the installed onnxruntime has
  one, else the CPU provider; ``"cpu"`` and ``"cuda[:N]"`` ask for one explicitly (a CUDA request
  without onnxruntime-gpu is a usage error, never a silent CPU fallback). ``providers=[...]``
  overrides the choice, e.g. ``["TensorrtExecutionProvider", "CUDAExecutionProvider"]`` — the
  TensorRT provider is never picked automatically, because it builds engines at session start and
  vitc builds its own engines with ``vitc build``.
* A static-batch ONNX (``vitc export --batch N``) runs any batch: chunks of N, the last one padded.
* CPU threads: ``threads=N``; by default ``OMP_NUM_THREADS`` when set, else ONNX Runtime's default.
* Spin-waiting off (``spinning=False``, the default): ONNX Runtime's worker threads otherwise keep spinning
  after each run, and when several sessions are timed alternately (``vitc bench --compare``, a stacked
  bench, ``vitc profile``'s paired probes) one session's spinners take the cores from the next: on 2 threads
  a 1-block DeiT-S probe at batch 1 ran 2.4x slower and the dense model 1.6x slower in alternation than
  alone. Alone, a session without spinning is as fast on DeiT-S but slower on tiny models (vit-micro: +31%
  at batch 1, +11% at 32), so absolute times of tiny models are conservative; ``spinning=True`` restores
  ONNX Runtime's default (measure one session alone that way).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from vitc.backends.base import HostArrayRunner
from vitc.core.errors import UsageError, VitcError

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def onnxruntime_version() -> str | None:
    """The installed onnxruntime (or onnxruntime-gpu) version."""
    from importlib import metadata

    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def choose_providers(device: str, providers: list[Any] | None = None) -> tuple[list[Any], str]:
    """Execution providers for ``device`` (auto | cpu | cuda | cuda:N) and the device they run on."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if providers:
        names = [p[0] if isinstance(p, tuple) else p for p in providers]
        missing = [n for n in names if n not in available]
        if missing:
            raise UsageError(f"onnxruntime provider {missing[0]} is not installed (installed: {', '.join(available)})")
        return list(providers), "cuda" if any(n != "CPUExecutionProvider" for n in names) else "cpu"
    if device == "auto":
        device = "cuda" if "CUDAExecutionProvider" in available else "cpu"
    if device == "cpu":
        return ["CPUExecutionProvider"], "cpu"
    if device == "cuda" or device.startswith("cuda:"):
        if "CUDAExecutionProvider" not in available:
            raise UsageError(f"--device {device} needs onnxruntime-gpu (CUDAExecutionProvider); "
                             f"installed providers: {', '.join(available)}")
        index = device.partition(":")[2] or "0"
        if not index.isdigit():
            raise UsageError(f"bad device {device!r} (expected cpu, cuda or cuda:N)")
        return [("CUDAExecutionProvider", {"device_id": int(index)}), "CPUExecutionProvider"], f"cuda:{index}"
    raise UsageError(f"bad device {device!r} for onnxruntime (expected auto, cpu, cuda or cuda:N)")


class OrtRunner(HostArrayRunner):
    backend = "onnxruntime"

    @classmethod
    def open(cls, target: str, device: str = "auto", precision: str | None = None, **options: Any) -> OrtRunner:
        return cls(target, device=device, **options)

    def __init__(self, path: str | os.PathLike[str], device: str = "auto", providers: list[Any] | None = None,
                 threads: int | None = None, optimization: str = "all", spinning: bool = False) -> None:
        import onnxruntime as ort

        from vitc.onnx.io import META_KEEP_RATIO, load_onnx, onnx_spec, precision_of

        self.path = Path(path)
        model = load_onnx(self.path)  # one-line errors for missing/truncated/corrupt files
        spec = onnx_spec(model, str(self.path))
        precision = precision_of(model)
        meta = {p.key: p.value for p in model.metadata_props}
        del model
        if optimization not in _LEVELS:
            raise UsageError(f"onnxruntime optimization must be one of {', '.join(_LEVELS)}, got {optimization!r}")
        chosen, dev = choose_providers(device, providers)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: keep ORT's graph-rewrite chatter off stderr
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[optimization])
        if threads is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
            threads = int(os.environ["OMP_NUM_THREADS"])
        if threads is not None:
            if threads < 0:
                raise UsageError(f"threads must be >= 0, got {threads}")
            options.intra_op_num_threads = threads
        self.threads = threads
        self.spinning = bool(spinning)
        for key in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
            options.add_session_config_entry(key, "1" if self.spinning else "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=chosen)
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/NotImplemented types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UsageError(f"onnxruntime cannot load {self.path}: {first[:300]}") from None
        if dev.startswith("cuda") and "CUDAExecutionProvider" not in self.session.get_providers() and not providers:
            raise VitcError(f"onnxruntime could not start the CUDA provider for {self.path} (CUDA/cuDNN libraries missing?)")
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        if len(inp.shape) != 4 or not all(isinstance(d, int) for d in inp.shape[1:]):
            raise UsageError(f"{self.path}: expected one image input (B, C, H, W) with static C, H, W; got {inp.name} {inp.shape}")
        if inp.type not in _NUMPY_TYPES:
            raise UsageError(f"{self.path}: input {inp.name} has type {inp.type}; expected a float image tensor")
        self.input_name, self.output_name = inp.name, out.name
        self.output_classes = out.shape[-1] if out.shape and isinstance(out.shape[-1], int) else None
        self.input_dtype = _NUMPY_TYPES[inp.type]
        self.static_batch: int | None = inp.shape[0] if isinstance(inp.shape[0], int) else None
        self.keep_ratio = float(meta[META_KEEP_RATIO]) if META_KEEP_RATIO in meta else None
        self.metadata = meta
        super().__init__(spec, tuple(inp.shape[1:]), precision, dev)
        if spec is not None and tuple(spec.input_shape) != self.input_shape:
            raise UsageError(f"{self.path}: graph input {self.input_shape} does not match its vitc.spec input {spec.input_shape}")

    def _once(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def selection_probe(self, graph: Any, num_patches: int) -> Any:
        """A session over ``graph`` (this file's ONNX) with its TopK indices as outputs: the kept tokens of each
        stage, for verification (:class:`vitc.onnx.selection.SelectionProbe`)."""
        from vitc.onnx.selection import SelectionProbe

        return SelectionProbe(graph, num_patches, self.session.get_providers(), self.threads)

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {**super().describe(), "onnxruntime": ort.__version__, "providers": self.session.get_providers(),
                "path": str(self.path), "batch": self.static_batch or "dynamic", "threads": self.threads,
                "spinning": self.spinning}

    def close(self) -> None:
        self.__dict__.pop("session", None)
