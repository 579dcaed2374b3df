"""The one command for a GPU machine: tests, environment, inference and training throughput, in one run.

    python3 -m pip install -q --no-deps --no-build-isolation -e . && python3 -m benchmarks.gpu_check --out $OUT/gpu
    python -m benchmarks.gpu_check --dry-run --out runs/gpu_check_dry     # same code paths, CPU, tiny models

It writes OUT/gpu_check.json, OUT/gpu_check.md (tables and the acceptance lines), OUT/gpu_check.log (its
own progress) and OUT/pytest.log; work files (artifacts, ONNX, engines) go to a temporary folder. Both
reports are rewritten after every measurement, so a run stopped by a timeout keeps what it measured.

Sections, in order (``SECTIONS``; one more is a function and an entry there): ``tests`` (``pytest -m gpu
tests/test_gpu.py`` in a subprocess), ``inference`` (fp16 eager and CUDA graphs, dense against each shape of
:mod:`benchmarks.shapes`, alternately, through ``vitc.checks.bench.compare_report``), ``training`` (images/s of
:func:`vitc.train.loop.train_step` for a dense, a UVC-search and a DynamicViT step with AMP), ``compile``
(inference through ``torch.compile``), ``backends`` (ONNX Runtime CUDA, TensorRT, when installed) and
``speed_target`` (``vitc profile`` on torch in the plan's precision, and TensorRT when present, then UVC
``--target-speedup 2`` from that profile: predicted vs measured paired speedup at the acceptance batch).
``--budget-s`` is checked before every measurement (what would not fit is skipped, with the reason); a watchdog
ends the process ``--grace-s`` after it. ``--dry-run`` runs the same code on the CPU with vit-micro.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from benchmarks.shapes import DENSE_MODEL, SHORT_SEARCH, SHORT_SEARCH_DATA

if TYPE_CHECKING:
    import torch
    from torch import nn

    from vitc.backends.base import Runner
    from vitc.checks.settings import BenchSettings
    from vitc.core.spec import ViTSpec

START = time.monotonic()
REPO = Path(__file__).resolve().parents[1]
FORMAT = "vitc.gpu_check/1"
NOTE_SYNTHETIC = ("architectures from a short compress run on synthetic data or built from the spec: throughput depends "
                  "on shapes (heads, MLP widths, blocks, token counts), not on weights; accuracy is not measured here")
MODES = ("eager", "cuda-graph", "compile")
CUDA_MODES = ("cuda-graph", "compile")
TRAIN_KINDS = ("dense", "uvc-search", "dynamicvit")
ACCEPT_FACTOR = 0.9  # speedup at the acceptance batch >= 0.9 x dense/variant MACs (the ideal speedup)
UVC_DVT = "uvc+dynamicvit"


# ------------------------------------------------------------------------------------------------
# progress, budget, report
# ------------------------------------------------------------------------------------------------

_LOG: list[Path] = []
_CHILDREN: list[subprocess.Popen[str]] = []  # process groups this script started (pytest), ended by the watchdog


def say(message: str) -> None:
    """A progress line with wall-clock time and seconds since start, on stdout and in OUT/gpu_check.log."""
    line = f"[{time.strftime('%H:%M:%S')} +{time.monotonic() - START:6.1f}s] {message}"
    print(line, flush=True)
    for path in _LOG:
        with contextlib.suppress(OSError), path.open("a") as fh:
            fh.write(line + "\n")


class Budget:
    """Seconds left of ``--budget-s``, counted from the start of the process."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def elapsed(self) -> float:
        return time.monotonic() - START

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def allows(self, need: float) -> bool:
        return self.left() >= need


class Report:
    """gpu_check.json and gpu_check.md, rewritten (atomically) whenever something is added."""

    def __init__(self, out: Path, data: dict[str, Any]) -> None:
        self.out, self.data = out, data
        self.lock = threading.RLock()

    def save(self) -> None:
        from vitc.core.fileio import write_json, write_text

        with self.lock:
            self.data["elapsed_s"] = round(time.monotonic() - START, 1)
            self.data["acceptance"] = acceptance(self.data["inference"], self.data["plan"])
            write_json(self.out / "gpu_check.json", self.data)
            write_text(self.out / "gpu_check.md", render_markdown(self.data))

    def skip(self, what: str, why: str) -> None:
        say(f"skipped {what}: {why}")
        with self.lock:
            self.data["skipped"].append({"what": what, "why": why, "at_s": round(time.monotonic() - START, 1)})
        self.save()

    def error(self, part: str, exc: BaseException) -> None:
        tail = traceback.format_exc().strip().splitlines()[-12:]
        say(f"ERROR in {part}: {type(exc).__name__}: {exc}")
        with self.lock:
            self.data["errors"].append({"part": part, "error": f"{type(exc).__name__}: {str(exc)[:500]}", "traceback": tail})
        self.save()

    def part(self, name: str, status: str, seconds: float, **extra: Any) -> None:
        with self.lock:
            self.data["parts"][name] = {"status": status, "seconds": round(seconds, 1), **extra}
        self.save()


@contextlib.contextmanager
def part(report: Report, name: str) -> Iterator[None]:
    """Run one part: its time and status are recorded; an exception is recorded and does not stop the check."""
    say(f"--- {name}")
    t0 = time.monotonic()
    try:
        yield
    except Exception as e:  # one broken part must not lose the others' results
        report.error(name, e)
        report.part(name, "error", time.monotonic() - t0)
    else:
        report.part(name, "done", time.monotonic() - t0)


# ------------------------------------------------------------------------------------------------
# what to run
# ------------------------------------------------------------------------------------------------

@dataclass
class Plan:
    """Everything a run measures; ``--dry-run`` swaps in CPU-sized values."""

    dry_run: bool
    device: str
    precision: str
    model: str
    batches: list[int]
    accept_batch: int
    keep_ratios: list[float]
    uvc_data: str
    uvc_search: dict[str, Any]  # UVCSettings fields: the short DeiT-S search (benchmarks.shapes), shortened for --dry-run
    train_batch: int
    train_warmup_steps: int
    train_steps: int
    warmup_ms: float
    min_iters: int
    min_seconds: float
    compile_mode: str
    tests_timeout: float
    modes: list[str] = field(default_factory=lambda: list(MODES))

    def bench_settings(self) -> BenchSettings:
        from vitc.checks.settings import BenchSettings

        return BenchSettings(batch_sizes=self.batches, device=self.device, precision=self.precision, warmup_ms=self.warmup_ms,
                             min_iters=self.min_iters, min_seconds=self.min_seconds)

    def pair_seconds(self) -> float:
        """A first guess at one A/B comparison at one batch size (warm-ups, both sides' timed loops)."""
        return 2 * self.warmup_ms / 1e3 + 3 * self.min_seconds + 0.5

    def uvc_settings(self) -> Any:
        from benchmarks.shapes import short_search_settings

        return short_search_settings(self.device, **self.uvc_search)


