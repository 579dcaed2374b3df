"""The one command for a GPU machine: the environment, ``pytest -m gpu``, and benchmarks/gpu.yaml through ``vitc run``.

    python3 -m pip install -q --no-deps --no-build-isolation -e . && python3 -m benchmarks.gpu_check --out $OUT/gpu
    python -m benchmarks.gpu_check --dry-run --out runs/gpu_check_dry     # the same steps on the CPU, vit-micro

The measurements are the pipeline benchmarks/gpu.yaml; this script does what a pipeline cannot. ``STEPS``: environment;
tests (``pytest -m gpu tests/test_gpu.py``, parsed); eager (``vitc run gpu.yaml``); speed-target (``vitc profile`` on
torch, and TensorRT where installed, then the run ``--resume``d with a ``uvc.runs`` item per profile at ``--target-speedup
2``); cuda-graph and compile (``--resume`` with those bench settings: only the bench stages run again); tune (a ``tune:``
section: 3x over TensorRT fp16/INT8). Subprocesses are killed when ``--budget-s`` is spent; what would not fit is skipped
and said. OUT gets gpu_check.json, .md, .log and pytest.log, rewritten after every step.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from benchmarks.pytest_log import parse_pytest, pytest_command

START = time.monotonic()
REPO = Path(__file__).resolve().parents[1]
YAML = Path(__file__).with_name("gpu.yaml")
FORMAT = "vitc.gpu_check/2"
VITC = [sys.executable, "-m", "vitc"]
# --dry-run: the same pipeline on the CPU with vit-micro, ONNX Runtime in place of the GPU backends, tiny timings
DRY_SETS = ["model=vit-micro", "device=cpu", "data=synthetic:32", "uvc.epochs=2", "uvc.gate_lr=1.0", "quantize.num_samples=16",
            "deploy={backends: [torch, onnxruntime, tensorrt], precisions: [fp32, int8]}", "eval.batch_size=32",
            "bench={device: cpu, batch_sizes: [1, 8], warmup_ms: 0, min_iters: 3, min_seconds: 0.05, peak: false}"]
TUNE_DRY = ("backends: [onnxruntime], precisions: [fp32, int8], device: cpu, batch_size: 8, token_points: 2, probe_seconds: 0, "
            "bench_seconds: 0.1, epochs: 2, methods: [uvc]")  # speed only: synthetic data, no block float for accuracy
PROFILE = {False: "--device cuda --batch-size 32 --token-points 4 --head-points 2 --mlp-points 3 --min-seconds 0.5",  # ~24 probes
           True: "--device cpu --batch-size 8 --token-points 2 --head-points 2 --mlp-points 2 --warmup-ms 0 --min-seconds 0.05"}
_LOG: list[Path] = []


def say(message: str) -> None:
    """A progress line with the time and seconds since start, on stdout and in OUT/gpu_check.log."""
    line = f"[{time.strftime('%H:%M:%S')} +{time.monotonic() - START:6.1f}s] {message}"
    print(line, flush=True)
    with contextlib.suppress(OSError, IndexError), _LOG[0].open("a") as fh:  # none before main() names it
        fh.write(line + "\n")


@dataclass
class Check:
    """One run: where it writes, its budget, the report so far, and the ``--set`` items every pipeline run gets."""

    out: Path
    work: Path
    dry_run: bool
    budget_s: float
    data: dict[str, Any] = field(default_factory=dict)
    sets: list[str] = field(default_factory=list)

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - START)

    def save(self) -> None:
        from vitc.core.fileio import write_json, write_text

        self.data["elapsed_s"] = round(time.monotonic() - START, 1)
        write_json(self.out / "gpu_check.json", self.data)
        write_text(self.out / "gpu_check.md", render_markdown(self.data))

    def note(self, kind: str, what: str, why: str) -> None:
        say(f"{kind}: {what}: {why}")
        self.data[kind].append({"what": what, "why": why, "at_s": round(time.monotonic() - START, 1)})
        self.save()

    def run(self, cmd: Sequence[str], limit: float, log: Path | None = None) -> tuple[int | None, list[str]]:
        """Run ``cmd`` in a process group of its own, its output appended to the log (or written to ``log``) as it
        comes; after ``limit`` s the group is killed and the return code is None. Its output lines are returned."""
        say(f"$ {' '.join(cmd[2:])}  (at most {limit:.0f} s)")
        path, start = (log, 0) if log else (_LOG[0], _LOG[0].stat().st_size)
        with path.open("a" if log is None else "w") as fh:
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1", "VITC_PROGRESS": "0"})
            try:
                rc: int | None = proc.wait(timeout=max(1.0, limit))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)  # the group this script started: pytest or vitc, and their children
                proc.wait()
                rc = None
        with path.open("rb") as fh:
            fh.seek(start)
            return rc, fh.read().decode(errors="replace").splitlines()

    def pipeline(self, step: str, sets: Sequence[str], need: float) -> None:
        """``vitc run gpu.yaml`` in WORK/run (``--resume`` after the first), with ``sets`` added for this step and the later
        ones; its report.json, or the bench stages it finished before it stopped, become ``steps[step]``."""
        if self.left() < need:
            return self.note("skipped", step, f"{self.left():.0f} s of the budget left, it needs ~{need:.0f} s")
        run_dir, first = self.work / "run", not self.data["steps"]
        load = lambda name: json.loads((run_dir / name).read_text()) if (run_dir / name).is_file() else None  # written atomically
        self.sets += sets
        before = load("stages.json") or {}
        (run_dir / "report.json").unlink(missing_ok=True)
        cmd = [*VITC, "run", str(YAML), "--out", str(run_dir), "--force" if first else "--resume", "--allow-fail"]
        t0 = time.monotonic()
        rc, lines = self.run([*cmd, *(a for s in self.sets for a in ("--set", s))], self.left())
        report, stages = load("report.json"), load("stages.json") or {}
        bench = {k: r for k, r in stages.items() if "/bench-" in k and "result" in r}
        self.data["steps"][step] = {
            "command": " ".join(cmd[2:]), "sets": list(sets), "returncode": rc, "seconds": round(time.monotonic() - t0, 1),
            "stage_seconds": {k: r.get("seconds") for k, r in stages.items()}, "report": report,  # compress: training, AMP on CUDA
            # stopped or failed: what its bench stages measured, from the stage records
            "partial": None if report else {k: r["result"] for k, r in bench.items() if r != before.get(k)}}
        if rc != 0:
            self.note("errors", step, "stopped at the end of the budget" if rc is None else f"exit {rc}: {lines[-1:]}")
        self.save()


def step_environment(c: Check) -> None:
    from vitc.checks.environment import dist_version, environment

    rev = subprocess.run("git rev-parse --short HEAD 2>/dev/null", shell=True, cwd=REPO, capture_output=True, text=True)
    env = c.data["environment"] = {**environment(), "vitc_commit": rev.stdout.strip() or None,
                                   "pytest_plugins": {n: dist_version(n) for n in ("pytest", "pytest-timeout", "hypothesis")}}
    gpu, v, providers = env["gpu"] or {}, env["versions"], env["onnxruntime_providers"] or []
    say(f"GPU {gpu.get('name')}, driver {gpu.get('driver')}; {v}; onnxruntime providers {providers}")
    c.sets += [f"build.tensorrt.timing_cache={c.work / 'trt-timing.cache'}"] + (DRY_SETS if c.dry_run else [])
    if not c.dry_run and "CUDAExecutionProvider" in providers:  # a CPU build of onnxruntime cannot bench on cuda
        c.sets.append("deploy.backends=[torch,onnxruntime,tensorrt]")
    if not c.dry_run and v["tensorrt"] is None:  # INT8 files would only be verified on the CPU: not a GPU measurement
        c.sets.append("deploy.precisions=[fp32,fp16]")
    c.data["sets"] = list(c.sets)
    if not c.dry_run and env["gpu"] is None:
        raise RuntimeError("no CUDA GPU is visible: nothing to measure (--dry-run runs the same steps on a CPU)")


def step_tests(c: Check, most: float = 210.0, reserve: float = 240.0) -> None:
    limit = min(most, c.left() - (30.0 if c.dry_run else reserve))  # the rest of the budget is the pipeline's
    if limit < 30:
        return c.note("skipped", "tests", f"{c.left():.0f} s of the budget left, {reserve:.0f} s kept for the pipeline")
    cmd = pytest_command(per_test_timeout=min(180.0, limit - 10))
    rc, lines = c.run(cmd, limit, log=c.out / "pytest.log")
    c.data["tests"] = {**parse_pytest(lines), "command": " ".join(cmd[2:]), "returncode": rc, "limit_s": round(limit)}
    if rc is None:
        c.note("skipped", "tests (the rest)", f"pytest stopped after {limit:.0f} s; the finished tests are reported")


def step_speed_target(c: Check) -> None:
    """UVC ``--target-speedup 2`` from a latency profile of this machine, per backend, added to the run's UVC runs."""
    import yaml

    runs = yaml.safe_load(YAML.read_text())["uvc"]["runs"]
    dense, precision = c.work / "run" / "dense" / "model.safetensors", "fp32" if c.dry_run else "fp16"
    has_trt = (c.data["environment"] or {}).get("versions", {}).get("tensorrt") and not c.dry_run
    for backend in ["torch"] + (["tensorrt"] if has_trt else []):
        if not dense.is_file() or c.left() < 120:
            c.note("skipped", f"speed target on {backend}", f"{c.left():.0f} s left, or no dense model from the eager run")
            continue
        latency = c.work / f"latency-{backend}-{precision}.json"
        cmd = [*VITC, "profile", str(dense), "--backend", backend, "--precision", precision, *PROFILE[c.dry_run].split()]
        if (rc := c.run([*cmd, "-o", str(latency)], c.left() - 60))[0] != 0:
            c.note("errors", f"vitc profile on {backend}", "stopped" if rc[0] is None else f"exit {rc[0]}: {rc[1][-1:]}")
            continue
        runs.append({"target_speedup": 2.0, "latency": str(latency), "name": f"{backend}-{precision}"})
    if len(runs) > 1:
        c.pipeline("speed-target", [f"uvc.runs={json.dumps(runs)}"], need=60.0)


