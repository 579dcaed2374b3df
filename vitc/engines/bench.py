"""Throughput and latency measured the trtexec way through any runner, and A/B speedups that hold on
noisy machines.

Protocol, per batch size (trtexec's, with its defaults' spirit):

* Input: a synthetic batch of the target's own input shape (seeded normal noise; throughput
  depends on shapes, not values), **staged on the device once** — timed iterations exclude host↔device
  copies, like ``trtexec --noDataTransfers``.
* Warm-up: iterate for ``warmup_ms`` (at least once; this is where ``torch.compile``, CUDA-graph
  capture and lazy allocations happen).
* Timed loop: iterate until **both** ``min_iters`` iterations and ``min_seconds`` of wall time are
  reached. Each iteration's latency is ``time.perf_counter`` around the call plus a device
  synchronize (ms); unlike trtexec, no batch is enqueued ahead of the running one, so images/s
  includes the launch gap between iterations (small with ``--cuda-graph``). On CUDA, ``torch.cuda.Event`` pairs on the runner's stream also give the GPU
  compute time (ms) — where the backend exposes its stream (torch, TensorRT; not ONNX Runtime).
* Reported: images/s = batch × iterations / wall time of the timed loop; latency min/median/mean/
  p90/p95/p99/max/std (percentiles by linear interpolation); the coefficient of variation
  CV = std/mean of GPU compute time where measured, else of latency, with a warning above
  ``CV_WARN`` = 0.10 (the numbers are noisy: other load, clock scaling).

``compare`` runs two targets **alternately** (A, B, A, B, ...) at each batch size, so slow drifts of
the machine hit both equally, and reports the speedup of B over A as median latency(A) / median
latency(B), plus the median of the per-round ratios A_i/B_i. Each side needs ``min_iters``
iterations and ``min_seconds`` of its own accumulated latency; its images/s is batch × iterations /
that accumulated time. Both sides must compute in the same precision.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from vitc import __version__
from vitc.engines.base import Runner, load_runner
from vitc.errors import UsageError
from vitc.progress import log, progress

CV_WARN = 0.10
DEFAULT_BATCHES = (1, 8, 32, 64)


@dataclass(frozen=True)
class BenchSettings:
    """Warm-up (ms), stopping rule (iterations and seconds, both must be met) and input seed."""

    warmup_ms: float = 500.0
    min_iters: int = 50
    min_seconds: float = 3.0
    seed: int = 0

    def validate(self) -> None:
        if self.warmup_ms < 0:
            raise UsageError(f"--warmup-ms must be >= 0, got {self.warmup_ms}")
        if self.min_iters < 1:
            raise UsageError(f"--min-iters must be >= 1, got {self.min_iters}")
        if self.min_seconds < 0:
            raise UsageError(f"--min-seconds must be >= 0, got {self.min_seconds}")


# ------------------------------------------------------------------------------------------------
# statistics
# ------------------------------------------------------------------------------------------------

def latency_stats(ms: Sequence[float]) -> dict[str, float]:
    """min/median/mean/p90/p95/p99/max/std (sample std) of per-iteration times in ms."""
    a = np.asarray(ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no samples")
    p90, p95, p99 = np.percentile(a, [90, 95, 99])
    return {
        "min": float(a.min()), "median": float(np.median(a)), "mean": float(a.mean()),
        "p90": float(p90), "p95": float(p95), "p99": float(p99), "max": float(a.max()),
        "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
    }


def batch_result(batch: int, latency_ms: Sequence[float], wall_s: float, gpu_ms: Sequence[float] | None = None) -> dict[str, Any]:
    """One batch size's report: images/s, latency and GPU-compute stats, CV and its warning."""
    lat = latency_stats(latency_ms)
    gpu = latency_stats(gpu_ms) if gpu_ms else None
    basis, basis_name = (gpu, "gpu_compute") if gpu else (lat, "latency")
    cv = basis["std"] / basis["mean"] if basis["mean"] > 0 else 0.0
    warning = None
    if cv > CV_WARN:
        warning = (f"batch {batch}: {basis_name} varies a lot (CV {cv:.2f} > {CV_WARN:.2f}); other load or clock "
                   "scaling — trust ratios from --compare more than absolute times")
    return {
        "batch": batch,
        "iterations": len(latency_ms),
        "wall_s": wall_s,
        "images_per_s": batch * len(latency_ms) / wall_s if wall_s > 0 else float("inf"),
        "latency_ms": lat,
        "gpu_compute_ms": gpu,
        "cv": cv,
        "cv_of": basis_name,
        "warning": warning,
    }


