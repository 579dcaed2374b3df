"""`vitc tune` on vit-nano: a block stays float where INT8 does not pay, the loop re-lands when a measurement misses,
an unreachable target exits 1 naming the closest, and a killed tune resumes where it stopped."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from tests.conftest import VITC, one_error_line, subprocess_env
from vitc.cli import cli

# the smallest tune that still runs every part: one backend, tiny latency grids, short timings, one training epoch
TINY = ["--backends", "onnxruntime", "--threads", "1", "--batch-size", "8", "--epochs", "1", "--finetune-epochs", "0",
        "--token-points", "2", "--probe-seconds", "0", "--bench-seconds", "0.05", "--train-batch-size", "64",
        "--calib-samples", "32"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A vit-nano trained 3 epochs on digits (above chance, so held-out accuracy means something)."""
    from vitc.core.settings import validate
    from vitc.train.classifier import train_classifier
    from vitc.train.settings import TrainSettings

    out = tmp_path_factory.mktemp("tune-base")
    train_classifier("vit-nano", "digits", out, validate(TrainSettings(epochs=3, device="cpu", seed=0)))
    return out / "model.safetensors"


def _profile(spec: Any, path: Path, precision: str, scale: float) -> str:
    """A latency model of a synthetic device whose every block costs ``scale`` times the float one's."""
    from vitc.checks.profile import fit_latency
    from vitc.checks.settings import ProfileSettings
    from vitc.core.latency import probes

    settings = ProfileSettings(backend="onnxruntime", precision=precision, calib_data="digits" if precision == "int8" else None,
                               token_points=2, head_points=2, mlp_points=2)
    grid = settings.grid(spec)

    def ms(s: Any) -> float:
        n = s.num_patches + s.num_prefix_tokens
        return 0.1 + scale * sum(0.01 * b.heads * n + 1e-4 * b.mlp_hidden * n for b in s.blocks)

    measured = [{"key": p.key, "kind": p.kind, "median_ms": ms(p.spec)} for p in probes(spec, grid)]
    path.write_text(json.dumps(fit_latency(spec, grid, measured, settings, {}).to_dict()))
    return str(path)


def _bench(targets: int, speedup: float, iqr: list[float] | None = None) -> Any:
    """What ``vitc.tune.loop.measure`` returns for ``targets`` files: the reference at 1.0x, every other at ``speedup``
    (IQR ``iqr``, default none to speak of)."""
    rows = [SimpleNamespace(speedup_paired=1.0, speedup_paired_iqr=[1.0, 1.0], images_per_s=100.0)]
    rows += [SimpleNamespace(speedup_paired=speedup, speedup_paired_iqr=iqr or [speedup, speedup], images_per_s=100.0)
             for _ in range(targets - 1)]
    return SimpleNamespace(results=[SimpleNamespace(rows=rows)])


def test_a_block_stays_float_where_int8_does_not_pay(tmp_path: Path, nano_artifact: Path) -> None:
    from vitc.core.artifacts import read_header
    from vitc.tune.journal import Journal
    from vitc.tune.precision import choose
    from vitc.tune.settings import TuneSettings

    spec = read_header(nano_artifact)[0]
    slow_int8 = _profile(spec, tmp_path / "int8.json", "int8", scale=1.5)  # INT8 GEMMs slower than fp32 on this "device"
    fp32 = _profile(spec, tmp_path / "fp32.json", "fp32", scale=1.0)
    journal = Journal(tmp_path, resume=False)
    settings = TuneSettings(target_speedup=2.0)
    decision = choose(str(nano_artifact), "never-read.onnx", "onnxruntime", slow_int8, fp32, "digits", "digits", settings,
                      journal)
    assert decision.float_blocks == list(range(spec.depth))
    assert all("INT8 does not pay here" in decision.reasons[b] for b in decision.float_blocks)
    assert all(i > f for i, f in zip(decision.int8_ms, decision.float_ms))  # from the two latency models
    # the mixed file is predicted from each block's own precision: here every block float, so the float file's latency
    whole_int8 = decision.fixed_ms + sum(decision.int8_ms)  # type: ignore[arg-type]
    whole_float = decision.fixed_ms + sum(decision.float_ms)  # type: ignore[arg-type]
    assert decision.mixed_factor() == pytest.approx(whole_int8 / whole_float) and decision.mixed_factor() > 1.2
    assert journal.state == {}  # decided from the device's latency models alone: nothing quantized or evaluated


