"""The one bench protocol: N runners timed round-robin, the trtexec way, against a reference; typed results.

Every measurement of speed in vitc goes through :func:`bench` — ``vitc bench TARGET`` (N = 1), ``vitc bench
--compare A B`` (N = 2, A the reference), ``vitc bench REF T1 T2 ...`` (the stacked bench), the pipeline's bench
stages, ``vitc profile``'s paired probes, ``vitc tune`` and the benchmarks. Per batch size:

* Input: a synthetic batch of each target's own input shape (seeded normal noise; throughput depends on
  shapes, not values), **staged on the device once** — timed iterations exclude host↔device copies, like
  ``trtexec --noDataTransfers``.
* Warm-up, per participant: one call (``torch.compile``, CUDA-graph capture and lazy allocations happen
  here), then ``warmup_ms`` more of iterations, so a long compile does not eat the warm-up.
* Timed rounds: every participant runs once per round, in order (R, T1, T2, ..., R, T1, ...), until each has
  ``min_iters`` iterations and ``min_seconds`` of its own accumulated latency (``seconds_of="all"``: of all
  together). A participant's latency is ``time.perf_counter`` around the call plus a device synchronize (ms);
  on CUDA, ``torch.cuda.Event`` pairs on the runner's stream also give the GPU compute time. Alternation makes
  slow drifts of a shared machine hit every participant alike.
* The peak: with ``peak`` on (the default), a GEMM of each precision present (:class:`vitc.checks.peak.PeakGemm`)
  is one more participant of the same rounds, so a file's share of the peak is of a peak measured under the
  same load.
* Reported per target and batch (:class:`Row`): images/s = batch × iterations / its accumulated time; latency
  min/median/mean/p90/p95/p99/max/std; the coefficient of variation CV = std/mean (of GPU compute time where
  measured), with a warning above ``CV_WARN``; achieved GFLOP/s = 2 · MACs · images/s (GOP/s for INT8) and its
  share of the GEMM peak of its precision; with a reference, the speedup over it: median latency ratio
  (``speedup``), the median of the per-round ratios R_i / T_i (``speedup_paired``, with its IQR), the throughput
  ratio and the GPU-compute ratio.

Names: ``speedup`` is always reference time / target time (> 1 when the target is faster); ``macs_ratio`` is
target MACs / reference MACs (< 1 when smaller). The JSON form is :meth:`BenchResult.to_dict` (``format``
``vitc.bench/2``; one shape for every N), and :func:`format_bench` the one table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vitc.backends import BACKENDS, detect_backend, load_runner, split_target
from vitc.backends.base import Runner
from vitc.checks.environment import environment
from vitc.checks.settings import BenchSettings
from vitc.core.errors import UsageError
from vitc.core.progress import log, progress

BENCH_FORMAT = "vitc.bench/2"
CV_WARN = 0.10


# ------------------------------------------------------------------------------------------------
# typed results
# ------------------------------------------------------------------------------------------------

@dataclass
class Stats:
    """min/median/mean/p90/p95/p99/max/std (sample std) of per-iteration times, ms."""

    min: float
    median: float
    mean: float
    p90: float
    p95: float
    p99: float
    max: float
    std: float

    @classmethod
    def of(cls, ms: Sequence[float]) -> Stats:
        a = np.asarray(ms, dtype=np.float64)
        if a.size == 0:
            raise ValueError("no samples")
        p90, p95, p99 = np.percentile(a, [90, 95, 99])
        return cls(min=float(a.min()), median=float(np.median(a)), mean=float(a.mean()), p90=float(p90), p95=float(p95),
                   p99=float(p99), max=float(a.max()), std=float(a.std(ddof=1)) if a.size > 1 else 0.0)


@dataclass
class Row:
    """One target at one batch size."""

    target: str
    label: str  # "BACKEND PRECISION on DEVICE"
    batch: int
    iterations: int
    seconds: float  # its accumulated timed latency
    images_per_s: float
    latency_ms: Stats
    gpu_compute_ms: Stats | None = None
    cv: float = 0.0
    cv_of: str = "latency"
    warning: str | None = None
    gflops: float | None = None  # 2 · MACs · images/s (GOP/s for INT8)
    peak_gflops: float | None = None  # the GEMM of its precision, timed in the same rounds
    peak_fraction: float | None = None
    speedup: float | None = None  # reference median / this median
    speedup_paired: float | None = None  # median over rounds of reference_i / this_i
    speedup_paired_iqr: list[float] | None = None
    speedup_throughput: float | None = None
    speedup_gpu_compute: float | None = None
    latency_ratio_paired: float | None = None  # median over rounds of this_i / reference_i
    predicted_latency_ms: float | None = None  # from a latency profile (--latency), at its batch size
    predicted_speedup: float | None = None


@dataclass
class Peak:
    """The GEMM of one precision, timed in the same rounds as the targets."""

    precision: str
    device: str
    threads: int | None
    n: int
    how: str
    gflops: float | None = None
    median_ms: float | None = None
    iterations: int = 0
    missing: str | None = None  # why there is none (the device has no GEMM of this precision)


@dataclass
class BatchResult:
    batch: int
    rounds: int
    rows: list[Row]
    peaks: list[Peak] = field(default_factory=list)


@dataclass
class Target:
    """What one target is: its file, how it runs, its model and MACs."""

    target: str
    label: str
    backend: str
    precision: str
    device: str
    input_shape: list[int]
    model: str | None
    macs: int | None
    macs_ratio: float | None  # its MACs / the reference's
    runner: dict[str, Any]


@dataclass
class BenchResult:
    """Every target at every batch size; ``reference`` names the one speedups are over (None for one target)."""

    targets: list[Target]
    results: list[BatchResult]
    settings: dict[str, Any]
    environment: dict[str, Any]
    reference: str | None = None
    warnings: list[str] = field(default_factory=list)
    prediction: dict[str, Any] | None = None
    format: str = BENCH_FORMAT

    def row(self, target: int | str, batch: int) -> Row:
        """The row of ``target`` (index or name) at ``batch``."""
        index = target if isinstance(target, int) else [t.target for t in self.targets].index(target)
        res = next((r for r in self.results if r.batch == batch), None)
        if res is None:
            raise KeyError(f"batch {batch} was not benched")
        return res.rows[index]

    def rows(self) -> Iterator[Row]:
        for res in self.results:
            yield from res.rows

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "reference": self.reference, "targets": [asdict(t) for t in self.targets],
                "results": [asdict(r) for r in self.results], "settings": self.settings, "environment": self.environment,
                "warnings": list(self.warnings), "prediction": self.prediction}

    def to_text(self) -> str:
        return format_bench(self)


# ------------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------------

def latency_stats(ms: Sequence[float]) -> dict[str, float]:
    """:class:`Stats` of per-iteration times in ms, as a dict."""
    return asdict(Stats.of(ms))


def synthetic_batch(input_shape: Sequence[int], batch: int, seed: int = 0) -> np.ndarray:
    """Seeded standard-normal float32 images (batch, C, H, W) — the scale of normalised pixels."""
    return np.random.default_rng(seed).standard_normal((batch, *input_shape), dtype=np.float32)


class _Timed:
    """One participant with one staged batch: each call runs it once and records host (and GPU) time."""

    def __init__(self, runner: Any, batch: int, seed: int) -> None:
        self.runner = runner
        self.staged = runner.stage(synthetic_batch(runner.input_shape, batch, seed)) if isinstance(runner, Runner) else None
        self.stream = runner.cuda_stream()
        self.reset()

    def reset(self) -> None:
        self.host_ms: list[float] = []
        self._events: list[tuple[Any, Any]] = []

    def __call__(self) -> float:
        start_ev = end_ev = None
        if self.stream is not None:
            import torch

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
        import torch

        torch.cuda.synchronize()
        return [float(s.elapsed_time(e)) for s, e in self._events]


def _warm_up(call: Callable[[], float], warmup_ms: float) -> None:
    """One call (``torch.compile``, CUDA-graph capture, lazy allocations), then ``warmup_ms`` of iterations; the
    clock starts after the first call, which a compile can make outlast the whole warm-up."""
    call()
    start = time.perf_counter()
    while (time.perf_counter() - start) * 1e3 < warmup_ms:
        call()


def _round_robin(runners: Sequence[Runner], peaks: Sequence[Any], batch: int, settings: BenchSettings, label: str,
                 show_progress: bool, seconds_of: str) -> tuple[list[_Timed], list[_Timed]]:
    """Warm every participant up, then time them round-robin until each target has ``min_iters`` iterations and
    ``min_seconds`` of accumulated latency (``seconds_of="all"``: the targets together)."""
    timed = [_Timed(r, batch, settings.seed) for r in runners]
    gemms = [_Timed(p, batch, settings.seed) for p in peaks]
    for t in [*timed, *gemms]:
        _warm_up(t, settings.warmup_ms)
        t.reset()
    min_ms = settings.min_seconds * 1e3

    def seconds() -> float:
        each = [sum(t.host_ms) for t in timed]
        return sum(each) if seconds_of == "all" else min(each)

    with progress(f"{label} batch {batch}".strip(), total=None, show=show_progress) as bar:
        while len(timed[0].host_ms) < settings.min_iters or seconds() < min_ms:
            for t in timed:
                t()
            for g in gemms:
                g()
            bar.advance()
    return timed, gemms


def _row(name: str, runner: Runner, batch: int, t: _Timed) -> Row:
    lat = Stats.of(t.host_ms)
    gpu_ms = t.gpu_ms()
    gpu = Stats.of(gpu_ms) if gpu_ms else None
    basis, basis_name = (gpu, "gpu_compute") if gpu else (lat, "latency")
    cv = basis.std / basis.mean if basis.mean > 0 else 0.0
    warning = None
    if cv > CV_WARN:
        warning = (f"{name} batch {batch}: {basis_name} varies a lot (CV {cv:.2f} > {CV_WARN:.2f}); other load or clock "
                   "scaling — trust the paired ratios more than absolute times")
    seconds = sum(t.host_ms) / 1e3
    return Row(target=name, label=label_of(runner), batch=batch, iterations=len(t.host_ms), seconds=seconds,
               images_per_s=batch * len(t.host_ms) / seconds if seconds > 0 else float("inf"), latency_ms=lat,
               gpu_compute_ms=gpu, cv=cv, cv_of=basis_name, warning=warning)


def _add_speedup(row: Row, ref: Row, ref_ms: Sequence[float], ms: Sequence[float]) -> None:
    ratios = np.asarray(ref_ms, dtype=np.float64) / np.asarray(ms, dtype=np.float64)
    row.speedup = ref.latency_ms.median / row.latency_ms.median
    row.speedup_paired = float(np.median(ratios))
    row.speedup_paired_iqr = [float(np.percentile(ratios, 25)), float(np.percentile(ratios, 75))]
    row.speedup_throughput = row.images_per_s / ref.images_per_s
    row.latency_ratio_paired = float(np.median(1.0 / ratios))
    if ref.gpu_compute_ms and row.gpu_compute_ms:
        row.speedup_gpu_compute = ref.gpu_compute_ms.median / row.gpu_compute_ms.median


# ------------------------------------------------------------------------------------------------
# the protocol
# ------------------------------------------------------------------------------------------------

def bench(runners: Sequence[Runner], names: Sequence[str] | None = None, settings: BenchSettings | None = None, *,
          label: str = "bench", show_progress: bool = True, seconds_of: str = "each", quiet: bool = False) -> BenchResult:
    """Time ``runners`` round-robin at each of ``settings.batch_sizes``; with two or more, the first is the
    reference every other one's speedup is over (``quiet``: warnings only in the result, not on stderr)."""
    settings = (settings or BenchSettings()).validate()
    names = list(names) if names is not None else [label_of(r) for r in runners]
    if not runners or len(names) != len(runners):
        raise UsageError("bench needs one name per runner, and at least one runner")
    batch_sizes = check_batches(settings.batch_sizes, list(zip(runners, names)))
    targets = [_target(r, n) for r, n in zip(runners, names)]
    if len(targets) > 1 and targets[0].macs:
        for info in targets:
            info.macs_ratio = info.macs / targets[0].macs if info.macs else None
    warnings = []
    shapes = {r.input_shape for r in runners}
    if len(shapes) > 1:
        warnings.append(f"the targets take different inputs {sorted(shapes)}; speedups include the change of input size")
    kinds = {(r.backend, r.precision) for r in runners}
    if len(kinds) > 1:
        warnings.append("the targets run on " + ", ".join(sorted(f"{b} {p}" for b, p in kinds)) +
                        ": speedups include those changes, not only the models'")
    with ExitStack() as stack:
        gemms = _peak_gemms(runners, stack) if settings.peak else {}
        results = []
        for b in batch_sizes:
            timed, peak_timed = _round_robin(runners, [g for g in gemms.values() if not isinstance(g, str)], b, settings,
                                             label, show_progress, seconds_of)
            rows = [_row(n, r, b, t) for n, r, t in zip(names, runners, timed)]
            if len(rows) > 1:
                for row, t in zip(rows, timed):
                    _add_speedup(row, rows[0], timed[0].host_ms, t.host_ms)
            peaks = _peaks(gemms, peak_timed)
            for row, info in zip(rows, targets):
                _add_efficiency(row, info, peaks)
                if row.warning:
                    warnings.append(row.warning)
            results.append(BatchResult(batch=b, rounds=len(timed[0].host_ms), rows=rows, peaks=list(peaks.values())))
    for w in [] if quiet else warnings:
        log(f"warning: {w}")
    return BenchResult(targets=targets, results=results, settings={**protocol(settings), "batch_sizes": batch_sizes},
                       environment=environment(list(runners)), reference=names[0] if len(names) > 1 else None,
                       warnings=warnings)


