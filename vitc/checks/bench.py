"""Throughput and latency measured the trtexec way through any runner, and A/B speedups that hold on
noisy machines.

Protocol, per batch size (trtexec's, with its defaults' spirit):

* Input: a synthetic batch of the target's own input shape (seeded normal noise; throughput
  depends on shapes, not values), **staged on the device once** — timed iterations exclude host↔device
  copies, like ``trtexec --noDataTransfers``.
* Warm-up: one call (this is where ``torch.compile``, CUDA-graph capture and lazy allocations
  happen), then iterate for ``warmup_ms`` more, so a long compile does not eat the warm-up.
* Timed loop: iterate until **both** ``min_iters`` iterations and ``min_seconds`` of wall time are
  reached. Each iteration's latency is ``time.perf_counter`` around the call plus a device
  synchronize (ms); unlike trtexec, no batch is enqueued ahead of the running one, so images/s
  includes the launch gap between iterations (small with ``--cuda-graph``). On CUDA, ``torch.cuda.Event``
  pairs on the runner's stream also give the GPU compute time (ms) — where the backend exposes its
  stream (torch, TensorRT; not ONNX Runtime).
* Reported: images/s = batch × iterations / wall time of the timed loop; latency min/median/mean/
  p90/p95/p99/max/std (percentiles by linear interpolation); the coefficient of variation
  CV = std/mean of GPU compute time where measured, else of latency, with a warning above
  ``CV_WARN`` = 0.10 (the numbers are noisy: other load, clock scaling).

``compare`` runs two targets **alternately** (A, B, A, B, ...) at each batch size, so slow drifts of
the machine hit both equally, and reports the speedup of B over A as median latency(A) / median
latency(B), plus the median of the per-round ratios A_i/B_i. Each side needs ``min_iters``
iterations and ``min_seconds`` of its own accumulated latency; its images/s is batch × iterations /
that accumulated time. The sides may differ in backend and precision (each is labelled).

``stack`` runs a reference and any number of targets round-robin (R, T1, T2, ..., R, T1, ...): each
target's *stacked* speedup over the reference — the dense fp32 model on the reference backend — across
method × precision × backend, from the same paired protocol. A target may name its backend as
``BACKEND:PATH`` (``openvino:model.int8.onnx``).

Names: ``speedup`` is always reference (dense) time / target (compressed) time, > 1 when faster;
``macs_ratio`` is always target (compressed) MACs / reference (dense) MACs, < 1 when smaller.

Where the runner has a spec, each batch result also carries the achieved ``gflops`` (2 · MACs ·
images/s / 1e9) and, on a CPU, ``peak_fraction``: that over the GFLOP/s of an fp32 2048³ GEMM measured
on the same threads (:mod:`vitc.checks.peak`, recorded in the report as ``peak``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from vitc.backends import BACKENDS, load_runner
from vitc.backends.base import Runner
from vitc.checks.environment import environment
from vitc.checks.settings import BenchSettings
from vitc.core.errors import UsageError
from vitc.core.progress import log, progress

CV_WARN = 0.10


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
    """One call (``torch.compile``, CUDA-graph capture, lazy allocations), then ``warmup_ms`` of iterations.

    The clock starts after the first call: a compile can outlast the whole warm-up, and timing right
    after it would catch a GPU whose clocks dropped while the CPU compiled.
    """
    call()
    start, n = time.perf_counter(), 1
    while (time.perf_counter() - start) * 1e3 < warmup_ms:
        call()
        n += 1
    return n


def measure(runner: Runner, batch: int, settings: BenchSettings, label: str = "", show_progress: bool = True) -> dict[str, Any]:
    """Warm up, then time ``runner`` at ``batch`` until ``min_iters`` and ``min_seconds`` are both met
    (``show_progress=False``: no progress line of its own, for callers that show theirs)."""
    timed = _Timed(runner, batch, settings.seed)
    _warm_up(timed, settings.warmup_ms)
    timed.reset()
    with progress(f"bench {label} batch {batch}".replace("  ", " "), total=None, show=show_progress) as bar:
        start = time.perf_counter()
        while len(timed.host_ms) < settings.min_iters or time.perf_counter() - start < settings.min_seconds:
            timed()
            bar.advance()
        wall = time.perf_counter() - start
    return batch_result(batch, timed.host_ms, wall, timed.gpu_ms())


def measure_group(runners: Sequence[Runner], batch: int, settings: BenchSettings, label: str = "compare",
                  show_progress: bool = True, seconds_of: str = "each") -> tuple[list[dict[str, Any]], list[list[float]]]:
    """Time the runners round-robin (1, 2, ..., n, 1, 2, ...) at ``batch`` until each has ``min_iters``
    iterations and ``min_seconds`` of accumulated latency (``seconds_of="all"``: the group together, for a
    tiny target paired with a large reference); their batch results and per-round latencies (ms)."""
    timed = [_Timed(r, batch, settings.seed) for r in runners]
    for t in timed:
        _warm_up(t, settings.warmup_ms)
    for t in timed:
        t.reset()
    min_ms = settings.min_seconds * 1e3
    with progress(f"{label} batch {batch}", total=None, show=show_progress) as bar:
        def seconds() -> float:
            each = [sum(t.host_ms) for t in timed]
            return sum(each) if seconds_of == "all" else min(each)

        while len(timed[0].host_ms) < settings.min_iters or seconds() < min_ms:
            for t in timed:
                t()
            bar.advance()
    return [batch_result(batch, t.host_ms, sum(t.host_ms) / 1e3, t.gpu_ms()) for t in timed], [t.host_ms for t in timed]


def measure_pair(runner_a: Runner, runner_b: Runner, batch: int, settings: BenchSettings) -> dict[str, Any]:
    """Time A and B alternately at ``batch``; return both reports and the speedup of B over A."""
    (a, b), (a_ms, b_ms) = measure_group([runner_a, runner_b], batch, settings)
    return {"batch": batch, "rounds": len(a_ms), **speedups(a, b, a_ms, b_ms), "a": a, "b": b}


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
# achieved GFLOP/s and the machine's peak
# ------------------------------------------------------------------------------------------------

def runner_threads(runner: Runner) -> int | None:
    """The intra-op threads ``runner`` computes with (None on a GPU)."""
    if runner.device != "cpu":
        return None
    if runner.backend == "torch":
        return torch.get_num_threads()
    from vitc.checks.peak import default_threads

    return getattr(runner, "threads", None) or default_threads()


def runner_peak(runner: Runner) -> dict[str, Any] | None:
    """The fp32 GEMM peak on the runner's device and threads (CPU only; measured once per process)."""
    threads = runner_threads(runner)
    if threads is None:
        return None
    from vitc.checks.peak import gemm_peak

    return gemm_peak(threads)


