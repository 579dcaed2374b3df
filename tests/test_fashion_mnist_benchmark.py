"""benchmarks/fashion_mnist.py --smoke end to end on small IDX files written here: every stage runs through the
library's step functions, the JSON and Markdown results are written, and a rerun skips every finished stage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import subprocess_env
from test_fashion_mnist import write_fashion_mnist

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fashion_mnist.py"


def _run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=subprocess_env(), timeout=timeout)


@pytest.mark.slow
def test_benchmark_smoke_runs_every_stage_and_resumes(tmp_path: Path) -> None:
    from vitc.methods import METHODS

    data = write_fashion_mnist(tmp_path / "fm", n_train=200, n_test=100)
    out = tmp_path / "bench"
    r = _run("--smoke", "--data", f"fashion-mnist:{data}", "--out", str(out), "--train-images", "160", "--test-images", "64")
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    names = [v["variant"] for v in report["variants"]]
    assert "uvc+dynamicvit" in METHODS
    assert names == ["dense", "uvc-0.50", "dynamicvit-keep0.50", "dynamicvit-keep0.70", "dynamicvit-keep0.90",
                     "uvc-0.50+dynamicvit-keep0.70"]
    assert report["test_images"] == 64
    for v in report["variants"]:
        for key in ("top1_torch", "top1_ort_fp32", "top1_ort_int8"):
            assert 0 <= v[key] <= 100
        assert v["ort_images_per_s_fp32"] > 0 and v["ort_images_per_s_int8"] > 0
        assert Path(v["onnx"]).is_file() and Path(v["onnx_int8"]).is_file()
    # the fp32 ONNX computes what PyTorch does: same top-1 on every test image of a plain model
    dense = report["variants"][0]
    assert dense["top1_ort_fp32"] == pytest.approx(dense["top1_torch"], abs=1e-9)
    assert report["variants"][1]["macs_ratio"] <= 0.5 + 1e-9
    assert [s["stage"] for s in report["stages"]][:3] == ["dense", "uvc", "dynamicvit"]
    table = (out / "results.md").read_text()
    assert "| dense | 1.000 |" in table and "| stage | epochs | wall time |" in table

    again = _run("--smoke", "--data", f"fashion-mnist:{data}", "--out", str(out), "--train-images", "160",
                 "--test-images", "64", timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("skipped") == len(report["stages"])
    assert "finished in" not in again.stderr

    # other DynamicViT epochs: only DynamicViT (and what is made from it) is redone
    other = _run("--smoke", "--data", f"fashion-mnist:{data}", "--out", str(out), "--train-images", "160",
                 "--test-images", "64", "--dvt-epochs", "2")
    assert other.returncode == 0, other.stderr[-3000:]
    for kept in ("dense", "uvc", "deploy dense", "deploy uvc-0.50"):
        assert f"{kept}: done before" in other.stderr
    assert "dynamicvit: settings changed since it ran (epochs); redoing it" in other.stderr
    assert "deploy dynamicvit-keep0.70: settings changed since it ran (model.epochs)" in other.stderr
    stages = {s["stage"]: s for s in json.loads((out / "results.json").read_text())["stages"]}
    assert stages["dynamicvit"]["epochs"] == 2 and stages["dense"]["epochs"] == 1