def bench_again(c: Check, step: str, sets: list[str], factor: float) -> None:
    """The bench stages again with ``sets`` (CUDA only), if ``factor`` x the eager run's bench seconds are left."""
    if c.dry_run:
        return c.note("skipped", step, "benched on CUDA only (this is the dry run, on the CPU)")
    seconds = (c.data["steps"].get("eager") or {}).get("stage_seconds") or {}
    c.pipeline(step, sets, need=factor * (sum(v or 0 for k, v in seconds.items() if "/bench-" in k) or 60.0) + 30)


def step_tune(c: Check) -> None:
    """``vitc tune`` 3x over torch fp32 (a ``tune:`` section), over TensorRT fp16/INT8 where installed, else torch fp16."""
    trt = (c.data["environment"] or {}).get("versions", {}).get("tensorrt") and not c.dry_run
    where = TUNE_DRY if c.dry_run else (f"backends: [{'tensorrt' if trt else 'torch'}], precisions: [fp16{', int8' if trt else ''}]"
                                        ", reference: 'torch:fp32', device: cuda, batch_size: 32, token_points: 4, bench_seconds: 1")
    c.pipeline("tune", [f"tune={{target_speedup: 3, block_drop: 100, finetune_epochs: 0, train_batch_size: 4, {where}}}"], 240.0)


