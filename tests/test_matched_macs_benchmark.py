"""benchmarks/matched_macs.py --smoke end to end on digits: every model of the comparison is trained
(one epoch each), exported, evaluated through ONNX Runtime and timed against dense; a rerun reuses
every model it finds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import subprocess_env

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "matched_macs.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=subprocess_env(), timeout=1800)


@pytest.mark.slow
def test_matched_macs_smoke_compares_every_method_and_both_teachers(tmp_path: Path) -> None:
    out = tmp_path / "mm"
    r = _run("--smoke", "--out", str(out), "--min-seconds", "0.1")
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "matched_macs.json").read_text())
    rows = {row["name"]: row for row in report["rows"]}
    assert set(rows) == {"dense", "uvc 0.3", "uvc 0.45", "uvc 0.5", "dynamicvit rho 0.5", "dynamicvit rho 0.6",
                         *(f"uvc 0.5 + dynamicvit rho {rho} (teacher {t})" for rho in ("0.7", "0.5") for t in ("uvc", "dense"))}
    assert rows["dense"]["macs_ratio"] == 1.0 and rows["dense"]["speedup_32"] == 1.0
    for name, row in rows.items():
        assert 0.0 <= row["top1_ort"] <= 100.0 and Path(row["onnx"]).is_file(), name
        if name != "dense":
            assert row["macs_ratio"] < 1.0 and row["speedup_32"] > 0, name
    # the combination is below its UVC parent's MACs, and the teacher does not change the architecture
    for rho in ("0.7", "0.5"):
        a, b = (rows[f"uvc 0.5 + dynamicvit rho {rho} (teacher {t})"] for t in ("uvc", "dense"))
        assert a["macs"] == b["macs"] < rows["uvc 0.5"]["macs"]
    deits = report["deits"]
    assert deits["macs_ratio"] > 1.0 and [x["batch"] for x in deits["results"]] == [1, 32]
    assert "| model | method | MACs ratio" in (out / "matched_macs.md").read_text()
    again = _run("--smoke", "--out", str(out), "--min-seconds", "0.1", "--skip-deits")
    assert again.returncode == 0, again.stderr[-3000:]
    assert [line for line in again.stderr.splitlines() if "] run " in line] == []  # nothing trained twice
    assert "reuse dense baseline" in again.stderr