def make_plan(dry_run: bool, **given: Any) -> Plan:
    values: dict[str, Any] = dict(
        device="cuda", precision="fp16", model=DENSE_MODEL, batches=[1, 32, 64], accept_batch=32,
        keep_ratios=[0.7, 0.5], uvc_data=SHORT_SEARCH_DATA, uvc_search=dict(SHORT_SEARCH), train_batch=64,
        train_warmup_steps=3, train_steps=10, warmup_ms=300.0, min_iters=20, min_seconds=1.0, compile_mode="default",
        tests_timeout=240.0,
    )
    if dry_run:
        values.update(device="cpu", precision="fp32", model="vit-micro", batches=[1, 8], accept_batch=8,
                      uvc_data="synthetic:32", uvc_search={**SHORT_SEARCH, "epochs": 2, "gate_lr": 1.0}, train_batch=8,
                      train_warmup_steps=1, train_steps=3, warmup_ms=0.0, min_iters=3, min_seconds=0.05, tests_timeout=180.0)
    values.update({k: v for k, v in given.items() if v is not None})
    return Plan(dry_run=dry_run, **values)


@dataclass
class Variant:
    """One model measured: its name, how its architecture was obtained, its artifact and spec."""

    name: str
    kind: str  # dense | uvc | dynamicvit | uvc+dynamicvit
    spec: ViTSpec
    artifact: Path
    source: str
    keep_ratio: float | None = None
    _model: Any = None

    def model(self) -> nn.Module:
        """The evaluable module (loaded once; runners move it to the device and dtype in place)."""
        if self._model is None:
            from vitc.methods import resolve_any

            self._model, _ = resolve_any(str(self.artifact))
        return self._model

    def describe(self, dense_macs: int) -> dict[str, Any]:
        from vitc.core.flops import model_macs
        from vitc.core.summary import count_params

        macs = model_macs(self.spec)
        return {
            "name": self.name, "kind": self.kind, "source": self.source, "keep_ratio": self.keep_ratio,
            "macs": macs, "macs_ratio": macs / dense_macs, "params": count_params(self.spec), "depth": self.spec.depth,
            "heads": [b.heads for b in self.spec.blocks], "mlp_hidden": [b.mlp_hidden for b in self.spec.blocks],
            "keep_tokens": [b.keep_tokens for b in self.spec.blocks if b.keep_tokens is not None],
        }


# ------------------------------------------------------------------------------------------------
# architectures: the shapes of benchmarks.shapes
# ------------------------------------------------------------------------------------------------

def token_selection_variant(base: Variant, keep_ratio: float, kind: str, work: Path) -> Variant:
    """``base`` with token selection keeping floor(N·ρ^s) tokens (``benchmarks.shapes.with_tokens``)."""
    from benchmarks.shapes import save_shape, with_tokens
    from vitc.methods.base import ratio_tag

    spec, stages = with_tokens(base.spec, keep_ratio)
    path = save_shape(spec, work / f"{kind.replace('+', '-')}-keep{ratio_tag(keep_ratio)}.safetensors", method=kind,
                      keep_ratio=keep_ratio)
    kept = [b.keep_tokens for b in spec.blocks if b.keep_tokens is not None]
    source = (f"spec: {base.name} + token selection before blocks {','.join(map(str, stages))} keeping "
              f"{'/'.join(map(str, kept))} of {spec.num_patches} patch tokens")
    return Variant(f"{kind}-{keep_ratio:g}", kind, spec, path, source, keep_ratio)


def architectures(plan: Plan, work: Path, report: Report, budget: Budget, given_uvc: Path | None) -> list[Variant]:
    from benchmarks.shapes import dense_artifact, hand_built_uvc_like, save_shape, uvc_architecture
    from vitc.core.artifacts import read_header
    from vitc.core.errors import VitcError
    from vitc.methods import METHODS

    dense_path = dense_artifact(plan.model, work)
    dense_spec = read_header(dense_path)[0]
    dense = Variant("dense", "dense", dense_spec, dense_path, f"{plan.model}, seeded random weights")
    settings = plan.uvc_settings()
    uvc_name = f"uvc-{settings.budget:g}"
    search_need = 30.0 if plan.dry_run else 45.0
    try:
        if given_uvc is None and not budget.allows(search_need + (20 if plan.dry_run else 100)):
            raise VitcError(f"budget: {budget.left():.0f} s left, a search needs ~{search_need:.0f} s and the measurements after it more")
        t0 = time.monotonic()
        say(f"UVC: {'materializing ' + str(given_uvc) if given_uvc else f'short search on {plan.uvc_data}'}")
        uvc_path = uvc_architecture(dense_path, work, given=given_uvc, data=plan.uvc_data, settings=settings)
        source = (f"UVC artifact {given_uvc}" if given_uvc else
                  f"UVC search: {settings.epochs} epochs on {plan.uvc_data}, batch {settings.batch_size}, "
                  f"budget {settings.budget:g} ({time.monotonic() - t0:.0f} s on {plan.device})")
        uvc = Variant(uvc_name, "uvc", read_header(uvc_path)[0], uvc_path, source)
    except VitcError as e:  # the search missed the budget, or no time for it: a stand-in of the same MACs
        spec = hand_built_uvc_like(dense_spec, settings.budget)
        path = save_shape(spec, work / "uvc-handbuilt.safetensors", method="hand-built")
        uvc = Variant(uvc_name, "uvc", spec, path, f"HAND-BUILT stand-in at MACs {settings.budget:g} (no search result: {e})")
        report.skip("UVC search", f"{e}; measured a hand-built stand-in of the same MACs ratio instead")
    variants = [dense, uvc]
    variants += [token_selection_variant(dense, r, "dynamicvit", work) for r in plan.keep_ratios]
    if UVC_DVT in METHODS:
        try:
            variants.append(token_selection_variant(uvc, plan.keep_ratios[0], UVC_DVT, work))
        except VitcError as e:
            report.skip(UVC_DVT, str(e))
    else:
        report.skip(UVC_DVT, "vitc.methods.METHODS has no 'uvc+dynamicvit' method in this tree")
    from vitc.core.flops import model_macs

    dense_macs = model_macs(dense_spec)
    described = [v.describe(dense_macs) for v in variants]
    with report.lock:
        report.data["architectures"] = described
    report.save()
    for v, d in zip(variants, described):
        say(f"  {v.name}: MACs ratio {d['macs_ratio']:.3f}, depth {v.spec.depth} — {v.source}")
    return variants


# ------------------------------------------------------------------------------------------------
# environment
# ------------------------------------------------------------------------------------------------

def describe_environment() -> dict[str, Any]:
    """``vitc.checks.environment.environment()``, plus the pytest plugins the tests part needs and the commit."""
    from vitc.checks.environment import dist_version, environment

    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        run = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        commit = run.stdout.strip() or None
    return {**environment(), "pytest_plugins": {name: dist_version(name) for name in ("pytest", "pytest-timeout", "hypothesis")},
            "vitc_commit": commit}


# ------------------------------------------------------------------------------------------------
# tests: pytest -m gpu in a subprocess
# ------------------------------------------------------------------------------------------------

_OUTCOME = re.compile(r"^(tests/\S+::\S+)\s+(PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b(.*)$")
_SHORT = re.compile(r"^(FAILED|ERROR) (tests/\S+::\S+)(?: - (.*))?$")
_SKIP_REASON = re.compile(r"^SKIPPED \[(\d+)\] (\S+): (.*)$")
_SUMMARY = re.compile(r"^=+ (.*\d+ \w+.*) in ([\d.]+)s")