STEPS: dict[str, Callable[[Check], None]] = {
    "environment": step_environment, "tests": step_tests,
    "eager": lambda c: c.pipeline("eager", [], need=60.0), "speed-target": step_speed_target,
    "cuda-graph": lambda c: bench_again(c, "cuda-graph", ["bench.cuda_graph=true", "deploy.backends=[torch,tensorrt]"], 1.3),
    "compile": lambda c: bench_again(c, "compile", ["bench.cuda_graph=false", "bench.compile=true", "bench.batch_sizes=[32]",
                                                    "deploy.backends=[torch]"], 2.0),  # one batch size: one compile per model
    "tune": step_tune,
}


def render_markdown(d: dict[str, Any]) -> str:
    """gpu_check.md: the environment, the tests, each pipeline step's table (the pipeline's own), skips and errors."""
    from vitc.core.tables import markdown_table
    from vitc.pipeline.report import markdown_table as report_table

    env, tests, steps = d.get("environment") or {}, d.get("tests"), d.get("steps") or {}
    gpu, v = env.get("gpu") or {}, env.get("versions") or {}
    lines = [f"# GPU check{' (DRY RUN: CPU, vit-micro — not GPU figures)' if d.get('dry_run') else ''}", "",
             f"Started {d.get('started')}, {d.get('elapsed_s')} s of a {d.get('budget_s')} s budget"
             f"{'' if d.get('finished') else ' — INCOMPLETE (still running, or stopped)'}: `{d.get('command')}`.", "",
             f"GPU {gpu.get('name')} (capability {gpu.get('capability')}, {gpu.get('memory_gib')} GiB, driver {gpu.get('driver')}); "
             + ", ".join(f"{k} {v[k] or 'absent'}" for k in v) + f"; onnxruntime providers {env.get('onnxruntime_providers')}; "
             f"TF32 {env.get('tf32')}; vitc commit {env.get('vitc_commit')}.", ""]
    if tests:
        bad = [(n.split("::", 1)[1], t["outcome"], t.get("message") or t.get("detail") or "")
               for n, t in tests["tests"].items() if t["outcome"] in ("failed", "error")]
        lines += ["## Tests (`pytest -m gpu tests/test_gpu.py`)", "",
                  f"{tests['summary'] or 'no summary line'}: exit {tests['returncode']}; full log in pytest.log.", "",
                  *([markdown_table(["test", "outcome", "message"], bad), ""] if bad else []),
                  *(["Skipped:", *(f"- {r}" for r in tests["skip_reasons"]), ""] if tests["skip_reasons"] else [])]
    lines += ["Every `vitc run benchmarks/gpu.yaml` had " + " ".join(f"`--set {x}`" for x in d["sets"]) + ".", ""] if steps else []
    for step, s in steps.items():
        lines += [f"## {step}: `{s['command']}`" + "".join(f" `--set {x}`" for x in s["sets"]), "", *(
            [report_table(s["report"]["rows"]), "", f"{s['seconds']} s. Speedups are paired with the dense model in the same "
             "format; top-1 on synthetic data means nothing."] if s["report"] else
            ["No report (the run was stopped or failed); the bench stages it finished (img/s, paired speedup):", "",
             *(f"- {k}: {r.get('throughput')}, {r.get('speedup')}" for k, r in (s["partial"] or {}).items())]), ""]
    for kind in ("skipped", "errors"):
        lines += [f"## {kind.capitalize()}", "", *(f"- {x['what']}: {x['why']}" for x in d[kind]), ""] if d.get(kind) else []
    return "\n".join(lines) + "\n"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/gpu_check"), show_default=True,
              help="Folder for gpu_check.json, .md, .log and pytest.log.")
