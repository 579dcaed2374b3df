"""PyTorch runner: eager, fp32/fp16/bf16; on CUDA optionally ``torch.compile`` or CUDA graphs.

``compile_mode`` is the ``torch.compile`` mode (default ``max-autotune-no-cudagraphs``: Triton GEMM
autotuning, the fastest kernels, but minutes of tuning for a model with many distinct layer shapes,
as a UVC result has; ``"default"`` compiles in seconds and keeps cuBLAS for the matrix products).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from vitc.backends.base import Runner
from vitc.core.errors import UsageError
from vitc.core.spec import ViTSpec

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
COMPILE_MODE = "max-autotune-no-cudagraphs"


def torch_version() -> str:
    return str(torch.__version__)


class TorchRunner(Runner):
    backend = "torch"

    def __init__(self, model: nn.Module, spec: ViTSpec | None, device: str = "auto", precision: str = "fp32",
                 compile: bool = False, cuda_graph: bool = False, compile_mode: str = COMPILE_MODE,
                 threads: int | None = None) -> None:
        if precision not in _DTYPES:
            raise UsageError(f"torch precision must be one of {', '.join(_DTYPES)}, got {precision!r}")
        from vitc.core.device import pick_device

        dev = pick_device(device)  # a bad or unavailable --device is a one-line UsageError
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UsageError("--device cuda requested but no CUDA device is available")
        if precision == "fp16" and dev.type == "cpu":
            raise UsageError("fp16 on the torch backend needs --device cuda (use bf16 or fp32 on CPU)")
        if (compile or cuda_graph) and dev.type != "cuda":
            raise UsageError("--compile/--cuda-graph need a CUDA device")
        if threads is not None and dev.type == "cpu":
            if threads < 1:
                raise UsageError(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(threads)  # torch's intra-op pool is per process
        shape = spec.input_shape if spec is not None else _infer_input_shape(model)
        super().__init__(spec, shape, precision, str(dev))
        self.dtype = _DTYPES[precision]
        self.model = model.to(dev, self.dtype).eval()
        self.torch_device = dev
        self.compile_mode = compile_mode if compile else None
        self._fn = torch.compile(self.model, mode=compile_mode) if compile else self.model
        self.cuda_graph = cuda_graph
        self._graphs: dict[int, tuple[Any, torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def open(cls, target: str, device: str = "auto", precision: str | None = None, pretrained: bool = False,
             checkpoint: str | None = None, **options: Any) -> TorchRunner:
        """A runner for an artifact of any kind (its evaluable model), a timm name or a vitc config."""
        from vitc.methods import resolve_any

        model, spec = resolve_any(target, pretrained=pretrained, checkpoint=checkpoint)
        return cls(model, spec, device=device, precision=precision or "fp32", **options)

    @torch.inference_mode()
    def _infer(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        x = torch.as_tensor(batch).to(self.torch_device, self.dtype, non_blocking=True)
        return self.run_staged(x).float().cpu().numpy()

    def stage(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The batch as a tensor on the runner's device in its compute dtype."""
        self._check_shape(batch)
        x = torch.as_tensor(batch).to(self.torch_device, self.dtype)
        self.synchronize()
        return x

    def run_staged(self, staged: Any) -> torch.Tensor:
        """Forward a staged tensor (no host transfers); the output stays on the device."""
        with torch.inference_mode():
            return self._graph_run(staged) if self.cuda_graph else self._fn(staged)

    def cuda_stream(self) -> torch.cuda.Stream | None:
        return torch.cuda.current_stream(self.torch_device) if self.torch_device.type == "cuda" else None

    def _graph_run(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if b not in self._graphs:
            with torch.cuda.device(self.torch_device):  # streams and capture on the runner's GPU, not the current one
                static_in = x.clone()
                s = torch.cuda.Stream(self.torch_device)
                s.wait_stream(torch.cuda.current_stream(self.torch_device))
                with torch.cuda.stream(s):
                    for _ in range(3):
                        self._fn(static_in)
                torch.cuda.current_stream(self.torch_device).wait_stream(s)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    static_out = self._fn(static_in)
            self._graphs[b] = (graph, static_in, static_out)
        graph, static_in, static_out = self._graphs[b]
        with torch.cuda.device(self.torch_device):  # replayed on the current stream of the GPU it was captured on
            static_in.copy_(x)
            graph.replay()
        return static_out

    def synchronize(self) -> None:
        if self.torch_device.type == "cuda":
            torch.cuda.synchronize(self.torch_device)

    def compute_threads(self) -> int | None:
        return torch.get_num_threads() if self.torch_device.type == "cpu" else None

    def describe(self) -> dict[str, Any]:
        threads = {"threads": torch.get_num_threads()} if self.torch_device.type == "cpu" else {}
        return {**super().describe(), "torch": torch.__version__, "compile": self._fn is not self.model,
                "compile_mode": self.compile_mode, "cuda_graph": self.cuda_graph, **threads}


def _infer_input_shape(model: nn.Module) -> tuple[int, int, int]:
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    return tuple(cfg.get("input_size", (3, 224, 224)))
