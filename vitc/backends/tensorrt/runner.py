"""TensorRT runner: a serialized engine behind the common ``runner(batch) -> logits`` interface.

* TensorRT >= 10 runtime API: ``deserialize_cuda_engine``, I/O by tensor name
  (``num_io_tensors``, ``get_tensor_name/mode/dtype``), ``set_input_shape`` per batch,
  ``set_tensor_address``, ``execute_async_v3`` on the runner's own CUDA stream.
* Device buffers are PyTorch CUDA tensors (torch is already a dependency; pycuda needs the CUDA
  toolkit to build and cuda-python is one more package), allocated **once** at the profile's
  maximum batch; a batch of ``b`` uses their first ``b`` rows, so tensor addresses never change.
* ``cuda_graph=True`` captures ``execute_async_v3`` with ``torch.cuda.CUDAGraph`` on the runner's
  stream, one graph per batch size, after one ordinary enqueue at that shape (TensorRT needs an
  enqueue after every shape change before capture). TensorRT's Python API has no capture helper of
  its own — trtexec calls ``cudaStreamBeginCapture`` itself — and torch's capture gives the same
  graph without a cuda-python dependency. Capture uses ``capture_error_mode="thread_local"`` so
  TensorRT's own CUDA calls on other threads are not flagged.
* Precision and the vitc spec come from the engine's JSON sidecar (``vitc build`` writes it); an
  engine built elsewhere still runs, with ``spec=None`` and precision ``"unknown"``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vitc.backends.base import Runner
from vitc.backends.tensorrt.build import read_sidecar
from vitc.backends.tensorrt.common import make_logger, require_tensorrt
from vitc.core.errors import CheckFailed, UsageError, VitcError
from vitc.core.spec import ViTSpec

if TYPE_CHECKING:
    import tensorrt as trt


class TensorRTRunner(Runner):
    backend = "tensorrt"

    @classmethod
    def open(cls, target: str, device: str = "auto", precision: str | None = None, **options: Any) -> TensorRTRunner:
        return cls(target, device=device, **options)

    def __init__(self, path: str | os.PathLike[str], device: str = "auto", cuda_graph: bool = False,
                 verbose: bool = False) -> None:
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"no such engine file: {path}")
        version = require_tensorrt()
        if device == "cpu":
            raise UsageError("TensorRT engines run on an NVIDIA GPU; --device cpu does not apply")
        if not torch.cuda.is_available():
            raise VitcError("TensorRT engines run on an NVIDIA GPU, and no CUDA GPU is visible here")
        dev = torch.device("cuda" if device == "auto" else device)
        if dev.type != "cuda":
            raise UsageError(f"TensorRT engines run on a CUDA device, not {device!r}")
        sidecar = read_sidecar(path) or {}
        import tensorrt as trt

        self.path = path
        self.tensorrt_version = version
        self.torch_device = dev
        self.cuda_graph = cuda_graph
        with torch.cuda.device(dev):
            self._logger = make_logger(verbose)
            self._runtime = trt.Runtime(self._logger)
            engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise CheckFailed(f"TensorRT {version} could not load {path}: built by another TensorRT version or for "
                                  "another GPU? rebuild it with vitc build")
            self._engine: trt.ICudaEngine = engine
            self._input, self._output = _single_io(engine, path)
            lo, _, hi = (_dims(d) for d in engine.get_tensor_profile_shape(self._input, 0))
            self.min_batch, self.max_batch = lo[0], hi[0]
            sample = hi[1:]
            if len(sample) != 3 or min(sample) < 1:
                raise UsageError(f"{path}: input {self._input!r} has shape {hi}; expected (batch, C, H, W) with static C, H, W")
            self._context = engine.create_execution_context()
            if self._context is None:
                raise CheckFailed(f"TensorRT could not create an execution context for {path} (out of GPU memory?)")
            self._stream = torch.cuda.Stream(dev)
            self._in_buf = torch.empty((self.max_batch, *sample), dtype=_torch_dtype(engine.get_tensor_dtype(self._input)), device=dev)
            self._set_batch(self.max_batch)
            out_shape = _dims(self._context.get_tensor_shape(self._output))
            if any(d < 0 for d in out_shape):
                raise UsageError(f"{path}: output {self._output!r} has a data-dependent shape {out_shape}")
            self._out_buf = torch.empty(out_shape, dtype=_torch_dtype(engine.get_tensor_dtype(self._output)), device=dev)
            for name, buf in ((self._input, self._in_buf), (self._output, self._out_buf)):
                if not self._context.set_tensor_address(name, buf.data_ptr()):
                    raise CheckFailed(f"TensorRT refused the device buffer for {name!r}")
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}
        spec = ViTSpec.from_dict(sidecar["spec"]) if sidecar.get("spec") else None
        super().__init__(spec, (sample[0], sample[1], sample[2]), str(sidecar.get("precision", "unknown")), str(dev))
        self.sidecar = sidecar

    # ---- the Runner interface -------------------------------------------------------------------
    def _infer(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        b = self._check_batch(int(batch.shape[0]))
        with torch.cuda.device(self.torch_device), torch.cuda.stream(self._stream):
            self._in_buf[:b].copy_(torch.as_tensor(batch))
            self._execute(b)
            logits = self._out_buf[:b].float().cpu()  # .cpu() waits for the stream
        return logits.numpy()

    def stage(self, batch: np.ndarray | torch.Tensor) -> int:
        """Copy ``batch`` into the engine's input buffer once; ``run_staged`` then runs without transfers."""
        self._check_shape(batch)
        b = self._check_batch(int(batch.shape[0]))
        with torch.cuda.device(self.torch_device), torch.cuda.stream(self._stream):
            self._in_buf[:b].copy_(torch.as_tensor(batch))
        self._stream.synchronize()
        return b

    def run_staged(self, staged: Any) -> torch.Tensor:
        b = int(staged)
        with torch.cuda.device(self.torch_device), torch.cuda.stream(self._stream):
            self._execute(b)
        return self._out_buf[:b]

    def cuda_stream(self) -> torch.cuda.Stream:
        return self._stream

    def synchronize(self) -> None:
        self._stream.synchronize()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "tensorrt": self.tensorrt_version, "engine": str(self.path), "cuda_graph": self.cuda_graph,
                "batch_range": [self.min_batch, self.max_batch], "io_dtypes": [str(self._in_buf.dtype), str(self._out_buf.dtype)]}

    def close(self) -> None:
        self._graphs.clear()

    # ---- internals ------------------------------------------------------------------------------
    def _check_batch(self, b: int) -> int:
        if not self.min_batch <= b <= self.max_batch:
            raise UsageError(f"{self.path} was built for batch {self.min_batch}..{self.max_batch}, got {b} "
                             "(rebuild with vitc build --min-batch/--max-batch)")
        return b

    def _set_batch(self, b: int) -> None:
        shape = (b, *self._in_buf.shape[1:])
        if not self._context.set_input_shape(self._input, shape):
            raise CheckFailed(f"TensorRT refused input shape {shape} for {self._input!r}")
        self._batch = b

    def _enqueue(self) -> None:
        if not self._context.execute_async_v3(self._stream.cuda_stream):
            raise CheckFailed(f"TensorRT execution of {self.path} failed (see TensorRT's messages above)")

    def _execute(self, b: int) -> None:
        """Run the engine on the first ``b`` rows of the input buffer, on the runner's stream."""
        if b != self._batch:
            self._set_batch(b)
        if not self.cuda_graph:
            self._enqueue()
            return
        graph = self._graphs.get(b)
        if graph is None:
            self._enqueue()  # one ordinary enqueue at this shape before capture, as TensorRT requires
            self._stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self._stream, capture_error_mode="thread_local"):
                self._enqueue()
            self._graphs[b] = graph
        graph.replay()


def _single_io(engine: trt.ICudaEngine, path: Path) -> tuple[str, str]:
    import tensorrt as trt

    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    if len(inputs) != 1 or len(outputs) != 1:
        raise UsageError(f"{path}: expected one input and one output tensor, found {inputs} and {outputs}")
    return inputs[0], outputs[0]


def _dims(dims: trt.Dims) -> tuple[int, ...]:
    return tuple(int(dims[i]) for i in range(len(dims)))


def _torch_dtype(dtype: trt.DataType) -> torch.dtype:
    import tensorrt as trt

    table = [(trt.float32, torch.float32), (trt.float16, torch.float16), (trt.bfloat16, torch.bfloat16),
             (trt.int8, torch.int8), (trt.uint8, torch.uint8), (trt.int32, torch.int32), (trt.int64, torch.int64),
             (trt.bool, torch.bool)]
    for trt_type, torch_type in table:
        if dtype == trt_type:
            return torch_type
    raise UsageError(f"engine I/O type {dtype} has no torch equivalent")