def bench_targets(targets: Sequence[str], settings: BenchSettings | None = None, *, pretrained: bool = False,
                  checkpoint: str | None = None, **options: Any) -> BenchResult:
    """Open ``targets`` (artifact, timm name, .onnx, .engine, .xml; ``BACKEND:PATH`` picks a backend) and
    :func:`bench` them; the first is the reference when there are several. ``options`` replace fields of
    ``settings``."""
    s = BenchSettings.with_options(settings, **options)
    with open_targets(targets, s, pretrained=pretrained, checkpoint=checkpoint) as runners:
        return bench(runners, list(targets), s)


@contextmanager
def open_targets(targets: Sequence[str], settings: BenchSettings, *, pretrained: bool = False,
                 checkpoint: str | None = None) -> Iterator[list[Runner]]:
    """The runners of ``targets`` as ``settings`` asks (backend, device, precision, compile, CUDA graphs), closed after."""
    with ExitStack() as stack:
        runners = []
        for target in targets:
            options: dict[str, Any] = {"compile": settings.compile, "cuda_graph": settings.cuda_graph,
                                       "pretrained": pretrained, "checkpoint": checkpoint}
            backend, path = split_target(target)
            name = backend or (detect_backend(path) if settings.backend == "auto" else settings.backend)
            if settings.threads is not None and "threads" in BACKENDS[name].options:
                options["threads"] = settings.threads
            runners.append(stack.enter_context(load_runner(path, backend=name, device=settings.device,
                                                           precision=settings.precision,
                                                           **{k: v for k, v in options.items() if v})))
        yield runners


