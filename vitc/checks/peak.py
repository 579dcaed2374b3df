"""The machine's limit to compare a model against: a dense GEMM of the model's precision on the same device and
threads, timed **inside the same round-robin** as the models (:func:`vitc.checks.bench.bench`).

A bench report divides each file's achieved GFLOP/s (2 · MACs · images/s) by the GFLOP/s (GOP/s for INT8) of
the GEMM of its own precision, so a reader sees how close each file runs to what this device does on the
friendliest workload of that precision: an INT8 file against an INT8 GEMM, an fp32 file against an fp32 one.
The GEMM is one more participant of the round-robin, so a machine whose load changes during the bench changes
the peak with it (a peak measured once at the start, while other work ran, gave shares above 1).

* CPU: ONNX Runtime's own GEMMs (MLAS), with the threads of the runner it is compared with and spin-waiting
  off, as vitc's runners: fp32 ``MatMul``; int8 ``MatMulInteger`` u8 × s8 with constant weights (the kernel a
  Q/DQ file's MatMuls become); fp16 ``MatMul`` where this ONNX Runtime has a CPU kernel for it. n = 512 (a few
  ms a call, so a round of tiny models is not dominated by it).
* CUDA: ``torch.matmul`` in fp32 (TF32 off), fp16 or bf16, and ``torch._int_mm`` for int8. n = 8192.

A precision the device has no GEMM for gets no peak (``None``), said in the report.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vitc.core.host import cpu_cores

CPU_N = 512
CUDA_N = 8192
GEMM_PRECISIONS = ("fp32", "fp16", "bf16", "int8")


class PeakGemm:
    """An n × n × n GEMM of one precision, shaped like a runner for the bench loop (``stage``/``run_staged``/
    ``synchronize``/``cuda_stream``); ``flops`` per call. Raises ``RuntimeError`` where the device has none."""

    def __init__(self, precision: str, device: str = "cpu", threads: int | None = None, n: int | None = None) -> None:
        if precision not in GEMM_PRECISIONS:
            raise RuntimeError(f"no GEMM peak for precision {precision!r}")
        self.precision, self.device = precision, device
        self.threads = None if device.startswith("cuda") else int(threads or cpu_cores())
        self.n = n or (CUDA_N if device.startswith("cuda") else CPU_N)
        self.flops = 2.0 * self.n**3
        self.input_shape = (self.n, self.n)
        self._stream: Any = None
        self._a: Any = None
        self._b: Any = None
        if device.startswith("cuda"):
            self._open_cuda()
        else:
            self._open_cpu()

    @property
    def how(self) -> str:
        if self.device.startswith("cuda"):
            op = "torch._int_mm" if self.precision == "int8" else "torch.matmul"
            return f"{op} {self.precision} {self.n}^3 on {self.device}"
        op = "MatMulInteger u8 x s8" if self.precision == "int8" else f"MatMul {self.precision}"
        return f"ONNX Runtime {op} {self.n}^3 on the CPU, {self.threads} threads"

    def describe(self) -> dict[str, Any]:
        return {"precision": self.precision, "device": self.device, "threads": self.threads, "n": self.n, "how": self.how}

    # ---- CPU: ONNX Runtime ----------------------------------------------------------------------
    def _open_cpu(self) -> None:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        n, rng = self.n, np.random.default_rng(0)
        if self.precision == "int8":
            a_type, weights = TensorProto.UINT8, rng.integers(-127, 128, (n, n), dtype=np.int8)
            node = helper.make_node("MatMulInteger", ["a", "b"], ["c"])
            out_type = TensorProto.INT32
            self._a = rng.integers(0, 256, (n, n), dtype=np.uint8)
        else:
            np_type = {"fp32": np.float32, "fp16": np.float16}.get(self.precision)
            if np_type is None:
                raise RuntimeError(f"no {self.precision} GEMM on ONNX Runtime's CPU provider")
            a_type = out_type = TensorProto.FLOAT if self.precision == "fp32" else TensorProto.FLOAT16
            weights = rng.standard_normal((n, n)).astype(np_type)
            node = helper.make_node("MatMul", ["a", "b"], ["c"])
            self._a = rng.standard_normal((n, n)).astype(np_type)
        graph = helper.make_graph([node], "peak", [helper.make_tensor_value_info("a", a_type, [n, n])],
                                  [helper.make_tensor_value_info("c", out_type, [n, n])],
                                  initializer=[numpy_helper.from_array(weights, "b")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        model.ir_version = 9
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = self.threads or 0
        for key in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
            options.add_session_config_entry(key, "0")
        try:
            self._session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
            self._session.run(None, {"a": self._a})
        except Exception as e:  # ORT raises NotImplemented for a type its CPU provider has no kernel for
            raise RuntimeError(f"ONNX Runtime has no CPU {self.precision} GEMM here: {str(e).splitlines()[0][:120]}") from None

    # ---- CUDA: torch -----------------------------------------------------------------------------
    def _open_cuda(self) -> None:
        import torch

        dev = torch.device(self.device)
        gen = torch.Generator(device=dev).manual_seed(0)
        if self.precision == "int8":
            self._a = torch.randint(-127, 128, (self.n, self.n), device=dev, dtype=torch.int8, generator=gen)
            self._b = torch.randint(-127, 128, (self.n, self.n), device=dev, dtype=torch.int8, generator=gen)
        else:
            dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.precision]
            self._a = torch.randn(self.n, self.n, device=dev, generator=gen).to(dtype)
            self._b = torch.randn(self.n, self.n, device=dev, generator=gen).to(dtype)
        self._stream = torch.cuda.current_stream(dev)
        try:
            self.run_staged(None)
            self.synchronize()
        except RuntimeError as e:
            raise RuntimeError(f"no {self.precision} GEMM on {self.device}: {str(e).splitlines()[0][:120]}") from None

    # ---- the runner shape the bench loop times ----------------------------------------------------
    def stage(self, batch: Any) -> Any:
        return None

    def run_staged(self, staged: Any) -> Any:
        if self._stream is None:
            return self._session.run(None, {"a": self._a})
        import torch

        if self.precision == "int8":
            return torch._int_mm(self._a, self._b)
        allow = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            return torch.matmul(self._a, self._b)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = allow

    def cuda_stream(self) -> Any:
        return self._stream

    def synchronize(self) -> None:
        if self._stream is not None:
            self._stream.synchronize()

    def close(self) -> None:
        self.__dict__.pop("_session", None)


def peak_precision(precision: str) -> str:
    """The GEMM a file of ``precision`` is compared with (a file of unknown precision: fp32)."""
    return precision if precision in GEMM_PRECISIONS else "fp32"


__all__ = ["CPU_N", "CUDA_N", "GEMM_PRECISIONS", "PeakGemm", "peak_precision"]
