"""One runner interface for every backend: ``runner(batch) -> logits``.

A runner takes a float32 batch (B, C, H, W) as a NumPy array or a torch tensor and returns the
logits (B, num_classes) as a float32 NumPy array, whatever precision it computes in. ``eval``,
``verify`` and ``bench`` are written once against this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch

from vitc.core.errors import UsageError
from vitc.core.spec import ViTSpec


class Runner(ABC):
    """Base class: ``infer`` checks the batch against the input shape, ``_infer`` does the work.

    For benchmarking, ``stage(batch)`` puts a batch where the backend reads its input (device
    memory) once and ``run_staged(staged)`` runs it without host transfers, returning the backend's
    raw output; ``cuda_stream()`` names the stream the work goes to, for CUDA-event timing.
    """

    backend: str = "?"
    static_batch: int | None = None  # a graph fixed to one batch size (runs other sizes in chunks of it)
    output_classes: int | None = None  # logits per image, where the backend's graph declares it (checked by verify)

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

    def cuda_stream(self) -> torch.cuda.Stream | None:
        """The CUDA stream this runner's work is queued on, or None (CPU, or a backend with hidden streams)."""
        return None

    def synchronize(self) -> None:  # noqa: B027 (optional hook: CPU runners are synchronous)
        """Wait for queued device work (timing); CPU runners are synchronous."""

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "precision": self.precision, "device": self.device}

    def selection_probe(self, graph: Any, num_patches: int) -> Any:
        """Runners of ONNX files: a callable ``x -> (logits, TopK indices per stage)`` over ``graph`` (the file's
        ONNX), so verification judges this backend's own token decisions."""
        raise UsageError(f"the {self.backend} runner cannot report its kept tokens")

    def compute_threads(self) -> int | None:
        """The CPU threads this runner computes with (None on a GPU): the bench's GEMM peak uses as many."""
        if self.device != "cpu":
            return None
        from vitc.core.host import cpu_cores

        return getattr(self, "threads", None) or cpu_cores()

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release the backend's resources (sessions, device buffers)."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HostArrayRunner(Runner):
    """A CPU-side runtime fed host arrays (ONNX Runtime, OpenVINO): the batch is a contiguous array of the graph's
    input type, and a static-batch graph runs any batch in chunks of its size, the last one padded. Subclasses set
    ``input_dtype`` and ``static_batch`` and implement ``_once(x)`` (one call of the graph's own batch)."""

    input_dtype: Any = np.float32

    def _once(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def stage(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """The batch as a contiguous host array of the graph's input type (the runtime copies it per run)."""
        self._check_shape(batch)
        return self._as_input(batch)

    def run_staged(self, staged: Any) -> np.ndarray:
        return self._run(staged)

    def _infer(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        return self._run(self._as_input(batch)).astype(np.float32, copy=False)

    def _as_input(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        if isinstance(batch, torch.Tensor):
            batch = batch.detach().cpu().numpy()
        return np.ascontiguousarray(batch, dtype=self.input_dtype)

    def _run(self, x: np.ndarray) -> np.ndarray:
        n = self.static_batch
        if n is None or x.shape[0] == n:
            return self._once(x)
        outs = []
        for start in range(0, x.shape[0], n):
            chunk = x[start : start + n]
            real = chunk.shape[0]
            if real < n:
                chunk = np.concatenate([chunk, np.zeros((n - real, *chunk.shape[1:]), dtype=chunk.dtype)])
            outs.append(self._once(chunk)[:real].copy())
        return np.concatenate(outs)
