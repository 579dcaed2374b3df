"""`vitc train` end to end: outputs, --resume, `vitc eval`, and the training loop's contracts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from vitc.cli import cli
from vitc.core.artifacts import load_model, read_header
from vitc.train.loop import CHECKPOINT_NAME, cosine_lr, epoch_seed, load_checkpoint

TRAIN = ["train", "--model", "vit-nano", "--data", "digits", "--batch-size", "64", "--lr", "2e-3",
         "--warmup-epochs", "0.5", "--device", "cpu", "--json"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("train") / "run"
    result = CliRunner().invoke(cli, [*TRAIN, "--epochs", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_train_writes_artifact_metrics_and_checkpoint(trained: tuple[Path, dict]) -> None:
    out, result = trained
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "metrics.json", "model.safetensors"]
    assert result["artifact"] == str(out / "model.safetensors") and result["epochs"] == 2
    spec, kind, meta = read_header(out / "model.safetensors")
    assert (spec.name, spec.num_classes, kind) == ("vit-nano", 10, "model")
    assert (meta["trained_on"], meta["epochs"], meta["val_top1"]) == ("digits", 2, result["val_top1"])
    prov = meta["provenance"]  # what made it: step, settings (seed included), data, the model it started from
    assert (prov["step"], prov["data"], prov["seed"], prov["parent"]) == ("train", "digits", 0, {"name": "vit-nano"})
    assert prov["settings"]["epochs"] == 2 and prov["vitc"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2] and metrics["final"] == result
    assert metrics["epochs"][1]["loss"] < metrics["epochs"][0]["loss"]  # it learns
    assert result["val_top1"] == metrics["epochs"][1]["val_top1"] > 15  # 10 classes: chance is 10% (±1.6 on 360)
    ckpt = load_checkpoint(out / CHECKPOINT_NAME)
    assert ckpt["epoch"] == 2 and ckpt["config"]["batch_size"] == 64
    model, _ = load_model(out / "model.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt["model"][k]), k


def test_eval_json_matches_the_training_validation(trained: tuple[Path, dict]) -> None:
    out, result = trained
    ev = CliRunner().invoke(cli, ["eval", str(out / "model.safetensors"), "--data", "digits", "--json",
                                  "--batch-size", "100", "--device", "cpu"])
    assert ev.exit_code == 0, ev.output
    scores = json.loads(ev.stdout)
    assert scores["images"] == 360 and scores["backend"] == "torch"
    assert scores["top1"] == pytest.approx(result["val_top1"]) and scores["top5"] == pytest.approx(result["val_top5"])
    assert scores["top1"] <= scores["top5"] <= 100
    human = CliRunner().invoke(cli, ["eval", str(out / "model.safetensors"), "--data", "digits", "--split", "train"])
    assert human.exit_code == 0 and "(train, 1437 images)" in human.stdout


def test_resume_continues_from_the_checkpoint(tmp_path: Path, trained: tuple[Path, dict]) -> None:
    import shutil

    out = tmp_path / "run"
    shutil.copytree(trained[0], out)
    result = CliRunner().invoke(cli, [*TRAIN, "--epochs", "3", "--out", str(out), "--resume"])
    assert result.exit_code == 0, result.output
    assert "resuming train from" in result.stderr and "after epoch 2/3" in result.stderr
    assert "settings changed since the checkpoint: epochs 2 -> 3" in result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    assert metrics["epochs"][:2] == json.loads((trained[0] / "metrics.json").read_text())["epochs"]
    assert load_checkpoint(out / CHECKPOINT_NAME)["epoch"] == 3


def test_zero_epochs_still_writes_valid_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, [*TRAIN, "--epochs", "0", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["val_top1"] is None
    json.loads((tmp_path / "metrics.json").read_text())  # strict JSON: no NaN


def test_same_seed_same_model_other_seed_other_model(tmp_path: Path) -> None:
    args = ["train", "--model", "vit-nano", "--data", "synthetic:32", "--epochs", "1", "--batch-size", "16",
            "--device", "cpu"]
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert CliRunner().invoke(cli, [*args, "--seed", seed, "--out", str(tmp_path / name)]).exit_code == 0
    a, b, c = (load_model(tmp_path / n / "model.safetensors")[0].state_dict()["head.weight"] for n in "abc")
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(("epochs", "warmup", "warned"), [("1", "5", True), ("2", "2", True), ("2", "0.5", False)])
def test_a_warmup_that_covers_the_run_is_a_warning(tmp_path: Path, epochs: str, warmup: str, warned: bool) -> None:
    args = ["train", "--model", "vit-nano", "--data", "synthetic:32", "--batch-size", "16", "--device", "cpu",
            "--epochs", epochs, "--warmup-epochs", warmup, "--out", str(tmp_path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    line = (f"warning: train: the {warmup}-epoch learning-rate warm-up covers all {epochs} epoch(s), so the rate "
            "only rises and never decays; shorten the warm-up or train longer")
    assert (line in result.stderr.splitlines()) is warned


def test_cosine_schedule_with_warmup() -> None:
    lrs = [cosine_lr(s, total=10, warmup=2, base=1.0, minimum=0.1) for s in range(10)]
    assert lrs[:2] == [0.5, 1.0] and lrs[2] == 1.0
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:])) and lrs[-1] > 0.1
    assert cosine_lr(10, total=10, warmup=2, base=1.0, minimum=0.1) == pytest.approx(0.1)


def test_epoch_seeds_differ_across_ranks_and_epochs() -> None:
    for seed in range(3):
        assert len({epoch_seed(seed, 4, r) for r in range(64)}) == 64
        assert len({epoch_seed(seed, e, 3) for e in range(300)}) == 300