# ------------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------------

def synthetic_batch(input_shape: Sequence[int], batch: int, seed: int = 0) -> np.ndarray:
    """Seeded standard-normal float32 images (batch, C, H, W) — the scale of normalised pixels."""
    return np.random.default_rng(seed).standard_normal((batch, *input_shape), dtype=np.float32)


class _Timed:
    """One runner with one staged batch: each call runs it once and records host (and GPU) time."""

    def __init__(self, runner: Runner, batch: int, seed: int) -> None:
        self.runner = runner
        self.batch = batch
        self.staged = runner.stage(synthetic_batch(runner.input_shape, batch, seed))
        self.stream = runner.cuda_stream()
        self.reset()

    def reset(self) -> None:
        self.host_ms: list[float] = []
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    def __call__(self) -> float:
        start_ev = end_ev = None
        if self.stream is not None:
            start_ev, end_ev = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start_ev.record(self.stream)
        t0 = time.perf_counter()
        self.runner.run_staged(self.staged)
        if end_ev is not None:
            end_ev.record(self.stream)
        self.runner.synchronize()
        ms = (time.perf_counter() - t0) * 1e3
        self.host_ms.append(ms)
        if start_ev is not None and end_ev is not None:
            self._events.append((start_ev, end_ev))
        return ms

    def gpu_ms(self) -> list[float] | None:
        if not self._events:
            return None
        torch.cuda.synchronize()
        return [float(s.elapsed_time(e)) for s, e in self._events]


def _warm_up(call: Callable[[], float], warmup_ms: float) -> int:
    start, n = time.perf_counter(), 0
    while n == 0 or (time.perf_counter() - start) * 1e3 < warmup_ms:
        call()
        n += 1
    return n


def measure(runner: Runner, batch: int, settings: BenchSettings, label: str = "") -> dict[str, Any]:
    """Warm up, then time ``runner`` at ``batch`` until ``min_iters`` and ``min_seconds`` are both met."""
    timed = _Timed(runner, batch, settings.seed)
    _warm_up(timed, settings.warmup_ms)
    timed.reset()
    with progress(f"bench {label} batch {batch}".replace("  ", " "), total=None) as bar:
        start = time.perf_counter()
        while len(timed.host_ms) < settings.min_iters or time.perf_counter() - start < settings.min_seconds:
            timed()
            bar.advance()
        wall = time.perf_counter() - start
    return batch_result(batch, timed.host_ms, wall, timed.gpu_ms())


def measure_pair(runner_a: Runner, runner_b: Runner, batch: int, settings: BenchSettings) -> dict[str, Any]:
    """Time A and B alternately at ``batch``; return both reports and the speedup of B over A."""
    timed_a, timed_b = _Timed(runner_a, batch, settings.seed), _Timed(runner_b, batch, settings.seed)
    _warm_up(timed_a, settings.warmup_ms)
    _warm_up(timed_b, settings.warmup_ms)
    timed_a.reset()
    timed_b.reset()
    min_ms = settings.min_seconds * 1e3
    with progress(f"compare batch {batch}", total=None) as bar:
        while (len(timed_a.host_ms) < settings.min_iters
               or min(sum(timed_a.host_ms), sum(timed_b.host_ms)) < min_ms):
            timed_a()
            timed_b()
            bar.advance()
    a = batch_result(batch, timed_a.host_ms, sum(timed_a.host_ms) / 1e3, timed_a.gpu_ms())
    b = batch_result(batch, timed_b.host_ms, sum(timed_b.host_ms) / 1e3, timed_b.gpu_ms())
    return {"batch": batch, "rounds": len(timed_a.host_ms), **speedups(a, b, timed_a.host_ms, timed_b.host_ms), "a": a, "b": b}


