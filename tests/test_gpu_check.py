"""benchmarks.gpu_check cannot rot: the pipeline it runs (benchmarks/gpu.yaml) plans on a CPU with every step's
``--set`` items, its pieces — pytest output parsing, the budget, the watchdog that keeps what a stopped run measured,
the Markdown — are checked here, and its whole ``--dry-run`` (vit-micro on the CPU, ~3 min) is a slow test."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import subprocess_env

from benchmarks import gpu_check as gc

REPO = Path(__file__).resolve().parents[1]


def check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, dry_run: bool = False, left_s: float = 420.0) -> gc.Check:
    """A Check with ``left_s`` seconds of its budget left, its log in ``tmp_path``, the report skeleton of main()."""
    log = tmp_path / "gpu_check.log"
    log.write_text("")
    monkeypatch.setattr(gc, "_LOG", [log])
    c = gc.Check(tmp_path, tmp_path / "work", dry_run, time.monotonic() - gc.START + left_s)
    c.data.update({"format": gc.FORMAT, "environment": None, "sets": [], "tests": None, "steps": {}, "skipped": [], "errors": []})
    return c


def test_the_gpu_pipeline_plans_with_the_sets_of_every_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What each step would run on a GPU with TensorRT: the YAML and every --set item are valid, and each step changes
    what it says (speed target: one more UVC run per profile; cuda-graph / compile: the bench stages' settings)."""
    import yaml

    from benchmarks.shapes import SHORT_SEARCH, SHORT_SEARCH_DATA
    from vitc.pipeline.config import load_config
    from vitc.pipeline.run import run_pipeline

    raw = yaml.safe_load(gc.YAML.read_text())  # the UVC architecture is the short search of benchmarks.shapes
    (run,) = raw["uvc"].pop("runs")
    assert raw["data"] == SHORT_SEARCH_DATA and {**raw["uvc"], **run} == {**SHORT_SEARCH, "z_lr_schedule": [2000.0]}
    c = check(tmp_path, monkeypatch)
    c.data["environment"] = {"versions": {"tensorrt": "10.9"}}
    c.sets = ["deploy.precisions=[fp32,fp16,int8]"]
    planned: dict[str, list[str]] = {}

    def pipeline(step: str, sets: list[str], need: float) -> None:
        c.sets += sets
        planned[step] = list(c.sets)
        c.data["steps"][step] = {"stage_seconds": {"dense/bench-torch-fp32": 10.0}}

    def profile(cmd: list[str], limit: float, log: Path | None = None) -> tuple[int, list[str]]:
        from tests.test_latency import synthetic_model  # a valid profile of the run's dense model (not measured here)

        Path(cmd[cmd.index("-o") + 1]).write_text(json.dumps(synthetic_model("deit_small_patch16_224").to_dict()))
        return 0, []

    (c.work / "run" / "dense").mkdir(parents=True)
    (c.work / "run" / "dense" / "model.safetensors").write_text("")
    monkeypatch.setattr(c, "pipeline", pipeline)
    monkeypatch.setattr(c, "run", profile)
    for step in ("eager", "speed-target", "cuda-graph", "compile"):
        gc.STEPS[step](c)
    assert list(planned) == ["eager", "speed-target", "cuda-graph", "compile"] and not c.data["errors"]
    stages = {}
    for step, sets in [*planned.items(), ("dry-run", gc.DRY_SETS)]:
        plan = run_pipeline(load_config(gc.YAML, sets), tmp_path / step, dry_run=True)
        stages[step] = {s["name"]: s["options"] for s in plan["stages"]}
    eager, target, graph, compiled, dry = stages.values()
    assert {n.split("/")[0] for n in eager} == {"dense", "uvc-0.50", "dynamicvit-0.70", "dynamicvit-keep0.70", "dynamicvit-keep0.50",
                                                "uvc-0.50+dynamicvit-0.70", "uvc-0.50+dynamicvit-keep0.70"}
    assert {"dense/bench-torch-fp16", "uvc-0.50/bench-torch-fp32", "dense/quantize"} <= set(eager)
    assert all(o["device"] == "cuda" and o["batch_sizes"] == [1, 32, 64] for n, o in eager.items() if "/bench-" in n)
    added = set(target) - set(eager)
    assert {"uvc-x2.00-torch-fp16/compress", "uvc-x2.00-tensorrt-fp16/compress"} <= added
    assert target["uvc-x2.00-torch-fp16/compress"]["latency"].endswith("latency-torch-fp16.json")
    assert all(o["cuda_graph"] and not o["compile"] for n, o in graph.items() if "/bench-" in n)
    assert all(o["compile"] and not o["cuda_graph"] and o["batch_sizes"] == [32] for n, o in compiled.items() if "/bench-" in n)
    assert {n.split("/bench-")[1] for n in compiled if "/bench-" in n} == {"torch-fp32", "torch-fp16"}
    assert {n.rsplit("/", 1)[1] for n in dry if n.startswith("dense/")} >= {"bench-torch-fp32", "bench-onnxruntime-int8"}


