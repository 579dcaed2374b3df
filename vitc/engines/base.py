"""One runner interface for every backend: ``runner(batch) -> logits``.

A runner takes a float32 batch (B, C, H, W) as a NumPy array or a torch tensor and returns the
logits (B, num_classes) as a float32 NumPy array, whatever precision it computes in. ``eval``,
``verify`` and ``bench`` are written once against this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitc.errors import UsageError
from vitc.models.spec import ViTSpec


class Runner(ABC):
    """Base class: ``infer`` checks the batch against the input shape, ``_infer`` does the work.

    For benchmarking, ``stage(batch)`` puts a batch where the backend reads its input (device
    memory) once and ``run_staged(staged)`` runs it without host transfers, returning the backend's
    raw output; ``cuda_stream()`` names the stream the work goes to, for CUDA-event timing.
    """

    backend: str = "?"

    def __init__(self, spec: ViTSpec | None, input_shape: tuple[int, int, int], precision: str, device: str) -> None:
        self.spec = spec
        self.input_shape = tuple(input_shape)
        self.precision = precision
        self.device = device

    def __call__(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        return self.infer(batch)

    def infer(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        self._check_shape(batch)
        return self._infer(batch)

    def _check_shape(self, batch: np.ndarray | torch.Tensor) -> None:
        if tuple(batch.shape[1:]) != self.input_shape:
            raise UsageError(f"{self.backend} runner expects input (B, {', '.join(map(str, self.input_shape))}), got {tuple(batch.shape)}")

    @abstractmethod
    def _infer(self, batch: np.ndarray | torch.Tensor) -> np.ndarray: ...

    def stage(self, batch: np.ndarray | torch.Tensor) -> Any:
        """Place ``batch`` where the backend reads its input; the default keeps it on the host."""
        self._check_shape(batch)
        return batch

    def run_staged(self, staged: Any) -> Any:
        """Run a staged batch and return the backend's output without copying it to the host."""
        return self._infer(staged)

    def cuda_stream(self) -> "torch.cuda.Stream | None":
        """The CUDA stream this runner's work is queued on, or None (CPU, or a backend with hidden streams)."""
        return None

    def synchronize(self) -> None:
        """Wait for queued device work (timing); CPU runners are synchronous."""

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "precision": self.precision, "device": self.device}

    def close(self) -> None:
        pass

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


BACKENDS = ("torch", "onnxruntime", "tensorrt")
# Options that only some backends understand; a truthy value for another backend is a usage error.
_OPTION_BACKENDS = {"compile": ("torch",), "cuda_graph": ("torch", "tensorrt"), "pretrained": ("torch",),
                    "checkpoint": ("torch",)}


def detect_backend(target: str) -> str:
    """``.onnx`` → onnxruntime, ``.engine/.plan/.trt`` → tensorrt, anything else (artifact, timm name) → torch."""
    suffix = Path(target).suffix.lower()
    if suffix == ".onnx":
        return "onnxruntime"
    if suffix in (".engine", ".plan", ".trt"):
        return "tensorrt"
    return "torch"


def load_runner(target: str, backend: str = "auto", device: str = "auto", precision: str | None = None,
                **options: Any) -> Runner:
    """Open ``target`` (artifact, timm name, .onnx or .engine) with the requested backend.

    ``precision``: the torch compute dtype (fp32 when None). An ONNX file or an engine computes in
    the precision it was exported/built with; a different explicit ``precision`` is a usage error
    rather than a silent substitution. ``options``: ``compile``/``pretrained``/``checkpoint``
    (torch), ``cuda_graph`` (torch, tensorrt), and anything else the backend's runner accepts.
    """
    if backend == "auto":
        backend = detect_backend(target)
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r} (expected auto, {', '.join(BACKENDS)})")
    for name, allowed in _OPTION_BACKENDS.items():
        if options.get(name) and backend not in allowed:
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} applies to the {' and '.join(allowed)} backend{'s' if len(allowed) > 1 else ''}, not {backend} ({target})")
        if name in options and not options[name] and backend not in allowed:
            del options[name]
    runner: Runner
    if backend == "torch":
        from vitc.engines.torch_runner import TorchRunner

        return TorchRunner.from_target(target, device=device, precision=precision or "fp32", **options)
    if backend == "onnxruntime":
        from vitc.engines.ort_runner import OrtRunner

        runner = OrtRunner(target, device=device, **options)
    else:
        from vitc.engines.tensorrt_runner import TensorRTRunner

        runner = TensorRTRunner(target, device=device, **options)
    if precision is not None and runner.precision not in (precision, "unknown"):
        runner.close()
        raise UsageError(f"{target} computes in {runner.precision} (fixed when it was exported or built); "
                         f"--precision {precision} does not apply to it")
    return runner
