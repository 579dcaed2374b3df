"""Resume is exact: in-process (stop after epoch 1, resume) and with a real SIGKILL in the middle of epoch 2."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import VITC, subprocess_env
from torch.utils.data import Subset

from vitc.cli import cli
from vitc.core.artifacts import load_model
from vitc.core.data import parse_data
from vitc.core.models import resolve_model
from vitc.train.loop import CHECKPOINT_NAME, METRICS_NAME, Objective, TrainSettings, fit, load_checkpoint


def _fit(out: Path, stop_after: int | None = None, resume: bool = False) -> tuple[torch.nn.Module, list]:
    """3 epochs of vit-nano with dropout and augmentation on digits; ``stop_after`` interrupts the run
    right after that epoch's checkpoint, as a kill would."""
    import vitc.train.loop as trainer

    torch.manual_seed(123)
    model, spec = resolve_model("vit-nano")
    for blk in model.blocks:  # dropout makes the per-epoch RNG re-seeding matter
        blk.attn.attn_drop.p = 0.1
        blk.mlp.drop1.p = 0.1
    data = parse_data("digits")
    train = Subset(data.dataset(spec, "train", train_transforms=True), range(320))
    val = Subset(data.dataset(spec, "val"), range(100))
    cfg = TrainSettings(epochs=3, batch_size=32, warmup_epochs=1, seed=4, device="cpu", deterministic=True)
    args = (model, Objective(), train, val, cfg, out)
    if stop_after is None:
        return fit(*args, resume=resume)
    original = trainer.save_checkpoint

    def save_then_stop(path, state):  # type: ignore[no-untyped-def]
        original(path, state)
        if state["epoch"] == stop_after:
            raise KeyboardInterrupt

    trainer.save_checkpoint = save_then_stop
    try:
        with pytest.raises(KeyboardInterrupt):
            fit(*args)
    finally:
        trainer.save_checkpoint = original
    return model, []


def test_resume_in_process_is_bit_exact(tmp_path: Path) -> None:
    """Dropout + augmentation + AdamW + warm-up/cosine: 3 straight epochs == 1 epoch, stop, resume 2."""
    straight, history = _fit(tmp_path / "a")
    _fit(tmp_path / "b", stop_after=1)
    assert load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)["epoch"] == 1
    resumed, resumed_history = _fit(tmp_path / "b", resume=True)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in resumed_history]
    assert len(strip) == 3


TRAIN_ARGS = ["train", "--model", "vit-nano", "--data", "digits", "--epochs", "2", "--batch-size", "32",
              "--deterministic", "--seed", "7", "--device", "cpu", "--warmup-epochs", "1", "--json"]


def _kill_mid_epoch_two(proc: subprocess.Popen, out: Path, log: dict) -> None:
    """Wait for epoch 1's checkpoint and metrics, then SIGKILL a quarter of an epoch later."""
    deadline = time.monotonic() + 240
    metrics = out / METRICS_NAME
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / CHECKPOINT_NAME).is_file() and metrics.is_file():
            epoch_seconds = json.loads(metrics.read_text())["epochs"][0]["seconds"]
            time.sleep(0.25 * epoch_seconds)
            proc.send_signal(signal.SIGKILL)
            log["killed_after"] = epoch_seconds
            return
        time.sleep(0.01)


def _single_threaded_cli(args: list[str]):  # type: ignore[no-untyped-def]
    """``vitc ARGS`` in this process with one intra-op thread, like the subprocesses (same float sums)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return CliRunner().invoke(cli, args)
    finally:
        torch.set_num_threads(threads)


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    victim_out, ref_out = tmp_path / "victim", tmp_path / "ref"
    victim = subprocess.Popen([*VITC, *TRAIN_ARGS, "--out", str(victim_out)], env=subprocess_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log: dict = {}
    killer = threading.Thread(target=_kill_mid_epoch_two, args=(victim, victim_out, log))
    killer.start()
    ref = _single_threaded_cli([*TRAIN_ARGS, "--out", str(ref_out)])  # the uninterrupted run, meanwhile
    killer.join()
    victim.communicate(timeout=60)
    assert ref.exit_code == 0, ref.output
    assert victim.returncode == -signal.SIGKILL, f"not killed ({log}): {victim.stderr}"
    assert load_checkpoint(victim_out / CHECKPOINT_NAME)["epoch"] == 1  # killed inside epoch 2
    assert not (victim_out / "model.safetensors").exists()

    resumed = _single_threaded_cli([*TRAIN_ARGS, "--out", str(victim_out), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming train from" in resumed.stderr and "after epoch 1/2" in resumed.stderr

    a, art = load_model(ref_out / "model.safetensors")
    b, _ = load_model(victim_out / "model.safetensors")
    x = parse_data("digits").dataset(art.spec, "val")
    images = torch.stack([x[i][0] for i in range(64)])
    with torch.inference_mode():
        assert (a(images) - b(images)).abs().max().item() <= 1e-5
    ref_hist = json.loads((ref_out / METRICS_NAME).read_text())["epochs"]
    res_hist = json.loads((victim_out / METRICS_NAME).read_text())["epochs"]
    assert [h["loss"] for h in ref_hist] == pytest.approx([h["loss"] for h in res_hist], abs=1e-6)
    assert json.loads(resumed.stdout)["val_top1"] == pytest.approx(json.loads(ref.stdout)["val_top1"])
