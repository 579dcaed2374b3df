"""The matched-MACs benchmark is a `vitc run` pipeline (benchmarks/matched_macs.yaml): from one dense
baseline, UVC at three budgets, DynamicViT trained at two ratios, and UVC 0.5 + DynamicViT at two ratios
with each teacher (the UVC model, and the dense baseline via `teacher: dense`); fp32 ONNX, top-1 through
ONNX Runtime, batch-32 ORT benches paired with dense."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import VITC, subprocess_env

YAML = Path(__file__).resolve().parents[1] / "benchmarks" / "matched_macs.yaml"
COMBINED = [f"uvc-0.50+dynamicvit-keep{r}{t}" for t in ("", "-teacher-dense") for r in ("0.70", "0.50")]
VARIANTS = ["dense", "uvc-0.30", "uvc-0.45", "uvc-0.50", "dynamicvit-keep0.50", "dynamicvit-keep0.60", *COMBINED]


def _run(*args: Any, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VITC, "run", str(YAML), *map(str, args)], capture_output=True, text=True,
                          env=subprocess_env(), timeout=timeout)


def test_plan_compares_every_method_and_both_teachers(tmp_path: Path) -> None:
    out = tmp_path / "mm"
    r = _run("--out", out, "--dry-run", "--json", timeout=300)
    assert r.returncode == 0, r.stderr
    stages = {s["name"]: s for s in json.loads(r.stdout)["stages"]}
    for v in VARIANTS:
        assert f"{v}/eval-onnxruntime-fp32" in stages and f"{v}/quantize" not in stages, v
        if v != "dense":
            bench = stages[f"{v}/bench-onnxruntime-fp32"]["options"]
            assert bench["batch_sizes"] == [32] and bench["paired_with"].endswith("dense/model.onnx"), v
    # each method's command defaults (no epochs in the YAML)
    assert stages["uvc-0.30/compress"]["options"]["epochs"] == 30
    assert stages["uvc-0.30/compress"]["options"]["finetune_epochs"] == 60
    assert stages["dynamicvit-0.60/compress"]["options"]["keep_ratio"] == 0.6
    teachers = {name: s["options"]["teacher"] for name, s in stages.items()
                if name.startswith("uvc-0.50+") and name.endswith("/compress")}
    dense = str(out / "dense" / "model.safetensors")
    assert teachers == {"uvc-0.50+dynamicvit-0.70/compress": None, "uvc-0.50+dynamicvit-0.50/compress": None,
                        "uvc-0.50+dynamicvit-0.70-teacher-dense/compress": dense,
                        "uvc-0.50+dynamicvit-0.50-teacher-dense/compress": dense}
    assert [s for s in stages if s.startswith("uvc-") and s.endswith("/compress") and "+" not in s] == \
        ["uvc-0.30/compress", "uvc-0.45/compress", "uvc-0.50/compress"]  # the combined runs reuse the listed 0.5


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_smoke_run_makes_every_model_and_reuses_them(tmp_path: Path) -> None:
    """Short runs of every model (the old script's smoke recipe): each deployed, measured through ORT and paired with dense."""
    out = tmp_path / "mm"
    smoke = ["--set", "baseline.epochs=1",
             "--set", "uvc.epochs=4", "--set", "uvc.finetune_epochs=1", "--set", "uvc.gate_warmup_epochs=0",
             "--set", "uvc.z_lr_schedule=[2000.0]", "--set", "uvc.gate_lr=5.0", "--set", "uvc.gate_interval=1",
             "--set", "dynamicvit.epochs=1", "--set", "dynamicvit.freeze_epochs=0",
             "--set", "uvc+dynamicvit.epochs=1", "--set", "uvc+dynamicvit.freeze_epochs=0",
             "--set", "bench.min_seconds=0.1", "--set", "bench.min_iters=3", "--out", out]
    r = _run(*smoke, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {row["variant"]: row for row in json.loads(r.stdout)["rows"] if row["format"] == "onnx fp32"}
    assert list(rows) == VARIANTS
    assert rows["dense"]["macs_ratio"] == 1.0
    for name, row in rows.items():
        assert 0.0 <= row["top1"] <= 100.0, name
        if name != "dense":
            assert row["macs_ratio"] < 1.0 and row["speedup"]["32"] > 0 and row["speedup_paired"], name
    # token selection cuts MACs below its UVC parent, and the teacher does not change the architecture
    for rho in ("0.70", "0.50"):
        a, b = rows[f"uvc-0.50+dynamicvit-keep{rho}"], rows[f"uvc-0.50+dynamicvit-keep{rho}-teacher-dense"]
        assert a["macs"] == b["macs"] < rows["uvc-0.50"]["macs"]
    again = _run(*smoke, "--resume", "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["stages_run"] == []  # nothing trained (or measured) twice
