"""Targets are one-line checks of a run's report: parsed (a bad line names its key), evaluated against the
report's rows (a value, another row's value plus an offset), and re-checked by benchmarks/check_targets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import subprocess_env

from vitc.core.errors import UsageError
from vitc.pipeline.targets import check_targets, parse_target, parse_targets

ROWS: list[dict[str, Any]] = [
    {"variant": "dense", "format": "pytorch", "top1": 89.0, "macs_ratio": 1.0},
    {"variant": "dense", "format": "onnx int8", "top1": 88.5, "macs_ratio": 1.0, "throughput": {"32": 1000.0}},
    {"variant": "uvc-0.50", "format": "pytorch", "top1": 87.9, "macs_ratio": 0.48},
    {"variant": "uvc-0.50+dynamicvit-keep0.70", "format": "onnx int8", "top1": 85.0, "macs_ratio": 0.3,
     "speedup": {"32": 2.1}},
]


@pytest.mark.parametrize("line, met, value, bound", [
    ("dense top1 >= 88", True, 89.0, 88.0),
    ("uvc-0.50 top1 >= dense - 1.0", False, 87.9, 88.0),
    ("uvc-0.50 top1 >= dense - 1.5", True, 87.9, 87.5),
    ("uvc-0.50 macs_ratio <= 0.5", True, 0.48, 0.5),
    ("uvc-0.50+dynamicvit-keep0.70[onnx int8] top1 >= dense[onnx int8] - 3", False, 85.0, 85.5),
    ("uvc-0.50+dynamicvit-keep0.70[onnx int8] speedup@32 > 2", True, 2.1, 2.0),
    ("uvc-0.50+dynamicvit-keep0.70[onnx int8] macs_ratio < uvc-0.50", True, 0.3, 0.48),
    ("dense[onnx int8] throughput@64 >= 1", False, None, 1.0),
])
def test_targets_are_checked_against_the_rows(line: str, met: bool, value: float | None, bound: float) -> None:
    (result,) = check_targets(ROWS, [parse_target(line, "t")])
    assert result["value"] == value
    assert result["met"] is met and result["bound"] == pytest.approx(bound)


@pytest.mark.parametrize("raw, message", [
    (["dense top1 >= 88", "dense accuracy >= 5"], "p.yaml: 'targets[1]': cannot read 'dense accuracy >= 5'"),
    ([88], "p.yaml: 'targets[0]' must be a string such as 'dense top1 >= 88', got 88"),
    (["uvc top1 >= dense minus 1"], "p.yaml: 'targets[0]': cannot read the right side 'dense minus 1'"),
])
def test_a_bad_target_names_its_key(raw: list[Any], message: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_targets(raw, "p.yaml: 'targets'")
    assert message in str(e.value) and "\n" not in str(e.value)


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-m", "benchmarks.check_targets", *args], capture_output=True, text=True,
                          env=subprocess_env(), cwd=root, timeout=120)


def test_check_targets_script_exits_1_on_a_missed_target(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"meta": {}, "rows": ROWS}))
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("targets:\n  - dense top1 >= 88\n  - uvc-0.50 top1 >= dense - 1.5\n")
    ok = _check(str(report), "--pipeline", str(pipeline))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == ["met: dense top1 >= 88 (89 vs 88)", "met: uvc-0.50 top1 >= dense - 1.5 (87.9 vs 87.5)"]
    missed = _check(str(report), "--target", "uvc-0.50 top1 >= dense - 1")
    assert missed.returncode == 1
    assert missed.stdout.strip() == "NOT met: uvc-0.50 top1 >= dense - 1 (87.9 vs 88)"
    assert missed.stderr.strip() == "error: 1 of 1 targets not met"
    bad = _check(str(tmp_path / "nope.json"), "--target", "dense top1 >= 1")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1