def test_an_unreachable_target_exits_1_naming_the_closest(tmp_path: Path, trained: Path) -> None:
    out = tmp_path / "tune"
    r = CliRunner().invoke(cli, ["tune", str(trained), "--data", "digits", "--target-speedup", "40", "--methods", "dynamicvit",
                                 "--precisions", "fp32", *TINY, "-o", str(out), "--json"])
    assert r.exit_code == 1, r.output
    line = one_error_line(r.stderr)
    assert "no candidate meets 40x" in line and "the closest is dense onnxruntime:fp32" in line
    assert "no keep ratio makes" in line  # why the split could not get there
    report = json.loads(r.stdout)
    assert report["met"] is False and report["winner"] is None and (out / "report.md").is_file()
    assert not list(out.glob("tuned*"))  # nothing is delivered as the answer


def test_the_loop_relands_when_a_measurement_misses(tmp_path: Path, trained: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first measurement of the pick misses S: the latency model is recalibrated with it, the pick re-landed on
    the recalibrated model and measured again."""
    import vitc.tune as tune_module
    from vitc.tune import loop

    measured = iter([1.1, 1.5])  # round 1 misses 1.5x by 27%, round 2 meets it

    def fake(targets: list[str], settings: Any, peak: bool = False) -> Any:
        return _bench(len(targets), next(measured, 1.5))

    monkeypatch.setattr(loop, "measure", fake)  # the pick's measurements and the final one
    result = tune_module.tune(str(trained), "digits", tmp_path / "tune", target_speedup=1.5, methods=["uvc"],
                              precisions=["fp32"], backends=["onnxruntime"], threads=1, batch_size=8, epochs=1,
                              finetune_epochs=0, token_points=2, probe_seconds=0.0, bench_seconds=0.05, calib_samples=32)
    first, second = result.rounds
    assert (first["measured"], first["within_tolerance"]) == (1.1, False) and second["within_tolerance"] is True
    profile = json.loads(Path(first["recalibrated"]).read_text())  # the measured point is in the recalibrated model
    assert any(m["key"].startswith("measured:") for m in profile["measurements"])
    assert profile["fit"]["calibration"] != json.loads(Path(first["latency"]).read_text())["fit"]["calibration"]
    assert second["latency"] == first["recalibrated"] and second["artifact"] != first["artifact"]  # re-landed
    assert result.met and result.deployed and Path(result.deployed).is_file()
    assert any(e.kind == "round" for e in result.entries)  # the re-landed pick is a candidate of the answer
    winner = next(e for e in result.entries if e.name == result.winner)
    assert winner.verified is True  # checked against PyTorch before it could win


def test_a_noisy_loop_measurement_is_taken_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A measurement whose IQR is wider than the tolerance band (another process took the cores) is not acted on:
    it is taken again and the tightest counts."""
    from vitc.tune import loop
    from vitc.tune.settings import TuneSettings

    got = iter([(1.36, [1.0, 2.34]), (2.80, [2.75, 2.90])])

    def fake(targets: list[str], settings: Any, peak: bool = False) -> Any:
        speedup, iqr = next(got)
        return _bench(len(targets), speedup, iqr)

    monkeypatch.setattr(loop, "measure", fake)
    m = loop._measured(["a", "b"], TuneSettings(target_speedup=3.0))
    assert (m["speedup"], m["iqr"]) == (2.80, [2.75, 2.90])
    assert [t["speedup"] for t in m["noisy_tries"]] == [1.36]


def test_a_reland_out_of_reach_ends_the_loop_with_a_note(tmp_path: Path, nano_artifact: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The recalibrated latency model puts S out of the pick's reach: the loop stops and says why (it used to fail
    the whole tune with the re-land's error)."""
    from vitc.core.artifacts import read_header
    from vitc.core.errors import UsageError
    from vitc.tune import loop
    from vitc.tune.candidates import Candidate
    from vitc.tune.journal import Journal
    from vitc.tune.settings import TuneSettings
    from vitc.tune.trials import Trial

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise UsageError("no keep ratio makes it 1.5x faster than vit-nano on this profile")

    monkeypatch.setattr(loop, "measure", lambda targets, *a, **k: _bench(len(targets), 1.1))  # 27% short of 1.5x
    monkeypatch.setattr(loop, "deploy_pick", lambda *a, **k: (str(nano_artifact), None, None))
    monkeypatch.setattr(loop, "_reland", unreachable)
    profile = _profile(read_header(nano_artifact)[0], tmp_path / "fp32.json", "fp32", scale=1.0)
    ref = Candidate("onnxruntime", "fp32", "dense.onnx", profile, gain=1.0, needed=1.5)
    trial = Trial("uvc", ["uvc"], artifact=str(nano_artifact), predicted=1.5)
    rounds, picks = loop.close_loop(trial, ref, [ref], nano_artifact, "digits", "digits", TuneSettings(target_speedup=1.5),
                                    None, tmp_path, Journal(tmp_path, resume=False), "cpu")
    (only,) = rounds
    assert only["note"].startswith("not re-landed: no keep ratio makes") and Path(only["recalibrated"]).is_file()
    assert picks == [trial]  # the measured pick stays the answer's candidate


def test_the_pick_is_trained_again_with_the_full_recipe(tmp_path: Path, trained: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """--final-finetune-epochs: the short tries choose, then the pick is trained again from the dense model with the
    full recipe (same plan and target), deployed, measured and verified like any candidate of the answer."""
    import vitc.tune as tune_module
    from vitc.tune import loop

    monkeypatch.setattr(loop, "measure", lambda targets, *a, **k: _bench(len(targets), 1.5))  # all meet S: no re-land
    out = tmp_path / "tune"
    result = tune_module.tune(str(trained), "digits", out, target_speedup=1.5, methods=["uvc"], precisions=["fp32"],
                              backends=["onnxruntime"], threads=1, batch_size=8, epochs=1, finetune_epochs=0,
                              final_finetune_epochs=1, token_points=2, probe_seconds=0.0, bench_seconds=0.05,
                              calib_samples=32)
    journal = json.loads((out / "tune.json").read_text())
    short, full = journal["trial/uvc/r0/uvc"], journal["trial/uvc-final/r0/uvc"]
    assert [short["key"] != full["key"], len(result.rounds)] == [True, 1]
    tuned = json.loads((out / "trials" / "uvc-final" / "0-uvc" / "finetune" / "metrics.json").read_text())
    assert len(tuned["epochs"]) == 1  # the final fine-tuning ran its 1 epoch (the tries ran none)
    assert not (out / "trials" / "uvc" / "0-uvc" / "finetune" / "metrics.json").is_file()
    final = next(e for e in result.entries if e.kind == "final")
    trial = next(e for e in result.entries if e.kind == "trial")
    assert final.name == "uvc (final)" and final.artifact != trial.artifact and final.verified is True
    assert final.macs == trial.macs  # the same search landed the same structure: only the training differs
    assert any(t.final and t.label == "uvc (final)" for t in result.trials)
    assert "uvc (final)" in (out / "report.md").read_text()
    assert result.winner in {final.name, trial.name}  # whichever is more accurate on the held-out images


def test_a_killed_tune_resumes_where_it_stopped(tmp_path: Path, trained: Path) -> None:
    out = tmp_path / "tune"
    cmd = [*VITC, "tune", str(trained), "--data", "digits", "--target-speedup", "1.5", "--methods", "uvc", "--precisions",
           "fp32", *TINY, "-o", str(out)]
    victim = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    journal = out / "tune.json"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and victim.poll() is None:
        done = json.loads(journal.read_text()) if journal.is_file() else {}
        if "result" in done.get("device/gains", {}):
            victim.send_signal(signal.SIGKILL)
            break
        time.sleep(0.2)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL, f"not killed after the device steps: {victim.stderr.read()[-2000:]}"
    again = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert again.returncode == 2 and "--resume" in one_error_line(again.stderr)  # a used folder needs --resume or --force
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=subprocess_env(), timeout=600)
    assert resumed.returncode in (0, 1), resumed.stderr[-3000:]
    assert "[skip] tune step 1/" in resumed.stderr and "device/gains (done before)" in resumed.stderr
    assert "[run] tune step" in resumed.stderr and (out / "report.json").is_file()
    again = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=subprocess_env(), timeout=600)
    assert again.returncode == resumed.returncode and "[run] tune step" not in again.stderr, again.stderr[-3000:]
    # a finished tune resumed runs nothing again: no file it keyed a step on (a trial's materialized model) is remade


@pytest.mark.parametrize("model, args, message", [
    ("COMPRESSED", [], "is a dynamicvit artifact; give the dense model it was compressed from"),
    ("TRAINED", ["--backends", "tensorrt"], "--backends lists tensorrt, which cannot run here"),
    ("TRAINED", ["--reference", "onnxruntime:int4"], "--reference must be BACKEND:PRECISION"),
    ("vit-micro", ["--pretrained"], "no pretrained weights"),  # found by the first step: the folder goes with it
])
def test_a_bad_tune_is_one_line_and_leaves_no_folder(tmp_path: Path, trained: Path, dvt_art: Path, model: str,
                                                      args: list[str], message: str) -> None:
    model = {"COMPRESSED": str(dvt_art), "TRAINED": str(trained)}.get(model, model)
    out = tmp_path / "tune"
    r = CliRunner().invoke(cli, ["tune", model, "--data", "digits", "--target-speedup", "2", *args, "-o", str(out)])
    assert r.exit_code == 2 and message in one_error_line(r.stderr), r.output
    assert not out.exists()


def test_a_runs_tune_row_takes_both_speedups_from_the_tunes_paired_bench() -> None:
    """The report row of a pipeline's tune: over the reference, and over the dense file on its own backend and
    precision — both from the tune's one round-robin, never images/s of another run."""
    from vitc.pipeline.run import tune_row

    entry = {"backend": "openvino", "precision": "int8", "file": "t.int8.onnx", "artifact": "t.safetensors", "params": 1,
             "top1": 87.9, "images_per_s": 3700.0, "predicted": 3.0}
    result = {"target_speedup": 3.0, "batch_size": 32, "met": True, "winner": "pick", "why": "w", "report": {},
              "entries": [{**entry, "name": "dense openvino:int8", "kind": "dense", "measured": 2.0, "macs": 30},
                          {**entry, "name": "pick", "kind": "trial", "measured": 2.8, "macs": 15}]}
    row = tune_row(result, dense_macs=30, batches=[32])
    assert row["variant"] == "tune-x3" and row["macs_ratio"] == 0.5
    assert row["stacked_speedup_measured"] == {"32": 2.8} and row["speedup"] == {"32": pytest.approx(1.4)}


def test_equal_accuracy_goes_to_the_file_closest_to_s_not_the_fastest() -> None:
    """On synthetic data every file scores the same: the pick is then the one measured nearest S (no more compression
    than asked), and a more accurate file still wins however far above S it runs."""
    from vitc.tune.answer import winner_of
    from vitc.tune.result import Entry
    from vitc.tune.settings import TuneSettings

    def entry(name: str, measured: float, top1: float) -> Entry:
        return Entry(name, "trial", "openvino", "int8", f"{name}.onnx", f"{name}.safetensors", measured=measured,
                     holdout_top1=top1, meets=measured >= 3.6)

    s = TuneSettings(target_speedup=4.0)
    assert winner_of([entry("fast", 6.25, 0.0), entry("near", 3.88, 0.0), entry("slow", 3.0, 0.0)], s)[0].name == "near"
    assert winner_of([entry("fast", 6.25, 80.0), entry("near", 3.88, 79.0)], s)[0].name == "fast"