def add_efficiency(result: dict[str, Any], macs: int | None, peak: dict[str, Any] | None) -> dict[str, Any]:
    """Add ``gflops`` (2 · MACs · images/s) and ``peak_fraction`` (of the fp32 GEMM peak) to a batch result."""
    gflops = 2.0 * macs * result["images_per_s"] / 1e9 if macs else None
    result["gflops"] = gflops
    result["peak_fraction"] = gflops / peak["gflops"] if gflops and peak else None
    return result


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
    batch_sizes = _check_batches(batch_sizes, [(runner, target)])
    results = bench_runner(runner, batch_sizes, settings, label=runner.backend)
    summary = _runner_summary(runner)
    for r in results:
        add_efficiency(r, summary["macs"], summary["peak"])
    return {
        "mode": "bench",
        "target": target,
        **summary,
        "settings": {**_protocol(settings), "batch_sizes": list(batch_sizes)},
        "environment": environment([runner]),
        "results": results,
        "warnings": [r["warning"] for r in results if r["warning"]],
    }


def compare_report(runner_a: Runner, runner_b: Runner, batch_sizes: Sequence[int], settings: BenchSettings,
                   target_a: str = "A", target_b: str = "B") -> dict[str, Any]:
    """The ``vitc bench --compare --json`` report of two open runners (speedup of B over A).

    The two sides may differ in precision (fp32 vs int8 is the comparison INT8 users want); each side
    is labelled with its backend and precision, and the speedup then includes the change of precision.
    """
    settings.validate()
    batch_sizes = _check_batches(batch_sizes, [(runner_a, target_a), (runner_b, target_b)])
    warnings = []
    if runner_a.input_shape != runner_b.input_shape:
        warnings.append(f"the targets take different inputs {runner_a.input_shape} vs {runner_b.input_shape}; the speedup "
                        "includes the change of input size")
    if (runner_a.backend, runner_a.precision) != (runner_b.backend, runner_b.precision):
        warnings.append(f"A runs {runner_a.backend} {runner_a.precision} and B {runner_b.backend} {runner_b.precision}: "
                        "the speedup includes that change, not only the model's")
    a_sum, b_sum = _runner_summary(runner_a), _runner_summary(runner_b)
    results = []
    for b in batch_sizes:
        r = measure_pair(runner_a, runner_b, b, settings)
        warnings += [f"{name}: {r[side]['warning']}" for side, name in (("a", target_a), ("b", target_b)) if r[side]["warning"]]
        add_efficiency(r["a"], a_sum["macs"], a_sum["peak"])
        add_efficiency(r["b"], b_sum["macs"], b_sum["peak"])
        results.append(r)
    for w in warnings:
        log(f"warning: {w}")
    macs = None
    if a_sum["macs"] and b_sum["macs"]:
        macs = {"a": a_sum["macs"], "b": b_sum["macs"], "macs_ratio": b_sum["macs"] / a_sum["macs"]}
    return {
        "mode": "compare",
        "a": {"target": target_a, "label": _label(runner_a), **a_sum},
        "b": {"target": target_b, "label": _label(runner_b), **b_sum},
        "macs": macs,
        "settings": {**_protocol(settings), "batch_sizes": list(batch_sizes), "order": "ABAB"},
        "environment": environment([runner_a, runner_b]),
        "results": results,
        "warnings": warnings,
    }