# ------------------------------------------------------------------------------------------------
# GFLOP/s and the peak
# ------------------------------------------------------------------------------------------------

def _peak_gemms(runners: Sequence[Runner], stack: ExitStack) -> dict[tuple[str, str, int | None], Any]:
    """One GEMM per (precision, device, threads) among the runners; a string where the device has none."""
    from vitc.checks.peak import PeakGemm, peak_precision

    out: dict[tuple[str, str, int | None], Any] = {}
    for r in runners:
        key = (peak_precision(r.precision), _peak_device(r), r.compute_threads())
        if key in out:
            continue
        try:
            gemm = PeakGemm(key[0], key[1], key[2])
            stack.callback(gemm.close)
            out[key] = gemm
        except RuntimeError as e:
            out[key] = str(e)
    return out


def _peak_device(runner: Runner) -> str:
    return runner.device if runner.device.startswith("cuda") else "cpu"


def _peaks(gemms: dict[tuple[str, str, int | None], Any], timed: Sequence[_Timed]) -> dict[tuple[str, str, int | None], Peak]:
    out: dict[tuple[str, str, int | None], Peak] = {}
    it = iter(timed)
    for key, gemm in gemms.items():
        precision, device, threads = key
        if isinstance(gemm, str):
            out[key] = Peak(precision, device, threads, 0, "", missing=gemm)
            continue
        t = next(it)
        ms = t.gpu_ms() or t.host_ms
        median = float(np.median(ms))
        out[key] = Peak(precision, device, threads, gemm.n, gemm.how, gflops=gemm.flops / (median / 1e3) / 1e9,
                        median_ms=median, iterations=len(ms))
    return out


