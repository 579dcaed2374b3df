"""benchmarks.gpu_check cannot rot: its ``--dry-run`` runs every part that can run on a CPU (the nested
``pytest -m gpu``, a UVC search, the A/B comparisons, the training steps, an ONNX Runtime comparison), and its
pieces — pytest output parsing, the budget, the watchdog, acceptance lines, the Markdown — are checked here."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import subprocess_env

from benchmarks import gpu_check as gc

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # the whole GPU check on the CPU: every method compressed, exported, benched and trained (~30 s)
def test_dry_run_runs_every_cpu_path_and_writes_both_reports(tmp_path: Path) -> None:
    from vitc.methods import METHODS

    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--dry-run", "--out", str(out), "--work", str(tmp_path / "work")],
                         capture_output=True, text=True, env=subprocess_env(), timeout=600, cwd=REPO)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_check.md", "pytest.log"]
    d = json.loads((out / "gpu_check.json").read_text())
    assert d["format"] == gc.FORMAT and d["dry_run"] is True and d["finished"] is True and not d["errors"]
    assert all(p["status"] == "done" for p in d["parts"].values()), d["parts"]
    assert set(d["parts"]) == {"environment", "tests", "architectures", "inference", "training", "compile", "backends",
                               "speed_target"}
    (target,) = d["speed_target"]
    assert target["backend"] == "torch" and target["off_target"] == pytest.approx(target["measured_speedup"] / 2.0 - 1)

    tests = d["tests"]  # no CUDA here: every GPU test is collected and skipped, with its reason
    assert tests["returncode"] == 0 and not tests["timed_out"] and tests["counts"]["skipped"] >= 20
    assert set(tests["counts"]) == {"skipped"} and all(t["outcome"] == "skipped" for t in tests["tests"].values())
    assert any("needs a CUDA GPU" in r for r in tests["skip_reasons"])

    names = [a["name"] for a in d["architectures"]]
    expected = ["dense", "uvc-0.5", "dynamicvit-0.7", "dynamicvit-0.5"] + (["uvc+dynamicvit-0.7"] if "uvc+dynamicvit" in METHODS else [])
    assert names == expected
    assert d["architectures"][1]["source"].startswith("UVC search"), "the short search missed its budget"
    assert d["architectures"][0]["macs_ratio"] == 1 and all(0 < a["macs_ratio"] < 1 for a in d["architectures"][1:])

    rows = d["inference"]
    assert {(r["mode"], r["variant"], r["batch"]) for r in rows} == {("eager", n, b) for n in expected[1:] for b in (1, 8)}
    assert all(0 < r["macs_ratio"] < 1 and r["speedup_gpu"] is None for r in rows)
    assert all(r["speedup"] == pytest.approx(r["dense_ms"] / r["variant_ms"]) for r in rows)  # median latency dense / variant
    assert all(r["speedup_vs_ideal"] == r["speedup"] * r["macs_ratio"] for r in rows)
    skipped = " | ".join(f"{s['what']}: {s['why']}" for s in d["skipped"])
    assert "inference cuda-graph: cuda-graph needs CUDA" in skipped and "inference compile: compile needs CUDA" in skipped
    assert "backend tensorrt" in skipped

    assert [t["step"] for t in d["training"]] == list(gc.TRAIN_KINDS)
    assert all(t["amp"] is False for t in d["training"])
    assert all(t["images_per_s"] == pytest.approx(t["batch"] * t["steps"] / t["seconds"], rel=1e-2) for t in d["training"])
    assert {r["variant"] for r in d["backends"]} == {"uvc-0.5"} and all(r["backend"] == "onnxruntime" for r in d["backends"])

    assert len(d["acceptance"]) == 2 * len(expected[1:])
    md = (out / "gpu_check.md").read_text()
    assert md.startswith("# GPU check (DRY RUN") and "## Acceptance (informational)" in md
    assert md.count("\n- PASS ") + md.count("\n- FAIL ") == len(d["acceptance"])
    assert "| mode | variant | batch |" in md and "## Training step throughput" in md
    log = (out / "gpu_check.log").read_text().splitlines()
    assert log and all(re.match(r"\[\d\d:\d\d:\d\d \+ *[\d.]+s\] ", line) for line in log)  # timestamped progress


def test_gpu_tests_run_where_pytest_timeout_and_hypothesis_are_missing() -> None:
    """The device image may lack pytest's plugins: ``-o addopts=''`` and an unknown ``timeout`` option only warn."""
    cmd = gc.pytest_command(None, per_test_timeout=60) + ["-p", "no:timeout", "-p", "no:hypothesispytest"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stdout[-3000:]
    result = gc.parse_pytest(run.stdout.splitlines())
    assert result["counts"].get("skipped", 0) >= 20 and "failed" not in result["counts"]
    assert "Unknown config option: timeout" in run.stdout  # a warning, not an error


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


def _row(variant: str, batch: int, speedup: float, macs: float, mode: str = "eager") -> dict[str, Any]:
    return {"mode": mode, "backend": "torch", "variant": variant, "batch": batch, "precision": "fp16", "dense_ips": 100.0,
            "variant_ips": 100.0 * speedup, "speedup": speedup, "speedup_paired": speedup, "speedup_paired_iqr": [speedup, speedup],
            "speedup_gpu": speedup, "macs_ratio": macs, "speedup_vs_ideal": speedup * macs, "cv_dense": 0.01, "cv_variant": 0.02,
            "rounds": 10, "warnings": []}


def test_acceptance_lines_and_markdown() -> None:
    plan = gc.make_plan(False)
    rows = [_row("uvc-0.5", 1, 1.3, 0.424), _row("uvc-0.5", 32, 2.2, 0.424), _row("dynamicvit-0.7", 1, 0.8, 0.667),
            _row("dynamicvit-0.7", 32, 1.2, 0.667), _row("uvc-0.5", 64, 1.0, 0.424, mode="cuda-graph")]
    verdicts = {(a["variant"], a["mode"], a["criterion"].split()[0]): a["passed"] for a in gc.acceptance(rows, plan.__dict__)}
    assert verdicts == {("uvc-0.5", "eager", "speedup"): True, ("uvc-0.5", "eager", "batch"): True,  # 2.2 >= 0.9 / 0.424
                        ("dynamicvit-0.7", "eager", "speedup"): False, ("dynamicvit-0.7", "eager", "batch"): False}
    d = gc.initial_data(plan, 450.0, 90.0, gc.PARTS, ["--out", "x"])
    d["inference"] = rows
    d["acceptance"] = gc.acceptance(rows, d["plan"])
    md = gc.render_markdown(d)
    assert "- PASS uvc-0.5 [eager]: speedup at batch 32 >= 0.9 x ideal (1 / MACs ratio): 2.20x vs 2.12x" in md
    assert "- FAIL dynamicvit-0.7 [eager]: batch 1 no slower than dense: 0.80x vs 1.00x" in md
    assert "INCOMPLETE" in md and "DRY RUN" not in md


def test_no_time_left_skips_and_records_instead_of_running(tmp_path: Path) -> None:
    from vitc.core.models import resolve_spec

    plan = gc.make_plan(True)
    report = gc.Report(tmp_path, gc.initial_data(plan, 10.0, 0.0, gc.PARTS, []))
    spec = resolve_spec("vit-micro")
    variants = [gc.Variant(name, "dense", spec, tmp_path / "missing.safetensors", "") for name in ("dense", "a", "b")]
    gone = gc.Budget(0.0)
    gc.run_inference(plan, variants, ["eager"], report, gone)  # would fail loading the missing files if it ran
    gc.run_training(plan, variants[0], report, gone)
    whats = [s["what"] for s in report.data["skipped"]]
    assert whats == ["inference eager a", "inference eager b", "training dense", "training uvc-search", "training dynamicvit"]
    assert all(s["why"].startswith("budget: ") for s in report.data["skipped"])
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert len(saved["skipped"]) == 5 and not saved["inference"] and not saved["training"]


def test_the_watchdog_stops_the_process_and_keeps_the_reports(tmp_path: Path) -> None:
    code = (
        "import sys, time; from benchmarks import gpu_check as gc; from pathlib import Path\n"
        "plan = gc.make_plan(True)\n"
        "report = gc.Report(Path(sys.argv[1]), gc.initial_data(plan, 1.0, 0.0, gc.PARTS, []))\n"
        "gc.start_watchdog(report, time.monotonic() - gc.START + 1.0)\n"
        "time.sleep(60)\n"
    )
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                         env=subprocess_env(), timeout=120, cwd=REPO)
    assert run.returncode == 124, run.stdout + run.stderr
    d = json.loads((tmp_path / "gpu_check.json").read_text())
    assert d["errors"][-1]["part"] == "watchdog" and d["finished"] is False


def test_a_failing_variant_is_recorded_and_the_others_still_measured(tmp_path: Path) -> None:
    import torch

    from vitc.core.artifacts import save_model
    from vitc.core.models import resolve_model

    plan = gc.make_plan(True)
    report = gc.Report(tmp_path, gc.initial_data(plan, 450.0, 0.0, gc.PARTS, []))
    torch.manual_seed(0)
    model, spec = resolve_model("vit-nano")
    path = save_model(tmp_path / "nano.safetensors", model, spec)
    variants = [gc.Variant("dense", "dense", spec, path, ""), gc.Variant("broken", "uvc", spec, tmp_path / "missing.safetensors", ""),
                gc.Variant("same", "uvc", spec, path, "")]
    gc.run_inference(plan, variants, ["eager", "cuda-graph"], report, gc.Budget(450.0))
    d = report.data
    assert [e["part"] for e in d["errors"]] == ["inference eager broken"] and "missing.safetensors" in d["errors"][0]["error"]
    assert {(r["variant"], r["batch"]) for r in d["inference"]} == {("same", 1), ("same", 8)}
    assert d["skipped"][-1]["what"] == "inference cuda-graph"