def stack_report(runners: Sequence[Runner], targets: Sequence[str], batch_sizes: Sequence[int],
                 settings: BenchSettings) -> dict[str, Any]:
    """The ``vitc bench REF T1 T2 ...`` report: every target's speedup over the first (the reference), run
    round-robin at each batch size, with images/s, achieved GFLOP/s, its fraction of the GEMM peak and the
    MACs ratio — the stacked number across method × precision × backend."""
    settings.validate()
    if len(runners) < 2:
        raise UsageError("a stacked bench needs a reference and at least one target")
    batch_sizes = _check_batches(batch_sizes, list(zip(runners, targets)))
    summaries = [_runner_summary(r) for r in runners]
    ref_macs = summaries[0]["macs"]
    warnings = []
    shapes = {r.input_shape for r in runners}
    if len(shapes) > 1:
        warnings.append(f"the targets take different inputs {sorted(shapes)}; speedups include the change of input size")
    results = []
    for b in batch_sizes:
        measured, ms = measure_group(runners, b, settings, label="stack")
        rows = []
        for target, summary, res, times in zip(targets, summaries, measured, ms):
            add_efficiency(res, summary["macs"], summary["peak"])
            if res["warning"]:
                warnings.append(f"{target}: {res['warning']}")
            rows.append({"target": target, "label": _label_of(summary), **speedups(measured[0], res, ms[0], times), **res})
        results.append({"batch": b, "rounds": len(ms[0]), "rows": rows})
    for w in warnings:
        log(f"warning: {w}")
    entries = [{"target": t, "label": _label_of(s), **s,
                "macs_ratio": s["macs"] / ref_macs if s["macs"] and ref_macs else None} for t, s in zip(targets, summaries)]
    return {
        "mode": "stack",
        "reference": entries[0],
        "targets": entries,
        "settings": {**_protocol(settings), "batch_sizes": list(batch_sizes), "order": "round-robin"},
        "environment": environment(list(runners)),
        "results": results,
        "warnings": warnings,
    }