def test_a_step_that_does_not_fit_is_skipped_and_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = check(tmp_path, monkeypatch, left_s=20.0)
    (c.work / "run" / "dense").mkdir(parents=True)
    (c.work / "run" / "dense" / "model.safetensors").write_text("")
    c.data["environment"] = {"versions": {"tensorrt": None}}
    for step in ("tests", "eager", "speed-target", "cuda-graph", "compile"):
        gc.STEPS[step](c)  # none of them starts anything: a subprocess would fail on the empty model file
    whats = [s["what"] for s in c.data["skipped"]]
    assert whats == ["tests", "eager", "speed target on torch", "cuda-graph", "compile"] and not c.data["errors"]
    assert all("of the budget left" in s["why"] or " s left" in s["why"] for s in c.data["skipped"])
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert len(saved["skipped"]) == 5 and not saved["steps"]
    md = (tmp_path / "gpu_check.md").read_text()
    assert "## Skipped\n\n- tests: " in md and "INCOMPLETE" in md
    dry = check(tmp_path, monkeypatch, dry_run=True)
    gc.STEPS["cuda-graph"](dry)
    assert dry.data["skipped"][0]["why"] == "benched on CUDA only (this is the dry run, on the CPU)"


def test_the_watchdog_stops_a_run_at_the_budget_and_keeps_what_it_measured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `vitc run` still going when the budget is spent is killed with its children; the bench stages it finished
    (from its stages.json) are in the report, and the log keeps its output."""
    fake_run = (
        "import json, pathlib, subprocess, sys, time\n"
        "out = pathlib.Path(sys.argv[sys.argv.index('--out') + 1]); out.mkdir(parents=True, exist_ok=True)\n"
        "record = {'key': 'k', 'seconds': 2.0, 'result': {'throughput': {'32': 950.0}, 'speedup': {'32': 1.8}}}\n"
        "(out / 'stages.json').write_text(json.dumps({'uvc-0.50/bench-torch-fp16': record, 'uvc-0.50/compress': {'key': 'k'}}))\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('grandchild-pid', child.pid, flush=True); time.sleep(60)\n"
    )
    monkeypatch.setattr(gc, "VITC", [sys.executable, "-c", fake_run])
    c = check(tmp_path, monkeypatch, left_s=4.0)
    t0 = time.monotonic()
    c.pipeline("eager", [], need=0.0)
    assert time.monotonic() - t0 < 30
    step = c.data["steps"]["eager"]
    assert step["returncode"] is None and step["report"] is None
    assert step["stage_seconds"] == {"uvc-0.50/bench-torch-fp16": 2.0, "uvc-0.50/compress": None}
    assert step["partial"] == {"uvc-0.50/bench-torch-fp16": {"throughput": {"32": 950.0}, "speedup": {"32": 1.8}}}
    assert c.data["errors"] == [{"what": "eager", "why": "stopped at the end of the budget", "at_s": c.data["errors"][0]["at_s"]}]
    log = (tmp_path / "gpu_check.log").read_text()
    pid = int(log.rsplit("grandchild-pid ", 1)[1].split()[0])
    time.sleep(0.5)
    state = Path(f"/proc/{pid}/stat")
    assert not state.exists() or state.read_text().split(")")[-1].split()[0] in ("Z", "X"), "the run's child outlived it"
    md = (tmp_path / "gpu_check.md").read_text()
    assert "No report (the run was stopped or failed)" in md and "- uvc-0.50/bench-torch-fp16: {'32': 950.0}, {'32': 1.8}" in md


def test_parse_pytest_reads_outcomes_reasons_and_the_summary() -> None:
    lines = [
        "tests/test_gpu.py::test_a[dense-fp16] PASSED                             [ 25%]",
        "tests/test_gpu.py::test_b FAILED                                         [ 50%]",
        "tests/test_gpu.py::test_c SKIPPED (needs a CUDA GPU)                     [ 75%]",
        "tests/test_gpu.py::test_d ERROR                                          [100%]",
        "=========================== short test summary info ============================",
        "SKIPPED [1] tests/test_gpu.py:42: needs a CUDA GPU",
        "FAILED tests/test_gpu.py::test_b - AssertionError: fp16: relative logit error 0.2 > 0.01",
        "ERROR tests/test_gpu.py::test_d - RuntimeError: CUDA error",
        "========= 1 failed, 1 passed, 1 skipped, 2 warnings, 1 error in 12.34s =========",
    ]
    r = gc.parse_pytest(lines)
    assert r["counts"] == {"failed": 1, "passed": 1, "skipped": 1, "error": 1} and r["seconds"] == 12.34
    assert r["tests"]["tests/test_gpu.py::test_a[dense-fp16]"] == {"outcome": "passed"}
    assert r["tests"]["tests/test_gpu.py::test_b"]["message"].startswith("AssertionError: fp16")
    assert r["tests"]["tests/test_gpu.py::test_c"]["detail"] == "needs a CUDA GPU"
    assert r["skip_reasons"] == ["1 × tests/test_gpu.py:42: needs a CUDA GPU"]
    md = gc.render_markdown({"tests": {**r, "returncode": 1}, "skipped": [], "errors": []})
    assert "| test_b | failed | AssertionError: fp16" in md and "- 1 × tests/test_gpu.py:42: needs a CUDA GPU" in md


def test_gpu_tests_collect_and_run_where_pytest_timeout_and_hypothesis_are_missing() -> None:
    """The device image may lack pytest's plugins: ``-o addopts=''`` and an unknown ``timeout`` option only warn;
    and tests/test_gpu.py must collect here (a broken import would leave nothing to run on the GPU)."""
    cmd = gc.pytest_command(per_test_timeout=60) + ["-p", "no:timeout", "-p", "no:hypothesispytest"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stdout[-3000:]
    result = gc.parse_pytest(run.stdout.splitlines())
    assert result["counts"].get("skipped", 0) >= 20 and set(result["counts"]) == {"skipped"}
    assert any("needs a CUDA GPU" in r for r in result["skip_reasons"])
    assert "Unknown config option: timeout" in run.stdout  # a warning, not an error


@pytest.mark.slow
def test_dry_run_runs_every_step_a_cpu_can_and_writes_both_reports(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--dry-run", "--out", str(out), "--work", str(tmp_path / "w"),
                          "--budget-s", "900"], capture_output=True, text=True, env=subprocess_env(), timeout=1200, cwd=REPO)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_check.md", "pytest.log"]
    d = json.loads((out / "gpu_check.json").read_text())
    assert d["format"] == gc.FORMAT and d["dry_run"] is True and d["finished"] is True and not d["errors"]
    assert [s["what"] for s in d["skipped"]] == ["cuda-graph", "compile"]
    tests = d["tests"]  # no CUDA here: every GPU test is collected and skipped, with its reason
    assert tests["returncode"] == 0 and set(tests["counts"]) == {"skipped"} and tests["counts"]["skipped"] >= 20

    assert list(d["steps"]) == ["eager", "speed-target", "tune"] and all(s["returncode"] == 0 for s in d["steps"].values())
    rows: list[dict[str, Any]] = d["steps"]["speed-target"]["report"]["rows"]
    variants = {r["variant"] for r in rows}
    assert variants == {"dense", "uvc-0.50", "dynamicvit-keep0.70", "dynamicvit-keep0.50", "uvc-0.50+dynamicvit-keep0.70",
                        "uvc-x2.00-torch-fp32"}
    assert {r["format"] for r in rows} == {"pytorch", "onnx fp32", "onnx int8"}  # TensorRT is skipped: not installed
    paired = [r for r in rows if r["method"] != "dense"]
    assert all(r["speedup_paired"] and set(r["speedup"]) == {"1", "8"} for r in paired)
    target = [r for r in rows if r["variant"] == "uvc-x2.00-torch-fp32"]
    assert all(r["target_speedup"] == 2.0 and r["predicted_speedup"] > 1 for r in target)
    assert all(r["verify"] == "PASS" for r in rows if r["backend"] == "onnxruntime")
    tuned = [r for r in d["steps"]["tune"]["report"]["rows"] if r["method"] == "tune"]  # the tune step's row
    assert len(tuned) == 1 and tuned[0]["variant"].startswith("tune-x3") and tuned[0]["tune"]["report"]
    md = (out / "gpu_check.md").read_text()
    assert md.startswith("# GPU check (DRY RUN") and "## eager: " in md and "predicted speedup (target)" in md