@click.option("--dry-run", is_flag=True, help="The same steps on the CPU: vit-micro, ONNX Runtime, tiny timings.")
@click.option("--budget-s", type=click.FloatRange(min=10), default=420.0, show_default=True, help="Seconds for the whole check.")
@click.option("--steps", default=",".join(STEPS), show_default=True, help="Steps to run (in the order above).")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), help="Folder for the run [default: a temporary one].")
def main(out: Path, dry_run: bool, budget_s: float, steps: str, work: Path | None) -> None:
    """GPU tests, environment and benchmarks/gpu.yaml (eager, speed target, CUDA graphs, compile, tune) in one run."""
    if set(chosen := [s.strip() for s in steps.split(",") if s.strip()]) - set(STEPS):
        raise click.BadParameter(f"steps are {', '.join(STEPS)}", param_hint="--steps")
    out.mkdir(parents=True, exist_ok=True)
    _LOG.append(out / "gpu_check.log")
    _LOG[0].write_text("")
    with tempfile.TemporaryDirectory(prefix="vitc-gpu-check-") as tmp:  # removed at the end unless --work is given
        c = Check(out, (work or Path(tmp)).resolve(), dry_run, budget_s)
        c.work.mkdir(parents=True, exist_ok=True)
        c.data.update({"format": FORMAT, "command": " ".join(["python -m benchmarks.gpu_check", *sys.argv[1:]]),
                       "dry_run": dry_run, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "finished": False,
                       "budget_s": budget_s, "environment": None, "sets": [], "tests": None, "steps": {}, "skipped": [], "errors": []})
        say(f"gpu_check{' --dry-run' if dry_run else ''}: {', '.join(chosen)} in {budget_s:.0f} s; reports in {out}, work in {c.work}")
        c.save()
        for name in (n for n in STEPS if n in chosen):
            say(f"--- {name}")
            try:
                STEPS[name](c)
            except Exception as e:  # one broken step must not lose the others' results
                c.note("errors", name, f"{type(e).__name__}: {str(e)[:500]}")
                if name == "environment":
                    break
            c.save()
        c.data["finished"] = True
        c.save()
    bad = bool(c.data["errors"] or {"failed", "error"} & set((c.data["tests"] or {}).get("counts", {})))
    say(f"done in {time.monotonic() - START:.0f} s: {out / 'gpu_check.md'}" + (" — with errors or failed tests" if bad else ""))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
