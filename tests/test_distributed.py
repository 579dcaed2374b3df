"""torchrun with 2 CPU processes (gloo): same result as 1 process, rank 0 alone writes, a failing rank ends the run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import subprocess_env

from vitc.cli import cli
from vitc.core.artifacts import load_model
from vitc.core.data import parse_data

# 71 images, global batch 8: rank 0's shard has 36 images and rank 1's 35, so without equal
# per-rank step counts rank 0 would run a 9th step that rank 1 never joins (a DDP hang).
TRAIN = ["train", "--model", "vit-nano", "--data", "synthetic:71", "--epochs", "2", "--batch-size", "8",
         "--device", "cpu", "--deterministic", "--warmup-epochs", "1", "--json"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def test_two_processes_match_one_process(tmp_path: Path) -> None:
    two = subprocess.run([*TORCHRUN, "-m", "vitc.cli", *TRAIN, "--out", str(tmp_path / "ddp")], env=subprocess_env(),
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = CliRunner().invoke(cli, [*TRAIN, "--out", str(tmp_path / "one")])
    finally:
        torch.set_num_threads(threads)
    assert one.exit_code == 0, one.output

    # only rank 0 reported, logged and wrote: one JSON document, one log line per epoch, three files
    result = json.loads(two.stdout)
    assert result["epochs"] == 2
    epoch_lines = [ln[:15] for ln in two.stderr.splitlines() if ln.startswith("train epoch")]
    assert epoch_lines == ["train epoch 1/2", "train epoch 2/2"]
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["checkpoint.pt", "metrics.json", "model.safetensors"]

    a, art = load_model(tmp_path / "one" / "model.safetensors")
    b, _ = load_model(tmp_path / "ddp" / "model.safetensors")
    val = parse_data("synthetic:71").dataset(art.spec, "val")
    x = torch.stack([val[i][0] for i in range(32)])
    with torch.inference_mode():
        ya, yb = a(x), b(x)
    assert (ya - yb).abs().max().item() <= 1e-4  # DDP sums gradients in another order; measured ~1e-7
    with torch.inference_mode():
        untrained = _initial_model()(x)
    assert (ya - untrained).abs().max().item() > 1e-3  # training did move the weights
    hist_one = json.loads((tmp_path / "one" / "metrics.json").read_text())["epochs"]
    hist_two = json.loads((tmp_path / "ddp" / "metrics.json").read_text())["epochs"]
    assert len(hist_one) == len(hist_two) == 2
    assert all(abs(p["loss"] - q["loss"]) < 1e-5 for p, q in zip(hist_one, hist_two))
    assert [h["val_top1"] for h in hist_one] == [h["val_top1"] for h in hist_two]


def _initial_model() -> torch.nn.Module:
    """The weights ``vitc train --seed 0`` starts from."""
    from vitc.core.models import resolve_model
    from vitc.train.loop import seed_everything

    seed_everything(0)
    return resolve_model("vit-nano", num_classes=10)[0]


FAULT = """
import os
import vitc.train.loop as trainer

if os.environ["RANK"] == "1":
    original = trainer.Objective.loss

    def loss(self, model, images, targets, ctx):
        out = original(self, model, images, targets, ctx)
        if ctx.step == 1:
            {action}
        return out

    trainer.Objective.loss = loss

from vitc.cli import main
main()
"""


def _torchrun_fault(tmp_path: Path, action: str, launcher: list[str] = TORCHRUN) -> subprocess.CompletedProcess:
    script = tmp_path / "fault.py"
    script.write_text(FAULT.format(action=textwrap.indent(action, " " * 12).strip()))
    return subprocess.run([*launcher, str(script), *TRAIN, "--out", str(tmp_path / "out")], env=subprocess_env(),
                          capture_output=True, text=True, timeout=240)


def test_a_dead_peer_is_named_in_one_line_not_a_gloo_traceback(tmp_path: Path) -> None:
    """Rank 1 dies without a word (as an OOM kill would) while rank 0 waits in a collective. (torchrun's
    monitor interval is raised so it does not SIGTERM rank 0 before rank 0 notices.)"""
    launcher = [*TORCHRUN[:3], "--monitor-interval", "3", *TORCHRUN[3:]]
    run = _torchrun_fault(tmp_path, "os._exit(3)", launcher)
    assert run.returncode != 0
    # what rank 0 printed: its error line, and no "[rank0]: Traceback ..." (torchrun's own report follows)
    survivor = [ln for ln in run.stderr.splitlines() if ln.startswith("[rank0]") or "error: rank 0" in ln]
    assert len(survivor) == 1, run.stderr
    assert survivor[0].startswith("error: rank 0: lost rank 1 (pid ") and "during training" in survivor[0]
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_failing_rank_ends_the_run_and_is_named(tmp_path: Path) -> None:
    """Rank 1 fails at step 2 while rank 0 waits in a collective: the run ends, rank 1 is named."""
    run = _torchrun_fault(tmp_path, "raise trainer.CheckFailed('simulated fault')")
    assert run.returncode != 0
    assert "error: rank 1: simulated fault" in run.stderr
    assert not (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.slow  # a third torchrun; the crash test above covers a failing rank by default
def test_nan_on_one_rank_stops_every_rank_at_the_same_step(tmp_path: Path) -> None:
    run = _torchrun_fault(tmp_path, "out = (out[0] * float('nan'), {'ce': out[1]['ce'] * float('nan')})")
    assert run.returncode == 1, run.stderr
    assert "error: rank 1: non-finite loss at epoch 1, step 2: ce=nan; no checkpoint was written" in run.stderr
    assert "error: rank 0: non-finite loss on rank 1 at epoch 1, step 2" in run.stderr