def pytest_command(junit: Path | None, per_test_timeout: float) -> list[str]:
    """``pytest -m gpu tests/test_gpu.py`` that runs where pytest-timeout or hypothesis are missing: addopts
    cleared (it only deselects), no cache; ``-o timeout=N`` is read by pytest-timeout when present and is an
    ignored unknown option (a warning) when it is not."""
    cmd = [sys.executable, "-m", "pytest", "tests/test_gpu.py", "-m", "gpu", "-p", "no:cacheprovider", "-o", "addopts=",
           "-o", f"timeout={int(per_test_timeout)}", "-v", "-rfEs", "--durations=10", "--color=no"]
    if junit is not None:
        cmd.append(f"--junitxml={junit}")
    return cmd


def parse_pytest(lines: Sequence[str]) -> dict[str, Any]:
    """Per-test outcomes, failure and skip reasons, and the summary line of ``pytest -v -rfEs`` output."""
    tests: dict[str, dict[str, Any]] = {}
    skips: list[str] = []
    summary, seconds = None, None
    for raw in lines:
        line = raw.rstrip()
        if m := _OUTCOME.match(line):
            detail = re.sub(r"\s*\[\s*\d+%\]\s*$", "", m.group(3)).strip()
            tests[m.group(1)] = {"outcome": m.group(2).lower(), **({"detail": detail.strip("() ")} if detail else {})}
        elif m := _SHORT.match(line):
            tests.setdefault(m.group(2), {"outcome": m.group(1).lower()})["message"] = (m.group(3) or "")[:400]
        elif m := _SKIP_REASON.match(line):
            skips.append(f"{m.group(1)} × {m.group(2)}: {m.group(3)}")
        elif m := _SUMMARY.match(line):
            summary, seconds = m.group(1), float(m.group(2))
    counts: dict[str, int] = {}
    for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)", summary or ""):
        counts[word.rstrip("s") if word.startswith("error") else word] = int(n)
    return {"summary": summary, "seconds": seconds, "counts": counts, "tests": tests, "skip_reasons": skips}


def run_tests(plan: Plan, report: Report, budget: Budget, out: Path, work: Path) -> None:
    from vitc.checks.environment import dist_version

    if dist_version("pytest") is None:
        report.skip("tests", "pytest is not installed here")
        return
    reserve = 40.0 if plan.dry_run else 200.0  # architectures, eager/graph inference and training come after
    limit = min(plan.tests_timeout, budget.left() - reserve)
    if limit < 30:
        report.skip("tests", f"budget: {budget.left():.0f} s left, {reserve:.0f} s reserved for the benchmarks")
        return
    log_path, junit = out / "pytest.log", work / "pytest.xml"
    cmd = pytest_command(junit, per_test_timeout=min(180.0, limit - 10))
    say(f"running {' '.join(cmd[2:])} (at most {limit:.0f} s)")
    lines: list[str] = []
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    _CHILDREN.append(proc)

    def pump() -> None:
        assert proc.stdout is not None
        with log_path.open("w") as log:
            for line in proc.stdout:
                lines.append(line)
                log.write(line)
                log.flush()
                if _OUTCOME.match(line.rstrip()):
                    say("  " + line.rstrip())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        rc = proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill(proc)
        rc = proc.wait()
    reader.join(timeout=10)
    _CHILDREN.remove(proc)
    result = parse_pytest(lines)
    result.update({"command": " ".join(cmd[2:]), "returncode": rc, "timed_out": timed_out, "limit_s": round(limit),
                   "log": log_path.name})
    if timed_out:
        started = [ln.split()[0] for ln in lines if ln.startswith("tests/") and "::" in ln and not _OUTCOME.match(ln.rstrip())]
        result["running_when_stopped"] = started[-1] if started else None
        report.skip("tests (rest)", f"pytest stopped after {limit:.0f} s (--tests-timeout / budget); finished tests are reported")
    with report.lock:
        report.data["tests"] = result
    report.save()
    say(f"pytest: {result['summary'] or 'no summary'} (exit {rc})")


# ------------------------------------------------------------------------------------------------
# inference: dense vs each variant, alternately, per mode
# ------------------------------------------------------------------------------------------------

def open_torch_runner(plan: Plan, variant: Variant, mode: str) -> Runner:
    from vitc.backends.torch_runner import TorchRunner

    return TorchRunner(variant.model(), variant.spec, device=plan.device, precision=plan.precision,
                       cuda_graph=mode == "cuda-graph", compile=mode == "compile", compile_mode=plan.compile_mode)


def compare_rows(report_: dict[str, Any], mode: str, backend: str, variant: str) -> list[dict[str, Any]]:
    """One row per batch size: both sides' images/s and latency, the speedups, the MACs ratio (variant/dense)
    and the speedup as a fraction of the ideal one (speedup × MACs ratio: 1 when time falls as MACs do)."""
    macs = report_["macs"]["b"] / report_["macs"]["a"] if report_["macs"] else None
    rows = []
    for r in report_["results"]:
        a, b = r["a"], r["b"]
        rows.append({
            "mode": mode, "backend": backend, "variant": variant, "batch": r["batch"], "precision": report_["b"]["precision"],
            "dense_ips": a["images_per_s"], "variant_ips": b["images_per_s"],
            "dense_ms": a["latency_ms"]["median"], "variant_ms": b["latency_ms"]["median"],
            "dense_gpu_ms": (a["gpu_compute_ms"] or {}).get("median"), "variant_gpu_ms": (b["gpu_compute_ms"] or {}).get("median"),
            "speedup": r["speedup"], "speedup_paired": r["speedup_paired"], "speedup_paired_iqr": r["speedup_paired_iqr"],
            "speedup_gpu": r["speedup_gpu_compute"], "macs_ratio": macs,
            "speedup_vs_ideal": r["speedup"] * macs if macs else None,
            "rounds": r["rounds"], "cv_dense": a["cv"], "cv_variant": b["cv"],
            "warnings": [w for w in (a["warning"], b["warning"]) if w],
        })
    return rows


def prepare(runner: Runner, batches: Sequence[int]) -> float:
    """Run each batch size once (``torch.compile`` compiles, CUDA graphs are captured here); the seconds it took."""
    from vitc.checks.bench import synthetic_batch

    t0 = time.monotonic()
    for b in batches:
        runner.run_staged(runner.stage(synthetic_batch(runner.input_shape, b)))
    runner.synchronize()
    return time.monotonic() - t0


