"""The machine's limit to compare a model against: a dense fp32 GEMM on the same device and threads.

``gemm_peak(threads)`` times an n×n×n fp32 matrix product (default 2048³, PyTorch's CPU GEMM: oneDNN/MKL)
with ``threads`` intra-op threads and reports 2·n³ / median seconds as GFLOP/s. A bench report divides a
model's achieved GFLOP/s (2 · MACs · images/s) by it, so a reader sees how close each file runs to what
this CPU does on the friendliest possible workload. An INT8 file can exceed 1.0: VNNI's INT8 dot
products do more operations per cycle than fp32 FMAs; the fraction is still against the fp32 peak.
Measured once per process and thread count.
"""

from __future__ import annotations

import os
import time
from typing import Any

GEMM_N = 2048
_CACHE: dict[tuple[int, int], dict[str, Any]] = {}


def default_threads() -> int:
    """The cores this process may use (ONNX Runtime's and OpenVINO's default thread count on a small machine)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def gemm_peak(threads: int | None = None, n: int = GEMM_N, min_iters: int = 5, min_seconds: float = 0.5) -> dict[str, Any]:
    """``{"gflops", "threads", "n", "dtype", "iterations", "median_ms", "how"}`` of an fp32 n³ GEMM on the CPU."""
    import torch

    threads = int(threads or default_threads())
    key = (threads, n)
    if key in _CACHE:
        return _CACHE[key]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=gen)
        b = torch.randn(n, n, generator=gen)
        c = torch.empty(n, n)
        torch.matmul(a, b, out=c)  # warm-up: thread pool, page faults
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < min_iters or time.perf_counter() - start < min_seconds:
            t0 = time.perf_counter()
            torch.matmul(a, b, out=c)
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
    times.sort()
    median = times[len(times) // 2]
    result = {"gflops": 2.0 * n**3 / median / 1e9, "threads": threads, "n": n, "dtype": "fp32",
              "iterations": len(times), "median_ms": median * 1e3,
              "how": f"torch.matmul fp32 {n}x{n}x{n} on the CPU, {threads} threads, median of {len(times)}"}
    _CACHE[key] = result
    return result