def stack_targets(targets: Sequence[str], settings: BenchSettings | None = None, *, pretrained: bool = False,
                  checkpoint: str | None = None, **options: Any) -> dict[str, Any]:
    """Open ``targets`` (the first is the reference; ``BACKEND:PATH`` picks a backend) and :func:`stack_report` them."""
    from contextlib import ExitStack

    s = BenchSettings.with_options(settings, **options)
    with ExitStack() as stack:
        runners = [stack.enter_context(_open(t, s, pretrained, checkpoint)) for t in targets]
        return stack_report(runners, list(targets), s.batch_sizes, s)


def split_target(target: str) -> tuple[str | None, str]:
    """``"openvino:model.onnx"`` → ``("openvino", "model.onnx")``; a target without a backend prefix → ``(None, target)``."""
    name, sep, rest = target.partition(":")
    if sep and name in BACKENDS and rest:
        return name, rest
    return None, target


def bench_target(target: str, settings: BenchSettings | None = None, *, pretrained: bool = False,
                 checkpoint: str | None = None, **options: Any) -> dict[str, Any]:
    """Benchmark one target (artifact, timm name, .onnx, .engine) through its backend; the ``--json`` report.

    ``options`` replace fields of ``settings`` (:class:`~vitc.checks.settings.BenchSettings`).
    """
    s = BenchSettings.with_options(settings, **options)
    with _open(target, s, pretrained, checkpoint) as runner:
        return bench_report(runner, s.batch_sizes, s, target)


def compare_targets(target_a: str, target_b: str, settings: BenchSettings | None = None, *, pretrained: bool = False,
                    checkpoint: str | None = None, **options: Any) -> dict[str, Any]:
    """Run A and B alternately per batch size; report the speedup of B over A (and the analytic MACs ratio)."""
    s = BenchSettings.with_options(settings, **options)
    with _open(target_a, s, pretrained, checkpoint) as ra, _open(target_b, s, pretrained, checkpoint) as rb:
        return compare_report(ra, rb, s.batch_sizes, s, target_a, target_b)


def _open(target: str, s: BenchSettings, pretrained: bool, checkpoint: str | None) -> Runner:
    options: dict[str, Any] = {"compile": s.compile, "cuda_graph": s.cuda_graph, "pretrained": pretrained,
                               "checkpoint": checkpoint}
    backend, path = split_target(target)
    return load_runner(path, backend=backend or s.backend, device=s.device, precision=s.precision,
                       **{k: v for k, v in options.items() if v})


def _protocol(settings: BenchSettings) -> dict[str, Any]:
    return {"warmup_ms": settings.warmup_ms, "min_iters": settings.min_iters, "min_seconds": settings.min_seconds,
            "seed": settings.seed, "data_transfers": False, "cv_warn": CV_WARN}


def _label(runner: Runner) -> str:
    return f"{runner.backend} {runner.precision} on {runner.device}"


def _label_of(summary: dict[str, Any]) -> str:
    return f"{summary['backend']} {summary['precision']} on {summary['device']}"


def _runner_summary(runner: Runner) -> dict[str, Any]:
    from vitc.core.flops import model_macs

    spec = runner.spec
    return {
        "backend": runner.backend,
        "precision": runner.precision,
        "device": runner.device,
        "input_shape": list(runner.input_shape),
        "model": spec.name if spec else None,
        "macs": model_macs(spec) if spec else None,
        "runner": runner.describe(),
        "peak": runner_peak(runner),
    }


def _check_batches(batch_sizes: Sequence[int], runners: Sequence[tuple[Runner, str]]) -> list[int]:
    """Positive batch sizes that every runner runs as such (a static-batch ONNX only at its own batch)."""
    out = [int(b) for b in batch_sizes]
    if not out or any(b < 1 for b in out):
        raise UsageError(f"batch sizes must be >= 1, got {list(batch_sizes)}")
    for runner, target in runners:
        static = runner.static_batch
        if static is not None and any(b != static for b in out):
            raise UsageError(f"{target} has a static batch of {static}: bench it at --batch-sizes {static}, or re-export "
                             "it with a dynamic batch (the default) to measure other batch sizes")
    return out