def run_inference(plan: Plan, variants: list[Variant], modes: Sequence[str], report: Report, budget: Budget) -> None:
    """Per mode: the dense runner against each variant's, alternately at every batch size (compare_report)."""
    import torch

    settings = plan.bench_settings()
    dense, others = variants[0], variants[1:]
    for mode in modes:
        if mode in CUDA_MODES and not plan.device.startswith("cuda"):
            report.skip(f"inference {mode}", f"{mode} needs CUDA (this run uses {plan.device})")
            continue
        if mode == "compile":
            torch._dynamo.reset()
            for name in ("recompile_limit", "cache_size_limit"):  # 2 compiles per model (batch 1, dynamic batch)
                if hasattr(torch._dynamo.config, name):
                    setattr(torch._dynamo.config, name, 64)
        compare_est = plan.pair_seconds() * len(plan.batches)
        prepare_est = 60.0 if mode == "compile" and not plan.dry_run else 3.0
        runner_a: Runner | None = None
        try:
            for v in others:
                need = compare_est + prepare_est * (2 if runner_a is None else 1)
                if not budget.allows(need):
                    report.skip(f"inference {mode} {v.name}", f"budget: {budget.left():.0f} s left, this comparison needs ~{need:.0f} s")
                    continue
                say(f"inference {mode}: dense vs {v.name} at batch {','.join(map(str, plan.batches))}")
                if runner_a is None:
                    try:
                        runner_a = open_torch_runner(plan, dense, mode)
                        record_prepare(report, mode, "dense", prepare(runner_a, plan.batches))
                    except Exception as e:  # without the dense side this mode has nothing to compare against
                        report.error(f"inference {mode} dense", e)
                        break
                try:
                    seconds, compare_s = compare_variant(plan, runner_a, v, mode, settings, report)
                except Exception as e:  # one variant failing (a capture, a compile) must not cost the others
                    report.error(f"inference {mode} {v.name}", e)
                    continue
                finally:
                    _release()
                prepare_est, compare_est = max(3.0, 1.2 * seconds), 1.2 * compare_s
        finally:
            if runner_a is not None:
                runner_a.close()
            del runner_a
            _release()


def compare_variant(plan: Plan, runner_a: Runner, v: Variant, mode: str, settings: BenchSettings,
                    report: Report) -> tuple[float, float]:
    """Open ``v``'s runner, run its first calls, compare it with the dense runner; (prepare s, compare s)."""
    from vitc.checks.bench import compare_report

    with open_torch_runner(plan, v, mode) as runner_b:
        seconds = prepare(runner_b, plan.batches)
        record_prepare(report, mode, v.name, seconds)
        t0 = time.monotonic()
        rep = compare_report(runner_a, runner_b, plan.batches, settings, "dense", v.name)
        compare_s = time.monotonic() - t0
    rows = compare_rows(rep, mode, "torch", v.name)
    with report.lock:
        report.data["inference"].extend(rows)
        report.data["inference_settings"] = {**rep["settings"], "precision": plan.precision, "device": plan.device,
                                             "compile_mode": plan.compile_mode, "speedup": "median latency dense / variant"}
    report.save()
    for r in rows:
        say(f"  batch {r['batch']:>3}: dense {r['dense_ips']:9.1f} img/s, {v.name} {r['variant_ips']:9.1f} img/s, "
            f"speedup {r['speedup']:.2f}x (MACs ratio {r['macs_ratio']:.3f})")
    return seconds, compare_s


def record_prepare(report: Report, mode: str, model: str, seconds: float) -> None:
    """How long the first call at every batch size took (compile or graph capture included)."""
    say(f"  {model} {mode}: first call at each batch size took {seconds:.1f} s")
    with report.lock:
        report.data["prepare"].append({"mode": mode, "model": model, "seconds": round(seconds, 2)})


def _release() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------
# training throughput: the loop's step, AMP on CUDA
# ------------------------------------------------------------------------------------------------

def training_setup(kind: str, spec: ViTSpec, batch: int, device: torch.device) -> tuple[nn.Module, Any, Any, int]:
    """(model, objective, loop settings, epoch) of one training step kind, as the compress commands build them."""
    import torch

    from vitc.core.spec import build_model
    from vitc.train.loop import Objective
    from vitc.train.settings import TrainSettings

    torch.manual_seed(0)
    dense = build_model(spec, init_weights=True)
    if kind == "dense":
        cfg = TrainSettings(batch_size=batch, device=str(device))
        return dense, Objective(cfg.label_smoothing), cfg, 0
    if kind == "uvc-search":
        from vitc.methods.uvc.model import UVCViT
        from vitc.methods.uvc.objectives import UVCSearch
        from vitc.methods.uvc.settings import UVCSettings
        from vitc.train.distill import frozen_teacher

        settings = UVCSettings(budget=0.5, gate_warmup_epochs=0, batch_size=batch, device=str(device))
        cfg = settings.search_loop()
        teacher = frozen_teacher(dense)  # a copy, before UVCViT wraps the dense model
        return UVCViT(dense), UVCSearch(spec, teacher, settings, cfg.label_smoothing, 1, 0), cfg, 0
    if kind == "dynamicvit":
        from vitc.methods.dynamicvit.compress import token_selection_student
        from vitc.methods.dynamicvit.settings import DynamicViTSettings

        dcfg = DynamicViTSettings(keep_ratio=0.7, batch_size=batch, device=str(device))
        cfg = dcfg.loop()
        student, objective, _ = token_selection_student(dense, spec, dcfg, cfg.label_smoothing)
        return student, objective, cfg, dcfg.freeze_epochs  # an epoch where the backbone trains too
    raise ValueError(f"unknown training step {kind!r}")


def train_throughput(kind: str, spec: ViTSpec, plan: Plan) -> dict[str, Any]:
    """Images/s of ``kind``'s training step at ``plan.train_batch``: :func:`vitc.train.loop.train_step` (autocast
    fp16 + GradScaler on CUDA, the NaN guard, clipping, ``after_step``, the per-step loss read) on one batch
    already on the device."""
    import torch

    from vitc.train.distributed import DistInfo
    from vitc.train.loop import StepContext, train_step

    device = torch.device(plan.device)
    batch = plan.train_batch
    model, objective, cfg, epoch = training_setup(kind, spec, batch, device)
    model.to(device)
    objective.setup(model, device)
    optimizer = torch.optim.AdamW(objective.param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and device.type == "cuda")
    objective.on_epoch_start(model, epoch)
    model.train()
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, *spec.input_shape, generator=gen).to(device)
    targets = torch.randint(spec.num_classes, (batch,), generator=gen).to(device)
    total = plan.train_warmup_steps + plan.train_steps
    losses: list[float] = []

    def step(i: int) -> None:
        ctx = StepContext(epoch, i, i, total, total, cfg.lr, device, DistInfo())
        logged = train_step(model, objective, optimizer, scaler, images, targets, ctx, cfg.max_grad_norm, Path("(no checkpoint)"))
        losses.append(logged["loss"])

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(plan.train_warmup_steps):
        step(i)
    sync()
    t0 = time.perf_counter()
    for i in range(plan.train_warmup_steps, total):
        step(i)
    sync()
    seconds = time.perf_counter() - t0
    return {
        "step": kind, "batch": batch, "steps": plan.train_steps, "seconds": round(seconds, 4),
        "images_per_s": batch * plan.train_steps / seconds, "ms_per_step": 1e3 * seconds / plan.train_steps,
        "amp": scaler.is_enabled(), "max_grad_norm": cfg.max_grad_norm, "loss_first": losses[0], "loss_last": losses[-1],
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
    }


