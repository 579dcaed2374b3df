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
    """Base class: ``infer`` checks the batch against the input shape, ``_infer`` does the work."""

    backend: str = "?"

    def __init__(self, spec: ViTSpec | None, input_shape: tuple[int, int, int], precision: str, device: str) -> None:
        self.spec = spec
        self.input_shape = tuple(input_shape)
        self.precision = precision
        self.device = device

    def __call__(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        return self.infer(batch)

    def infer(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        if tuple(batch.shape[1:]) != self.input_shape:
            raise UsageError(f"{self.backend} runner expects input (B, {', '.join(map(str, self.input_shape))}), got {tuple(batch.shape)}")
        return self._infer(batch)

    @abstractmethod
    def _infer(self, batch: np.ndarray | torch.Tensor) -> np.ndarray: ...

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


def detect_backend(target: str) -> str:
    suffix = Path(target).suffix.lower()
    if suffix == ".onnx":
        return "onnxruntime"
    if suffix in (".engine", ".plan", ".trt"):
        return "tensorrt"
    return "torch"


def load_runner(target: str, backend: str = "auto", device: str = "auto", precision: str = "fp32",
                **options: Any) -> Runner:
    """Open ``target`` (artifact, timm name, .onnx or .engine) with the requested backend."""
    if backend == "auto":
        backend = detect_backend(target)
    if backend == "torch":
        from vitc.engines.torch_runner import TorchRunner

        return TorchRunner.from_target(target, device=device, precision=precision, **options)
    if backend == "onnxruntime":
        from vitc.engines.ort_runner import OrtRunner

        return OrtRunner(target, device=device, **options)
    if backend == "tensorrt":
        from vitc.engines.tensorrt_runner import TensorRTRunner

        return TensorRTRunner(target, **options)
    raise UsageError(f"unknown backend {backend!r} (expected auto, torch, onnxruntime or tensorrt)")