def speedups(a: dict[str, Any], b: dict[str, Any], a_ms: Sequence[float], b_ms: Sequence[float]) -> dict[str, Any]:
    """Speedup of B over A (>1: B is faster) from medians, throughput, per-round ratios and GPU time."""
    ratios = np.asarray(a_ms, dtype=np.float64) / np.asarray(b_ms, dtype=np.float64)
    out: dict[str, Any] = {
        "speedup": a["latency_ms"]["median"] / b["latency_ms"]["median"],
        "speedup_throughput": b["images_per_s"] / a["images_per_s"],
        "speedup_paired": float(np.median(ratios)),
        "speedup_paired_iqr": [float(np.percentile(ratios, 25)), float(np.percentile(ratios, 75))],
        "speedup_gpu_compute": None,
    }
    if a["gpu_compute_ms"] and b["gpu_compute_ms"]:
        out["speedup_gpu_compute"] = a["gpu_compute_ms"]["median"] / b["gpu_compute_ms"]["median"]
    return out


# ------------------------------------------------------------------------------------------------
# environment
# ------------------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_info(index: int = 0) -> dict[str, Any]:
    """Name, compute capability, memory (GiB), CUDA runtime, and driver/clocks (MHz) from nvidia-smi if present."""
    props = torch.cuda.get_device_properties(index)
    info: dict[str, Any] = {
        "name": props.name,
        "capability": f"{props.major}.{props.minor}",
        "memory_gib": round(props.total_memory / 2**30, 1),
        "cuda_runtime": torch.version.cuda,
        "driver": None, "sm_clock_mhz": None, "max_sm_clock_mhz": None,
    }
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=driver_version,clocks.sm,clocks.max.sm", "--format=csv,noheader,nounits",
                                  "-i", str(index)], capture_output=True, text=True, timeout=10, check=True).stdout
            driver, sm, max_sm = (v.strip() for v in out.strip().splitlines()[0].split(","))
            info.update(driver=driver, sm_clock_mhz=_int_or_none(sm), max_sm_clock_mhz=_int_or_none(max_sm))
        except (subprocess.SubprocessError, OSError, ValueError, IndexError):
            pass
    return info


def environment(runners: Sequence[Runner]) -> dict[str, Any]:
    """Device, driver, library versions and thread counts, for the JSON report."""
    from importlib import metadata

    from vitc.engines.trt_common import tensorrt_version

    def version(*dists: str) -> str | None:
        for d in dists:
            try:
                return metadata.version(d)
            except metadata.PackageNotFoundError:
                continue
        return None

    env: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "platform": platform.platform(),
        "versions": {
            "vitc": __version__, "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "onnxruntime": version("onnxruntime", "onnxruntime-gpu"), "tensorrt": tensorrt_version(),
        },
        "gpu": None,
    }
    cuda = [r for r in runners if r.device.startswith("cuda")]
    if cuda:
        env["gpu"] = gpu_info(torch.device(cuda[0].device).index or 0)
    return env


# ------------------------------------------------------------------------------------------------
# targets → reports
# ------------------------------------------------------------------------------------------------

def bench_runner(runner: Runner, batch_sizes: Sequence[int], settings: BenchSettings, label: str = "") -> list[dict[str, Any]]:
    """:func:`measure` at each batch size; warnings also go to stderr."""
    results = []
    for b in batch_sizes:
        r = measure(runner, b, settings, label)
        if r["warning"]:
            log(f"warning: {r['warning']}")
        results.append(r)
    return results


def bench_report(runner: Runner, batch_sizes: Sequence[int], settings: BenchSettings, target: str = "") -> dict[str, Any]:
    """The ``vitc bench --json`` report of an open runner."""
    settings.validate()
    results = bench_runner(runner, _check_batches(batch_sizes), settings, label=runner.backend)
    return {
        "mode": "bench",
        "target": target,
        **_runner_summary(runner),
        "settings": {**asdict(settings), "data_transfers": False, "cv_warn": CV_WARN},
        "environment": environment([runner]),
        "results": results,
        "warnings": [r["warning"] for r in results if r["warning"]],
    }