def _add_efficiency(row: Row, target: Target, peaks: dict[tuple[str, str, int | None], Peak]) -> None:
    from vitc.checks.peak import peak_precision

    if not target.macs:
        return
    row.gflops = 2.0 * target.macs * row.images_per_s / 1e9
    threads = target.runner.get("compute_threads")
    peak = peaks.get((peak_precision(target.precision), "cpu" if not target.device.startswith("cuda") else target.device,
                      threads))
    if peak is not None and peak.gflops:
        row.peak_gflops = peak.gflops
        row.peak_fraction = row.gflops / peak.gflops


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------

def label_of(runner: Runner) -> str:
    return f"{runner.backend} {runner.precision} on {runner.device}"


def _target(runner: Runner, name: str) -> Target:
    from vitc.core.flops import model_macs

    spec = runner.spec
    return Target(target=name, label=label_of(runner), backend=runner.backend, precision=runner.precision,
                  device=runner.device, input_shape=list(runner.input_shape), model=spec.name if spec else None,
                  macs=model_macs(spec) if spec else None, macs_ratio=None,
                  runner={**runner.describe(), "compute_threads": runner.compute_threads()})


def protocol(settings: BenchSettings) -> dict[str, Any]:
    return {"warmup_ms": settings.warmup_ms, "min_iters": settings.min_iters, "min_seconds": settings.min_seconds,
            "seed": settings.seed, "threads": settings.threads, "data_transfers": False, "cv_warn": CV_WARN,
            "order": "round-robin", "peak": settings.peak}


