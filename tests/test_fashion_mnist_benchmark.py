"""The Fashion-MNIST benchmark is a `vitc run` pipeline: benchmarks/fashion_mnist.yaml plans the published
table's variants and epochs, and benchmarks/fashion_mnist_smoke.yaml runs end to end on small IDX files
written here, checks its targets, and resumes (a rerun skips everything; another DynamicViT epoch count
redoes only what depends on it)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import VITC, subprocess_env
from test_fashion_mnist import write_fashion_mnist

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(*args: Any, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VITC, "run", *map(str, args)], capture_output=True, text=True, env=subprocess_env(),
                          timeout=timeout)


def test_full_pipeline_plans_the_published_table(tmp_path: Path) -> None:
    """Dense 10 epochs, UVC 0.5 (2 search + 6 fine-tune), DynamicViT at rho 0.7 for 2 epochs materialized at
    0.5/0.7/0.9, UVC 0.5 + DynamicViT 0.7 for 2 epochs; PyTorch, ORT fp32 and int8 top-1; ORT batch-32 bench."""
    data = write_fashion_mnist(tmp_path / "fm")
    r = _run(BENCHMARKS / "fashion_mnist.yaml", "--set", f"data=fashion-mnist:{data}", "--out", tmp_path / "out",
             "--dry-run", "--json", timeout=300)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    stages = {s["name"]: s["options"] for s in plan["stages"]}
    assert stages["dense/train"]["epochs"] == 10 and stages["dense/train"]["warmup_epochs"] == 1.0
    uvc = stages["uvc-0.50/compress"]
    assert (uvc["budget"], uvc["epochs"], uvc["gate_warmup_epochs"], uvc["finetune_epochs"]) == (0.5, 2, 1, 6)
    dvt = stages["dynamicvit-0.70/compress"]
    assert (dvt["keep_ratio"], dvt["epochs"], dvt["freeze_epochs"], dvt["batch_size"]) == (0.7, 2, 0, 64)
    assert stages["dynamicvit-0.70/materialize"]["ratios"] == [0.5, 0.7, 0.9]
    both = stages["uvc-0.50+dynamicvit-0.70/compress"]
    assert (both["keep_ratio"], both["epochs"], both["freeze_epochs"], both["batch_size"]) == (0.7, 2, 0, 64)
    variants = ["dense", "uvc-0.50", "dynamicvit-keep0.50", "dynamicvit-keep0.70", "dynamicvit-keep0.90",
                "uvc-0.50+dynamicvit-keep0.70"]
    for v in variants:
        for step in ("eval-torch-fp32", "eval-onnxruntime-fp32", "eval-onnxruntime-int8", "bench-onnxruntime-fp32",
                     "bench-onnxruntime-int8", "quantize", "eval-openvino-fp32", "eval-openvino-int8", "bench-openvino-int8"):
            assert f"{v}/{step}" in stages, (v, step)
        assert stages[f"{v}/quantize"]["quantize"]["num_samples"] == 512
        assert stages[f"{v}/bench-onnxruntime-int8"]["batch_sizes"] == [32]
        assert f"{v}/export-fp16" not in stages and f"{v}/bench-torch-fp32" not in stages
    assert plan["targets"] == ["dense top1 >= 88", "uvc-0.50 top1 >= dense - 1.5", "dynamicvit-keep0.70 top1 >= dense - 1.0"]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_smoke_pipeline_runs_every_stage_checks_targets_and_resumes(tmp_path: Path) -> None:
    data = write_fashion_mnist(tmp_path / "fm", n_train=200, n_test=100)
    out = tmp_path / "bench"
    args = [BENCHMARKS / "fashion_mnist_smoke.yaml", "--set", f"data=fashion-mnist:{data}", "--set", "subset.train=160",
            "--set", "subset.val=64", "--out", out]
    r = _run(*args, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout)
    report = json.loads((out / "report.json").read_text())
    rows = {(row["variant"], row["format"]): row for row in report["rows"]}
    variants = ["dense", "uvc-0.50", "dynamicvit-keep0.50", "dynamicvit-keep0.70", "dynamicvit-keep0.90",
                "uvc-0.50+dynamicvit-keep0.70"]
    assert list(dict.fromkeys(v for v, _ in rows)) == variants
    for v in variants:
        for fmt in ("pytorch", "onnx fp32", "onnx int8"):
            row = rows[(v, fmt)]
            assert 0 <= row["top1"] <= 100 and row["images"] == 64, (v, fmt)
        for fmt in ("onnx fp32", "onnx int8"):
            assert rows[(v, fmt)]["throughput"]["32"] > 0 and Path(rows[(v, fmt)]["target"]).is_file()
            assert rows[(v, fmt)]["verify"] == "PASS"
    # the fp32 ONNX computes what PyTorch does: the same top-1 on every test image of the dense model
    assert rows[("dense", "onnx fp32")]["top1"] == pytest.approx(rows[("dense", "pytorch")]["top1"], abs=1e-9)
    assert rows[("uvc-0.50", "pytorch")]["macs_ratio"] <= 0.5 + 1e-9
    assert [t["met"] for t in report["targets"]] == [True, True]
    assert "Targets:" in (out / "report.md").read_text()
    assert result["stages_run"][:2] == ["data/subset", "dense/train"]

    again = _run(*args, "--resume", "--json", timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["stages_run"] == []

    # other DynamicViT epochs: only DynamicViT (and what is made from it) is redone
    other = _run(*args, "--resume", "--set", "dynamicvit.epochs=2", "--json")
    assert other.returncode == 0, other.stderr[-3000:]
    redone = json.loads(other.stdout)["stages_run"]
    assert "dynamicvit-0.70/compress" in redone and "dynamicvit-keep0.70/export" in redone
    kept = ("data", "dense", "uvc-0.50", "uvc-0.50+dynamicvit-0.70", "uvc-0.50+dynamicvit-keep0.70")
    assert [s for s in redone if s.split("/")[0] in kept] == []