def run_training(plan: Plan, dense: Variant, report: Report, budget: Budget) -> None:
    need = 8.0 if plan.dry_run else 25.0
    for kind in TRAIN_KINDS:
        if not budget.allows(need):
            report.skip(f"training {kind}", f"budget: {budget.left():.0f} s left, a step measurement needs ~{need:.0f} s")
            continue
        say(f"training step {kind}: batch {plan.train_batch}, {plan.train_warmup_steps} warm-up + {plan.train_steps} timed steps")
        t0 = time.monotonic()
        try:
            row = train_throughput(kind, dense.spec, plan)
        except Exception as e:
            report.error(f"training {kind}", e)
            continue
        finally:
            _release()
        with report.lock:
            report.data["training"].append(row)
        report.save()
        say(f"  {kind}: {row['images_per_s']:.1f} img/s ({row['ms_per_step']:.1f} ms/step, AMP {row['amp']})")
        need = max(need, 1.3 * (time.monotonic() - t0))


# ------------------------------------------------------------------------------------------------
# other backends: ONNX Runtime (CUDA provider) and TensorRT, when installed
# ------------------------------------------------------------------------------------------------

def available_backends(plan: Plan) -> tuple[list[str], dict[str, str]]:
    """The backends that can run here, and why each other one cannot."""
    import onnxruntime as ort

    from vitc.backends.tensorrt.common import tensorrt_version

    cuda = plan.device.startswith("cuda")
    ok, skipped = [], {}
    if cuda and "CUDAExecutionProvider" not in ort.get_available_providers():
        skipped["onnxruntime"] = "onnxruntime has no CUDAExecutionProvider here (onnxruntime-gpu is not installed)"
    else:
        ok.append("onnxruntime")
    if tensorrt_version() is None:
        skipped["tensorrt"] = "TensorRT is not installed"
    elif not cuda:
        skipped["tensorrt"] = "TensorRT needs CUDA"
    else:
        ok.append("tensorrt")
    return ok, skipped


def deployable(variant: Variant, backend: str, plan: Plan, work: Path) -> str:
    """What ``backend`` loads for ``variant``: an ONNX (fp16 on CUDA) or a TensorRT engine built from it."""
    from vitc.onnx.export import export_onnx

    fp16 = plan.precision == "fp16"
    onnx_path = work / "deploy" / f"{variant.artifact.stem}.{'fp16' if fp16 else 'fp32'}.onnx"
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    if not onnx_path.exists():
        export_onnx(str(variant.artifact), onnx_path, fp16=fp16)
    if backend == "onnxruntime":
        return str(onnx_path)
    from vitc.backends.tensorrt.build import build_engine

    engine = onnx_path.with_suffix(".engine")
    if not engine.exists():
        build_engine(onnx_path, engine, min_batch=min(plan.batches), opt_batch=max(plan.batches), max_batch=max(plan.batches),
                     timing_cache=str(work / "deploy" / "timing.cache"))
    return str(engine)


def run_backends(plan: Plan, variants: list[Variant], report: Report, budget: Budget, work: Path) -> None:
    from vitc.backends import load_runner
    from vitc.checks.bench import compare_report

    use, skipped = available_backends(plan)
    for backend, why in skipped.items():
        report.skip(f"backend {backend}", why)
    if plan.dry_run:
        variants = variants[:2]  # dense and UVC: the export and ORT path, not every model
    need = (20.0 if plan.dry_run else 60.0) + plan.pair_seconds() * len(plan.batches)
    settings = plan.bench_settings()
    for backend in use:
        opts: dict[str, Any] = {"cuda_graph": True} if backend == "tensorrt" else {}
        dense, others = variants[0], variants[1:]
        runner_a: Runner | None = None
        try:
            for v in others:
                if not budget.allows(need * (2 if runner_a is None else 1)):
                    report.skip(f"backend {backend} {v.name}",
                                f"budget: {budget.left():.0f} s left, export + comparison needs ~{need:.0f} s")
                    continue
                t0 = time.monotonic()
                say(f"{backend}: dense vs {v.name}")
                try:
                    if runner_a is None:
                        runner_a = load_runner(deployable(dense, backend, plan, work), backend, plan.device, **opts)
                    with load_runner(deployable(v, backend, plan, work), backend, plan.device, **opts) as runner_b:
                        rep = compare_report(runner_a, runner_b, plan.batches, settings, "dense", v.name)
                except Exception as e:  # an export or engine build failing for one model must not cost the others
                    report.error(f"backend {backend} {v.name}", e)
                    if runner_a is None:
                        break
                    continue
                rows = compare_rows(rep, f"{backend} {rep['b']['precision']}", backend, v.name)
                with report.lock:
                    report.data["backends"].extend(rows)
                report.save()
                for r in rows:
                    say(f"  batch {r['batch']:>3}: speedup {r['speedup']:.2f}x (MACs ratio {r['macs_ratio']:.3f})")
                need = max(need, 1.3 * (time.monotonic() - t0))
        finally:
            if runner_a is not None:
                runner_a.close()
            _release()


# ------------------------------------------------------------------------------------------------
# acceptance and the Markdown report
# ------------------------------------------------------------------------------------------------