def check_batches(batch_sizes: Sequence[int], runners: Sequence[tuple[Runner, str]]) -> list[int]:
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


# ------------------------------------------------------------------------------------------------
# the one table
# ------------------------------------------------------------------------------------------------

def format_bench(result: BenchResult) -> str:
    """A bench result as text: the targets, then one row per target and batch size."""
    from vitc.core.tables import format_table, human_count

    lines = []
    for i, t in enumerate(result.targets):
        role = "reference" if result.reference is not None and i == 0 else "target"
        macs = f", {human_count(t.macs)} MACs/image" if t.macs else ""
        ratio = f" (MACs ratio {t.macs_ratio:.3f})" if t.macs_ratio is not None and i > 0 else ""
        lines.append(f"{role}: {t.target} — {t.label}{macs}{ratio}")
    peaks = {(p.precision, p.device, p.threads): p for res in result.results for p in res.peaks}
    for p in peaks.values():
        lines.append(f"peak {p.precision}: " + (f"{p.gflops:.1f} GFLOP/s ({p.how}, in the same rounds)" if p.gflops
                                                else f"none ({p.missing})"))
    paired = result.reference is not None
    gpu = any(r.gpu_compute_ms for r in result.rows())
    predicted = any(r.predicted_latency_ms is not None or r.predicted_speedup is not None for r in result.rows())
    cols = [("target", "target"), ("batch", "batch"), ("ips", "img/s"), ("median", "median ms"), ("p90", "p90 ms"),
            ("p99", "p99 ms")]
    cols += [("gpu", "GPU ms")] if gpu else []
    cols += [("cv", "CV")]
    cols += [("speedup", "speedup"), ("paired", "paired (IQR)")] if paired else []
    cols += [("gflops", "GFLOP/s"), ("peak", "of peak"), ("iters", "iters")]
    cols += [("predicted", "predicted")] if predicted else []
    rows = []
    for res in result.results:
        for i, r in enumerate(res.rows):
            iqr = r.speedup_paired_iqr
            rows.append({
                "target": r.target, "batch": r.batch, "ips": r.images_per_s, "median": r.latency_ms.median,
                "p90": r.latency_ms.p90, "p99": r.latency_ms.p99, "gpu": r.gpu_compute_ms.median if r.gpu_compute_ms else None,
                "cv": r.cv, "speedup": None if i == 0 else r.speedup,
                "paired": None if i == 0 or r.speedup_paired is None or iqr is None
                else f"{r.speedup_paired:.2f}x ({iqr[0]:.2f}-{iqr[1]:.2f})",
                "gflops": r.gflops, "peak": r.peak_fraction, "iters": r.iterations,
                "predicted": _predicted(r, i, paired),
            })
    if paired:
        lines.append("speedup = reference time / target time (paired: median of per-round ratios)")
    return "\n".join(lines) + "\n" + format_table(rows, cols)


def _predicted(row: Row, index: int, paired: bool) -> str | None:
    if paired and index > 0 and row.predicted_speedup is not None:
        return f"{row.predicted_speedup:.2f}x"
    if not paired and row.predicted_latency_ms is not None:
        return f"{row.predicted_latency_ms:.2f} ms"
    return None


__all__ = ["BENCH_FORMAT", "CV_WARN", "BatchResult", "BenchResult", "Peak", "Row", "Stats", "Target", "bench",
           "bench_targets", "check_batches", "format_bench", "label_of", "latency_stats", "open_targets", "protocol",
           "synthetic_batch"]