def compare_report(runner_a: Runner, runner_b: Runner, batch_sizes: Sequence[int], settings: BenchSettings,
                   target_a: str = "A", target_b: str = "B") -> dict[str, Any]:
    """The ``vitc bench --compare --json`` report of two open runners (speedup of B over A)."""
    settings.validate()
    batch_sizes = _check_batches(batch_sizes)
    if runner_a.precision != runner_b.precision:
        raise UsageError(f"compare needs the same precision on both sides: {target_a} is {runner_a.precision}, "
                         f"{target_b} is {runner_b.precision}")
    warnings = []
    if runner_a.input_shape != runner_b.input_shape:
        warnings.append(f"the targets take different inputs {runner_a.input_shape} vs {runner_b.input_shape}; the speedup "
                        "includes the change of input size")
    results = []
    for b in batch_sizes:
        r = measure_pair(runner_a, runner_b, b, settings)
        warnings += [f"{name}: {r[side]['warning']}" for side, name in (("a", target_a), ("b", target_b)) if r[side]["warning"]]
        results.append(r)
    for w in warnings:
        log(f"warning: {w}")
    a_sum, b_sum = _runner_summary(runner_a), _runner_summary(runner_b)
    macs = None
    if a_sum["macs"] and b_sum["macs"]:
        macs = {"a": a_sum["macs"], "b": b_sum["macs"], "ratio": a_sum["macs"] / b_sum["macs"]}
    return {
        "mode": "compare",
        "a": {"target": target_a, **a_sum},
        "b": {"target": target_b, **b_sum},
        "macs": macs,
        "settings": {**asdict(settings), "data_transfers": False, "cv_warn": CV_WARN, "order": "ABAB"},
        "environment": environment([runner_a, runner_b]),
        "results": results,
        "warnings": warnings,
    }


def bench_target(target: str, *, backend: str = "auto", device: str = "auto", batch_sizes: Sequence[int] = DEFAULT_BATCHES,
                 precision: str | None = None, warmup_ms: float = 500.0, min_iters: int = 50, min_seconds: float = 3.0,
                 seed: int = 0, compile: bool = False, cuda_graph: bool = False, pretrained: bool = False,
                 checkpoint: str | None = None) -> dict[str, Any]:
    """Benchmark one target (artifact, timm name, .onnx, .engine) through its backend; the ``--json`` report."""
    settings = BenchSettings(warmup_ms, min_iters, min_seconds, seed)
    settings.validate()
    batch_sizes = _check_batches(batch_sizes)
    with load_runner(target, backend=backend, device=device, precision=precision,
                     **_runner_options(compile, cuda_graph, pretrained, checkpoint)) as runner:
        return bench_report(runner, batch_sizes, settings, target)


def compare_targets(target_a: str, target_b: str, *, backend: str = "auto", device: str = "auto",
                    batch_sizes: Sequence[int] = DEFAULT_BATCHES, precision: str | None = None, warmup_ms: float = 500.0,
                    min_iters: int = 50, min_seconds: float = 3.0, seed: int = 0, compile: bool = False,
                    cuda_graph: bool = False, pretrained: bool = False, checkpoint: str | None = None) -> dict[str, Any]:
    """Run A and B alternately per batch size; report the speedup of B over A (and the analytic MACs ratio)."""
    settings = BenchSettings(warmup_ms, min_iters, min_seconds, seed)
    settings.validate()
    batch_sizes = _check_batches(batch_sizes)
    opts = _runner_options(compile, cuda_graph, pretrained, checkpoint)
    with load_runner(target_a, backend=backend, device=device, precision=precision, **opts) as ra, \
            load_runner(target_b, backend=backend, device=device, precision=precision, **opts) as rb:
        return compare_report(ra, rb, batch_sizes, settings, target_a, target_b)


def _runner_summary(runner: Runner) -> dict[str, Any]:
    from vitc.models.flops import model_macs

    spec = runner.spec
    return {
        "backend": runner.backend,
        "precision": runner.precision,
        "device": runner.device,
        "input_shape": list(runner.input_shape),
        "model": spec.name if spec else None,
        "macs": model_macs(spec) if spec else None,
        "runner": runner.describe(),
    }


def _runner_options(compile: bool, cuda_graph: bool, pretrained: bool, checkpoint: str | None) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if compile:
        opts["compile"] = True
    if cuda_graph:
        opts["cuda_graph"] = True
    if pretrained:
        opts["pretrained"] = True
    if checkpoint:
        opts["checkpoint"] = checkpoint
    return opts


def _check_batches(batch_sizes: Sequence[int]) -> list[int]:
    out = [int(b) for b in batch_sizes]
    if not out or any(b < 1 for b in out):
        raise UsageError(f"batch sizes must be >= 1, got {list(batch_sizes)}")
    return out


def _int_or_none(text: str) -> int | None:
    try:
        return int(float(text))
    except ValueError:
        return None