def acceptance(rows: Sequence[dict[str, Any]], plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Per measured variant and mode: speedup at the acceptance batch >= 0.9 × the ideal speedup (1 / MACs ratio),
    and at batch 1 no slower than dense (informational; the figures the compressed models are held against)."""
    out = []
    accept_batch = int(plan.get("accept_batch", 32))
    seen: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for r in rows:
        seen.setdefault((r["mode"], r["variant"]), {})[r["batch"]] = r
    for (mode, variant), by_batch in seen.items():
        if accept_batch in by_batch and by_batch[accept_batch]["macs_ratio"]:
            r = by_batch[accept_batch]
            threshold = ACCEPT_FACTOR / r["macs_ratio"]
            out.append({"variant": variant, "mode": mode,
                        "criterion": f"speedup at batch {accept_batch} >= {ACCEPT_FACTOR:g} x ideal (1 / MACs ratio)",
                        "value": r["speedup"], "threshold": threshold, "passed": bool(r["speedup"] >= threshold)})
        if 1 in by_batch:
            r = by_batch[1]
            out.append({"variant": variant, "mode": mode, "criterion": "batch 1 no slower than dense",
                        "value": r["speedup"], "threshold": 1.0, "passed": bool(r["speedup"] >= 1.0)})
    return out


def acceptance_line(a: dict[str, Any]) -> str:
    """``PASS uvc-0.5 [eager]: speedup at batch 32 >= 0.9 x ideal (1 / MACs ratio): 2.05x vs 1.91x``."""
    return f"{'PASS' if a['passed'] else 'FAIL'} {a['variant']} [{a['mode']}]: {a['criterion']}: {a['value']:.2f}x vs {a['threshold']:.2f}x"


def run_speed_target(plan: Plan, report: Report, budget: Budget, work: Path) -> None:
    """Issue 22 on the GPU: profile the dense model (torch in the plan's precision; TensorRT too when present) at the
    acceptance batch, compress UVC to ``--target-speedup 2`` with that profile (the short search), and measure dense vs
    the result there, paired, beside the prediction."""
    from benchmarks.shapes import dense_artifact, short_search_settings, uvc_architecture
    from vitc.checks.bench import compare_targets
    from vitc.checks.environment import trt_available
    from vitc.checks.profile import ProfileSettings, add_predictions, profile_latency
    from vitc.checks.settings import BenchSettings
    from vitc.core.artifacts import read_header
    from vitc.core.flops import model_macs

    dense = dense_artifact(plan.model, work)
    grid: dict[str, Any] = {"token_points": 3, "head_points": 2, "mlp_points": 2} if plan.dry_run else {}
    for backend in ["torch"] + (["tensorrt"] if trt_available() else []):
        if not budget.allows(120 if not plan.dry_run else 10):
            report.skip(f"speed target on {backend}", f"{budget.left():.0f} s of the budget left")
            continue
        precision = plan.precision if backend == "torch" else "fp16"
        latency = work / f"latency-{backend}-{precision}-b{plan.accept_batch}.json"
        t0 = time.monotonic()
        profile = profile_latency(plan.model, latency, ProfileSettings(backend=backend, device=plan.device, precision=precision,
                                                                         batch_size=plan.accept_batch,
                                                                         min_seconds=plan.min_seconds, **grid),
                                  probe_cache=work / "probes")
        profile_s = time.monotonic() - t0
        settings = short_search_settings(plan.device, **{**plan.uvc_search, "budget": None, "target_speedup": 2.0,
                                                         "latency": str(latency)})
        uvc = uvc_architecture(dense, work / f"speed-target-{backend}", data=plan.uvc_data, settings=settings)
        targets = [str(dense), str(uvc)]
        if backend != "torch":
            variants = [Variant(p.stem, p.stem, read_header(p)[0], p, "") for p in (dense, uvc)]
            targets = [deployable(v, backend, plan, work) for v in variants]
        bench = BenchSettings(batch_sizes=[plan.accept_batch], backend=backend, device=plan.device,
                              precision=precision if backend == "torch" else None, warmup_ms=plan.warmup_ms,
                              min_iters=plan.min_iters, min_seconds=plan.min_seconds)
        result = add_predictions(compare_targets(targets[0], targets[1], bench), latency, targets)
        res = result["results"][0]
        spec = read_header(uvc)[0]
        row = {"backend": backend, "precision": precision, "batch": plan.accept_batch, "profile_s": round(profile_s, 1),
               "probes": len(profile["measurements"]), "blocks": spec.depth,
               "macs_ratio": model_macs(spec) / model_macs(read_header(dense)[0]),
               "predicted_speedup": res.get("predicted_speedup"), "measured_speedup": res["speedup_paired"],
               "off_target": res["speedup_paired"] / 2.0 - 1}
        say(f"speed target 2x on {backend} {precision}: predicted {row['predicted_speedup']:.2f}x, measured "
            f"{row['measured_speedup']:.2f}x")
        with report.lock:
            report.data.setdefault("speed_target", []).append(row)
        report.save()


def md_environment(d: dict[str, Any]) -> list[str]:
    env = d.get("environment") or {}
    if not env:
        return []
    gpu, versions = env.get("gpu") or {}, env.get("versions") or {}
    providers = env.get("onnxruntime_providers") or []
    return ["## Environment", "",
            f"- GPU: {gpu.get('name', 'none')} (capability {gpu.get('capability', '-')}, {gpu.get('memory_gib', '-')} GiB, "
            f"driver {gpu.get('driver', '-')}, SM clock {gpu.get('sm_clock_mhz', '-')}/{gpu.get('max_sm_clock_mhz', '-')} MHz)",
            f"- torch {versions.get('torch')}, CUDA {versions.get('cuda')}, cuDNN {versions.get('cudnn')}, TF32 {env.get('tf32')}",
            f"- TensorRT: {versions.get('tensorrt') or 'not installed'}; onnxruntime {versions.get('onnxruntime')} "
            f"({'CUDA provider present' if 'CUDAExecutionProvider' in providers else 'no CUDA provider'})",
            "- " + ", ".join(f"{k} {versions.get(k) or 'absent'}" for k in ("timm", "onnx", "onnxscript", "triton", "openvino"))
            + ", " + ", ".join(f"{k} {v or 'absent'}" for k, v in (env.get("pytest_plugins") or {}).items()),
            f"- vitc commit {env.get('vitc_commit') or 'unknown'}", ""]


def md_tests(d: dict[str, Any]) -> list[str]:
    from vitc.core.tables import markdown_table

    tests = d.get("tests")
    if not tests:
        return []
    stopped = f", STOPPED at the time limit while running {tests.get('running_when_stopped')}" if tests.get("timed_out") else ""
    lines = ["## Tests (`pytest -m gpu tests/test_gpu.py`)", "",
             f"{tests.get('summary') or 'no summary line'} — exit {tests.get('returncode')}{stopped}; full log in {tests.get('log')}.", ""]
    by_outcome: dict[str, list[str]] = {}
    for name, t in tests.get("tests", {}).items():
        by_outcome.setdefault(t["outcome"], []).append(name.split("::", 1)[1])
    bad = [(name.split("::", 1)[1], t["outcome"].upper(), t.get("message") or t.get("detail") or "")
           for name, t in tests.get("tests", {}).items() if t["outcome"] in ("failed", "error")]
    if bad:
        lines += [markdown_table(["test", "outcome", "message"], bad), ""]
    if by_outcome.get("passed"):
        lines += [f"Passed: {', '.join(by_outcome['passed'])}.", ""]
    if tests.get("skip_reasons"):
        lines += ["Skipped:"] + [f"- {r}" for r in tests["skip_reasons"]] + [""]
    return lines


def md_architectures(d: dict[str, Any]) -> list[str]:
    from vitc.core.tables import markdown_table

    archs = d.get("architectures") or []
    if not archs:
        return []
    return ["## Architectures", "", NOTE_SYNTHETIC + ".", "",
            markdown_table(["variant", "MACs (G)", "MACs ratio", "params (M)", "depth", "heads", "MLP widths", "tokens kept", "source"],
                           [(a["name"], a["macs"] / 1e9, a["macs_ratio"], a["params"] / 1e6, a["depth"],
                             "/".join(map(str, a["heads"])), "/".join(map(str, a["mlp_hidden"])),
                             "/".join(map(str, a["keep_tokens"])) or "-", a["source"]) for a in archs]), ""]


def md_inference(d: dict[str, Any]) -> list[str]:
    from vitc.core.tables import cell, markdown_table

    inference, plan = d.get("inference") or [], d.get("plan", {})
    if not inference:
        return []
    s = d.get("inference_settings") or {}
    lines = [f"## Inference, torch {s.get('precision', plan.get('precision'))} on {s.get('device', plan.get('device'))}", "",
             "speedup = median latency dense / variant, A and B timed alternately (`vitc bench --compare`); paired = median "
             "of per-round ratios; GPU = from CUDA-event compute time; MACs ratio = variant / dense; speedup / ideal = "
             "speedup × MACs ratio (1: time falls as MACs do). "
             f"Warm-up {s.get('warmup_ms')} ms, ≥ {s.get('min_iters')} iterations and ≥ {s.get('min_seconds')} s per side; "
             f"compile mode {s.get('compile_mode')}.", ""]
    lines += [markdown_table(["mode", "variant", "batch", "dense img/s", "variant img/s", "speedup", "paired (IQR)", "GPU speedup",
                              "MACs ratio", "speedup / ideal", "CV dense/variant"],
                             [(r["mode"], r["variant"], r["batch"], r["dense_ips"], r["variant_ips"], r["speedup"],
                               f"{cell(r['speedup_paired'])} ({cell(r['speedup_paired_iqr'][0])}–{cell(r['speedup_paired_iqr'][1])})",
                               r["speedup_gpu"], r["macs_ratio"], r["speedup_vs_ideal"],
                               f"{cell(r['cv_dense'], 2)}/{cell(r['cv_variant'], 2)}") for r in inference]), ""]
    prepare_rows = [r for r in d.get("prepare") or [] if r["mode"] != "eager"]
    if prepare_rows:
        lines += ["First call at every batch size (compile or graph capture): "
                  + ", ".join(f"{r['model']} {r['mode']} {r['seconds']} s" for r in prepare_rows) + ".", ""]
    return lines


def md_acceptance(d: dict[str, Any]) -> list[str]:
    accept, plan = d.get("acceptance") or [], d.get("plan", {})
    if not accept:
        return []
    return ["## Acceptance (informational)", "",
            f"Criteria: speedup at batch {plan.get('accept_batch')} {plan.get('precision')} ≥ {ACCEPT_FACTOR:g} × the ideal "
            "speedup (1 / MACs ratio); at batch 1 no slower than dense (speedup ≥ 1).", "",
            *[f"- {acceptance_line(a)}" for a in accept], ""]


def md_training(d: dict[str, Any]) -> list[str]:
    from vitc.core.tables import cell, markdown_table

    training = d.get("training") or []
    if not training:
        return []
    return ["## Training step throughput", "",
            "vitc.train.loop.train_step (autocast fp16 + GradScaler on CUDA, the NaN guard, clipping, the objective's hooks, "
            "per-step loss read) on one batch already on the device: data loading not included.", "",
            markdown_table(["step", "batch", "img/s", "ms/step", "AMP", "peak GiB", "loss first → last"],
                           [(t["step"], t["batch"], t["images_per_s"], t["ms_per_step"], t["amp"], t["peak_memory_gib"],
                             f"{cell(t['loss_first'])} → {cell(t['loss_last'])}") for t in training]), ""]


def md_backends(d: dict[str, Any]) -> list[str]:
    from vitc.core.tables import markdown_table

    backends = d.get("backends") or []
    if not backends:
        return []
    return ["## Other backends", "",
            markdown_table(["backend", "variant", "batch", "dense img/s", "variant img/s", "speedup", "GPU speedup", "MACs ratio"],
                           [(r["mode"], r["variant"], r["batch"], r["dense_ips"], r["variant_ips"], r["speedup"], r["speedup_gpu"],
                             r["macs_ratio"]) for r in backends]), ""]


def md_speed_target(d: dict[str, Any]) -> list[str]:
    from vitc.core.tables import markdown_table

    rows = d.get("speed_target") or []
    if not rows:
        return []
    return ["## Speed target: UVC --target-speedup 2 from a profile on this GPU", "",
            markdown_table(["backend", "precision", "batch", "profile s", "probes", "blocks kept", "MACs ratio", "predicted",
                            "measured (paired)", "measured vs 2x"],
                           [(r["backend"], r["precision"], r["batch"], r["profile_s"], r["probes"], r["blocks"], r["macs_ratio"],
                             r["predicted_speedup"], r["measured_speedup"], r["off_target"]) for r in rows]), ""]


def md_status(d: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if d.get("skipped"):
        lines += ["## Skipped", ""] + [f"- {s['what']}: {s['why']}" for s in d["skipped"]] + [""]
    if d.get("errors"):
        lines += ["## Errors", ""] + [f"- {e['part']}: {e['error']}" for e in d["errors"]] + [""]
    if d.get("parts"):
        lines.append("Parts: " + ", ".join(f"{k} {v['status']} ({v['seconds']} s)" for k, v in d["parts"].items()) + ".")
    return lines


MARKDOWN = (md_environment, md_tests, md_architectures, md_inference, md_acceptance, md_training, md_backends,
            md_speed_target, md_status)


def render_markdown(d: dict[str, Any]) -> str:
    """gpu_check.md: a title, then each of ``MARKDOWN``'s sections that has something to show."""
    plan = d.get("plan", {})
    lines = [f"# GPU check{' (DRY RUN: CPU, tiny model — not GPU figures)' if d.get('dry_run') else ''}", "",
             f"Started {d.get('started')}, {d.get('elapsed_s')} s of a {plan.get('budget_s')} s budget"
             f"{'' if d.get('finished') else ' — INCOMPLETE (still running, or stopped)'}.", ""]
    for section in MARKDOWN:
        lines += section(d)
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------

def _kill(proc: subprocess.Popen[str]) -> None:
    """End a process this script started, with the children in its own process group (by that group's id)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, 9)


def start_watchdog(report: Report, seconds: float) -> threading.Timer:
    """End the process ``seconds`` after start, reports written: a hung compile must not eat the device time."""
    def fire() -> None:
        say(f"watchdog: {seconds:.0f} s passed; writing the reports and stopping")
        with report.lock:
            report.data["errors"].append({"part": "watchdog", "error": f"stopped after {seconds:.0f} s (--budget-s + --grace-s)",
                                          "traceback": []})
            with contextlib.suppress(Exception):
                report.save()
        for proc in list(_CHILDREN):
            _kill(proc)
        os._exit(124)

    timer = threading.Timer(max(1.0, seconds - (time.monotonic() - START)), fire)
    timer.daemon = True
    timer.start()
    return timer


def initial_data(plan: Plan, budget_s: float, grace_s: float, parts: Sequence[str], argv: Sequence[str]) -> dict[str, Any]:
    """The report's skeleton: what was asked, and empty sections that the parts fill."""
    return {
        "format": FORMAT, "command": " ".join(["python", "-m", "benchmarks.gpu_check", *argv]), "dry_run": plan.dry_run,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "finished": False, "elapsed_s": 0.0,
        "plan": {**plan.__dict__, "budget_s": budget_s, "grace_s": grace_s, "parts": list(parts)},
        "notes": NOTE_SYNTHETIC, "environment": None, "parts": {}, "tests": None, "architectures": [], "inference": [],
        "inference_settings": None, "prepare": [], "training": [], "backends": [], "acceptance": [], "skipped": [], "errors": [],
    }


@dataclass
class Check:
    """One run's state, handed to every section."""

    plan: Plan
    report: Report
    budget: Budget
    out: Path
    work: Path
    given_uvc: Path | None
    variants: list[Variant] | None = None  # built (part "architectures") before the first section that needs them

    def shapes(self) -> list[Variant]:
        if self.variants is None:
            self.variants = []
            with part(self.report, "architectures"):
                self.variants = architectures(self.plan, self.work, self.report, self.budget, self.given_uvc)
        return self.variants


def section_tests(c: Check) -> None:
    run_tests(c.plan, c.report, c.budget, c.out, c.work)


def section_inference(c: Check) -> None:
    run_inference(c.plan, c.shapes(), [m for m in c.plan.modes if m != "compile"], c.report, c.budget)


def section_training(c: Check) -> None:
    from vitc.core.models import resolve_spec

    spec = c.variants[0].spec if c.variants else resolve_spec(c.plan.model)
    run_training(c.plan, Variant("dense", "dense", spec, Path(), ""), c.report, c.budget)


def section_compile(c: Check) -> None:
    if "compile" in c.plan.modes:
        run_inference(c.plan, c.shapes(), ["compile"], c.report, c.budget)


def section_backends(c: Check) -> None:
    run_backends(c.plan, c.shapes(), c.report, c.budget, c.work)


def section_speed_target(c: Check) -> None:
    run_speed_target(c.plan, c.report, c.budget, c.work)


# name -> (needs the architectures, the section); run in this order. A new measurement is one more entry.
SECTIONS: dict[str, tuple[bool, Callable[[Check], None]]] = {
    "tests": (False, section_tests),
    "inference": (True, section_inference),
    "training": (False, section_training),
    "compile": (True, section_compile),
    "backends": (True, section_backends),
    "speed_target": (False, section_speed_target),
}
PARTS = tuple(SECTIONS)


def run_check(plan: Plan, out: Path, work: Path, parts: Sequence[str], budget_s: float, grace_s: float,
              given_uvc: Path | None, argv: Sequence[str]) -> int:
    budget = Budget(budget_s)
    data = initial_data(plan, budget_s, grace_s, parts, argv)
    report = Report(out, data)
    report.save()
    watchdog = start_watchdog(report, budget_s + grace_s)
    say(f"gpu_check{' --dry-run' if plan.dry_run else ''}: {plan.model} on {plan.device} {plan.precision}, budget {budget_s:.0f} s, "
        f"parts {','.join(parts)}; reports in {out}, work files in {work}")
    with part(report, "environment"):
        env = data["environment"] = describe_environment()
        versions = env["versions"]
        say(f"GPU {(env['gpu'] or {}).get('name', 'none')}, driver {(env['gpu'] or {}).get('driver')}, torch {versions['torch']}, "
            f"CUDA {versions['cuda']}, TensorRT {versions['tensorrt']}, onnxruntime providers {env['onnxruntime_providers']}")
    if plan.device.startswith("cuda") and data["environment"] and data["environment"]["gpu"] is None:
        with report.lock:
            data["errors"].append({"part": "environment", "error": "no CUDA GPU is visible: nothing measured (--dry-run runs "
                                                                    "the same code on a CPU)", "traceback": []})
        parts = []
    check = Check(plan, report, budget, out, work, given_uvc)
    for name, (needs_shapes, section) in SECTIONS.items():
        if name not in parts or (needs_shapes and not check.shapes()):
            continue
        with part(report, name):
            section(check)
    watchdog.cancel()
    with report.lock:
        data["finished"] = True
    report.save()
    failed = (data["tests"] or {}).get("counts", {})
    bad = bool(data["errors"]) or bool(failed.get("failed")) or bool(failed.get("error"))
    say(f"done in {time.monotonic() - START:.0f} s: {out / 'gpu_check.json'}, {out / 'gpu_check.md'}"
        + (" — with errors or failed tests" if bad else ""))
    for a in data["acceptance"]:
        say(f"  {acceptance_line(a)}")
    return 1 if bad else 0


def _list(text: str | None, cast: Callable[[str], Any]) -> list[Any] | None:
    return None if text is None else [cast(v) for v in text.split(",") if v.strip()]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/gpu_check"), show_default=True,
              help="Folder for gpu_check.json, gpu_check.md, gpu_check.log and pytest.log (nothing else is written there).")
@click.option("--dry-run", is_flag=True, help="The same code paths on the CPU with vit-micro, fp32, tiny timings (< 5 min).")
@click.option("--budget-s", type=click.FloatRange(min=10), default=450.0, show_default=True,
              help="Seconds for the whole check: what would not fit is skipped and recorded.")
@click.option("--grace-s", type=click.FloatRange(min=0), default=90.0, show_default=True,
              help="The watchdog stops the process this long after the budget (reports kept).")
@click.option("--parts", default=",".join(PARTS), show_default=True, help="Parts to run (the environment always runs).")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for artifacts, ONNX and engines [default: a temporary folder, removed at the end].")
@click.option("--model", default=None, help=f"Dense model [default: {DENSE_MODEL}; vit-micro with --dry-run].")
@click.option("--uvc", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A UVC artifact (compressed or materialized) instead of the short search.")
@click.option("--batch", "batches", default=None, help="Inference batch sizes [default: 1,32,64; 1,8 with --dry-run].")
@click.option("--modes", default=None, help=f"Inference modes [default: {','.join(MODES)}].")
@click.option("--min-seconds", type=float, default=None, help="Timed seconds per side per batch size [default 1.0].")
@click.option("--min-iters", type=int, default=None, help="Timed iterations per side per batch size [default 20].")
@click.option("--warmup-ms", type=float, default=None, help="Warm-up per runner and batch size after its first call [default 300].")
@click.option("--compile-mode", default=None, help="torch.compile mode for the compile part [default: default].")
@click.option("--tests-timeout", type=float, default=None, help="Seconds the pytest part may take at most [default 240].")
@click.option("--train-batch", type=int, default=None, help="Training step batch [default 64; 8 with --dry-run].")
def main(out: Path, dry_run: bool, budget_s: float, grace_s: float, parts: str, work: Path | None, model: str | None,
         uvc: Path | None, batches: str | None, modes: str | None, min_seconds: float | None, min_iters: int | None,
         warmup_ms: float | None, compile_mode: str | None, tests_timeout: float | None, train_batch: int | None) -> None:
    """GPU tests, environment, and dense vs UVC vs DynamicViT throughput in one run; see the module docstring."""
    chosen = [p.strip() for p in parts.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(PARTS))
    if unknown:
        raise click.BadParameter(f"unknown part(s) {', '.join(unknown)} (parts: {', '.join(PARTS)})", param_hint="--parts")
    mode_list = _list(modes, str)
    if mode_list and set(mode_list) - set(MODES):
        raise click.BadParameter(f"modes are {', '.join(MODES)}", param_hint="--modes")
    plan = make_plan(dry_run, model=model, batches=_list(batches, int), modes=mode_list, min_seconds=min_seconds,
                     min_iters=min_iters, warmup_ms=warmup_ms, compile_mode=compile_mode, tests_timeout=tests_timeout,
                     train_batch=train_batch)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "gpu_check.log"
    log.write_text("")
    _LOG.append(log)
    own_work = work is None
    work_dir = Path(tempfile.mkdtemp(prefix="vitc-gpu-check-")) if work is None else work
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        rc = run_check(plan, out, work_dir, chosen, budget_s, grace_s, uvc, sys.argv[1:])
    finally:
        if own_work:
            shutil.rmtree(work_dir, ignore_errors=True)
    sys.exit(rc)


if __name__ == "__main__":
    main()
