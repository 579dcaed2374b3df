"""`vitc run --resume` after a real SIGKILL in the middle of the UVC compress stage.

The first run is killed as soon as the UVC search has written its first per-epoch checkpoint (the
search has more epochs to go, so the kill lands mid-compress). The resumed run must skip the
finished baseline, continue the search from its checkpoint, and go on to the report.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import VITC, subprocess_env

PIPELINE = {
    "model": "vit-nano",
    "data": "digits",
    "seed": 0,
    "device": "cpu",
    "baseline": {"epochs": 1, "batch_size": 32},
    # no gate warm-up and a steep z schedule: a 3-epoch search (22 steps each) is enough reaches the budget
    "uvc": {"budgets": [0.5], "epochs": 3, "finetune_epochs": 1, "batch_size": 64,
            "options": {"gate_warmup_epochs": 0, "z_lr_schedule": [2000.0]}},
    "export": {"fp16": False, "int8": False},
    "verify": {"batch_sizes": [1], "batches": 1},
    "bench": {"backends": ["onnxruntime"], "device": "cpu", "batch_sizes": [1], "warmup_ms": 10,
              "min_iters": 2, "min_seconds": 0.05},
}


def _kill_when(proc: subprocess.Popen, path: Path, timeout: float = 300.0) -> bool:
    """SIGKILL ``proc`` as soon as ``path`` exists; False if it exited (or timed out) first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if path.is_file():
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            return True
        time.sleep(0.005)
    return False


@pytest.mark.slow  # three whole `vitc run`s (killed, resumed, resumed again); tests/test_trust.py keeps the default run's smoke pipeline
def test_run_resume_after_kill_mid_compress_skips_finished_stages(tmp_path: Path) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(PIPELINE))
    out = tmp_path / "run"
    search_checkpoint = out / "uvc-0.50" / "search" / "checkpoint.pt"

    victim = subprocess.Popen([*VITC, "run", str(config), "--out", str(out)], env=subprocess_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed = _kill_when(victim, search_checkpoint)
    stderr = victim.stderr.read() if victim.stderr else ""
    assert killed and victim.returncode == -signal.SIGKILL, f"not killed mid-compress (rc {victim.returncode}): {stderr}"
    dense = out / "dense" / "model.safetensors"
    assert dense.is_file()
    assert not (out / "uvc-0.50" / "compressed.safetensors").exists()
    assert not (out / "report.md").exists()
    dense_mtime = dense.stat().st_mtime_ns
    state = json.loads((out / "stages.json").read_text())
    # the baseline finished; the UVC stage is recorded as under way, with the key it was started with
    assert {name: "result" in rec for name, rec in state.items()} == {"dense/train": True, "uvc-0.50/compress": False}
    assert state["uvc-0.50/compress"]["running"] is True

    resumed = subprocess.run([*VITC, "run", str(config), "--out", str(out), "--resume", "--json"],
                             env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["stages_skipped"] == ["dense/train"]
    assert "dense/train" not in result["stages_run"]
    assert "uvc-0.50/compress" in result["stages_run"]
    assert re.search(r"\[skip\] stage 1/\d+ dense/train \(unchanged\)", resumed.stderr)
    assert "resuming uvc search from" in resumed.stderr and "after epoch" in resumed.stderr
    assert "[fresh]" not in resumed.stderr  # same settings: the interrupted search continues, it does not start over
    assert dense.stat().st_mtime_ns == dense_mtime  # the baseline was not retrained
    assert (out / "uvc-0.50" / "materialized.safetensors").is_file()
    assert (out / "report.md").is_file() and (out / "pareto.png").is_file()
    variants = {row["variant"] for row in result["rows"]}
    assert variants == {"dense", "uvc-0.50"}

    again = subprocess.run([*VITC, "run", str(config), "--out", str(out), "--resume", "--json"],
                           env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["stages_run"] == []  # everything unchanged: nothing redone


@pytest.mark.slow
def test_resume_after_a_settings_change_starts_the_interrupted_stage_over(tmp_path: Path) -> None:
    """A search killed mid-way, then resumed with other UVC settings: its checkpoint belongs to another run,
    so the stage starts over (said on one line) instead of continuing it under the new settings."""
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(PIPELINE))
    out = tmp_path / "run"
    victim = subprocess.Popen([*VITC, "run", str(config), "--out", str(out)], env=subprocess_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _kill_when(victim, out / "uvc-0.50" / "search" / "checkpoint.pt")
    changed = {**PIPELINE, "uvc": {**PIPELINE["uvc"], "epochs": 4}}
    config.write_text(yaml.safe_dump(changed))
    resumed = subprocess.run([*VITC, "run", str(config), "--out", str(out), "--resume", "--json"],
                             env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert re.search(r"\[fresh\] stage \d+/\d+ uvc-0.50/compress: its settings or inputs changed since its checkpoint "
                     r"was written; starting it over", resumed.stderr)
    assert "resuming uvc search from" not in resumed.stderr
    assert json.loads(resumed.stdout)["stages_skipped"] == ["dense/train"]
