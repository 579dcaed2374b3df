"""Every everyday fault answered in one line with the right exit code, nothing half-written, and a failed
check fails the run. Each case asserts the exit code, one ``error:`` line (no traceback) and that no
partial file was left."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import VITC, one_error_line, subprocess_env

from vitc.cli import cli
from vitc.core.artifacts import META_DIGEST, META_SPEC, content_digest, save_model
from vitc.core.models import resolve_model


def invoke(*args: str, **kwargs: Any):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, [str(a) for a in args], **kwargs)


def leftovers(folder: Path) -> list[str]:
    """Temporary files an interrupted atomic write would leave (there must be none)."""
    return sorted(p.name for p in folder.rglob(".*.tmp"))


def fails(result: Any, code: int, message: str) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    line = one_error_line(result.stderr)
    assert message in line, line
    return line


def rewrite_artifact(src: Path, dst: Path, *, spec_edit: dict[str, Any] | None = None,
                     tensor_edit: dict[str, torch.Tensor] | None = None) -> Path:
    """A copy of an artifact with an edited spec or tensors and a *recomputed* digest (a file that lies)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as fh:
        metadata = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    if spec_edit:
        spec = json.loads(metadata[META_SPEC])
        spec.update(spec_edit)
        metadata[META_SPEC] = json.dumps(spec, sort_keys=True)
    tensors.update(tensor_edit or {})
    metadata[META_DIGEST] = content_digest(metadata, tensors)
    save_file(tensors, str(dst), metadata=metadata)
    return dst


# ---- 2. output locations -----------------------------------------------------------------------------


@pytest.fixture()
def a_file(tmp_path: Path) -> Path:
    f = tmp_path / "file.txt"
    f.write_text("not a folder")
    return f


def test_materialize_out_is_an_existing_file(tmp_path: Path, a_file: Path, dvt_art: Path) -> None:
    fails(invoke("materialize", dvt_art, "--out", a_file), 2, "is an existing file, not a folder")
    assert a_file.read_text() == "not a folder" and leftovers(tmp_path) == []


@pytest.mark.parametrize("command", [
    ["train", "--model", "vit-nano", "--data", "digits", "--epochs", "1"],
    ["compress", "uvc", "vit-nano", "--data", "digits", "--budget", "0.5"],
    ["compress", "dynamicvit", "vit-nano", "--data", "digits"],
])
def test_training_out_is_a_file(a_file: Path, command: list[str]) -> None:
    fails(invoke(*command, "--out", a_file), 2, f"{a_file} is an existing file; expected a folder")


@pytest.mark.parametrize("command, target", [
    (["export", "{nano}"], "{parent}/m.onnx"),
    (["quantize", "{onnx}", "--data", "digits"], "{parent}/m.int8.onnx"),
    (["build", "{onnx}"], "{parent}/m.engine"),
    (["materialize", "{dvt}"], "{parent}/m.safetensors"),
])
def test_out_under_a_parent_that_is_a_file(tmp_path: Path, a_file: Path, nano_artifact: Path, dense: dict, dvt_art: Path,
                                           command: list[str], target: str) -> None:
    values = {"nano": nano_artifact, "onnx": dense["onnx"], "dvt": dvt_art, "parent": a_file}
    out = target.format(**values)
    fails(invoke(*[c.format(**values) for c in command], "-o", out), 2, f"{a_file} is a file, not a folder")
    assert leftovers(tmp_path) == []


def test_export_out_is_a_folder(tmp_path: Path, nano_artifact: Path) -> None:
    folder = tmp_path / "m.onnx"
    folder.mkdir()
    fails(invoke("export", nano_artifact, "-o", folder), 2, "is a folder; expected a file path")


def test_bench_report_under_a_file_is_refused_before_benching(a_file: Path, nano_artifact: Path) -> None:
    fails(invoke("bench", nano_artifact, "--report", a_file / "r.json", "--batch-sizes", "1"), 2, "is a file, not a folder")


def test_a_read_only_folder_is_one_line_before_any_work(tmp_path: Path, nano_artifact: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from vitc.core import fileio

    def read_only(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(fileio.tempfile, "mkstemp", read_only)
    fails(invoke("export", nano_artifact, "-o", tmp_path / "m.onnx"), 1, "read-only file system")
    fails(invoke("train", "--model", "vit-nano", "--data", "digits", "--out", tmp_path / "t"), 1, "read-only file system")
    assert not (tmp_path / "m.onnx").exists()


def test_a_full_disk_during_export_is_one_line_and_leaves_nothing(tmp_path: Path, nano_artifact: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx

    def full(*args: Any, **kwargs: Any) -> None:
        Path(args[1]).write_bytes(b"\0" * 10)  # half-written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(onnx, "save_model", full)
    fails(invoke("export", nano_artifact, "-o", tmp_path / "m.onnx"), 1, f"cannot write {tmp_path / 'm.onnx'}: no space left")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_full_disk_while_training_is_one_line_and_keeps_no_partial_checkpoint(tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real = torch.save

    def full(obj: Any, f: Any, *a: Any, **k: Any) -> None:
        Path(f).write_bytes(b"PK")
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0: file write failed")

    monkeypatch.setattr(torch, "save", full)
    r = invoke("train", "--model", "vit-nano", "--data", "synthetic:64", "--epochs", "1", "--batch-size", "32",
               "--device", "cpu", "--out", tmp_path / "t")
    monkeypatch.setattr(torch, "save", real)
    fails(r, 1, f"cannot write {tmp_path / 't' / 'checkpoint.pt'}")
    assert not (tmp_path / "t" / "checkpoint.pt").exists() and leftovers(tmp_path) == []


# ---- 3. data -----------------------------------------------------------------------------------------


def test_eval_refuses_a_head_that_does_not_fit_the_data(tmp_path: Path) -> None:
    model, spec = resolve_model("vit-nano", num_classes=7)
    art = save_model(tmp_path / "seven.safetensors", model, spec)
    fails(invoke("eval", art, "--data", "digits"), 2, "has 7 classes but digits has 10")
    fails(invoke("train", "--model", art, "--data", "digits", "--out", tmp_path / "t"), 2, "has 7 classes but the data has 10")
    for method, extra in (("uvc", ["--budget", "0.5"]), ("dynamicvit", [])):
        fails(invoke("compress", method, art, "--data", "digits", *extra, "--out", tmp_path / method), 2,
              "has 7 classes but the data has 10")
        assert not (tmp_path / method / "compressed.safetensors").exists()
    assert not (tmp_path / "t").exists()


# ---- 4. numbers --------------------------------------------------------------------------------------


@pytest.mark.parametrize("option, value", [("--lr", "inf"), ("--warmup-epochs", "inf"), ("--weight-decay", "inf"),
                                           ("--lr", "nan"), ("--min-lr", "-inf")])
def test_non_finite_hyperparameters_are_refused_up_front(tmp_path: Path, option: str, value: str) -> None:
    r = invoke("train", "--model", "vit-nano", "--data", "digits", option, value, "--out", tmp_path / "t")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert one_error_line(r.stderr).startswith(f"error: {option} must be")
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("method", ["uvc", "dynamicvit"])
def test_non_finite_method_options_are_refused(tmp_path: Path, method: str) -> None:
    extra = ["--budget", "0.5"] if method == "uvc" else []
    fails(invoke("compress", method, "vit-nano", "--data", "digits", *extra, "--lr", "inf", "--out", tmp_path / "c"), 2,
          "--lr must be a finite number, got inf")


def test_saving_non_finite_weights_is_refused(tmp_path: Path) -> None:
    from vitc.core.errors import CheckFailed

    model, spec = resolve_model("vit-nano")
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    with pytest.raises(CheckFailed, match=r"not written: tensor head.weight has 1 non-finite"):
        save_model(tmp_path / "nan.safetensors", model, spec)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["eval", "{art}", "--data", "digits"], ["export", "{art}", "-o", "{out}"],
                                     ["info", "{art}"]])
def test_an_artifact_with_nan_weights_is_refused(tmp_path: Path, nano_artifact: Path, command: list[str]) -> None:
    nan = torch.full((10, 32), float("nan"))
    art = rewrite_artifact(nano_artifact, tmp_path / "nan.safetensors", tensor_edit={"head.weight": nan})
    out = tmp_path / "m.onnx"
    args = [c.format(art=art, out=out) for c in command]
    if command[0] == "info":  # info reads the header and the digest only: it may describe the file
        assert invoke(*args).exit_code == 0
        return
    fails(invoke(*args), 2, "tensor head.weight has 320 non-finite")
    assert not out.exists()


# ---- 5. artifacts that lie -----------------------------------------------------------------------------


def test_a_spec_that_contradicts_its_tensors_is_refused_before_allocating(tmp_path: Path, nano_artifact: Path) -> None:
    liar = rewrite_artifact(nano_artifact, tmp_path / "liar.safetensors", spec_edit={"img_size": 4096})
    line = fails(invoke("eval", liar, "--data", "digits"), 2, "its spec does not match its tensors")
    assert "pos_embed has shape [1, 17, 32], the spec implies [1, 1048577, 32]" in line


@pytest.mark.parametrize("command, wants, what", [
    (["export", "--check-only", "{art}"], "not an ONNX model", "a safetensors file"),
    (["verify", "{art}", "--against", "{art}"], "not an ONNX model", "a safetensors file"),
    (["quantize", "{art}", "--data", "digits", "-o", "{tmp}/q.onnx"], "not an ONNX model", "a safetensors file"),
    (["materialize", "{onnx}", "-o", "{tmp}/m"], "not a vitc artifact", "an ONNX model"),
    (["eval", "{onnx_named_safetensors}", "--data", "digits"], "not a vitc artifact", "an ONNX model"),
    (["compress", "uvc", "{pth}", "--data", "digits", "--budget", "0.5", "-o", "{tmp}/c"], "not a vitc artifact",
     "a PyTorch checkpoint"),
])
def test_a_file_of_the_other_type_is_called_by_its_name(tmp_path: Path, nano_artifact: Path, dense: dict,
                                                       command: list[str], wants: str, what: str) -> None:
    named = tmp_path / "model.safetensors"
    named.write_bytes(Path(dense["onnx"]).read_bytes())
    pth = tmp_path / "weights.safetensors"
    torch.save({"w": torch.zeros(2)}, pth)
    values = {"art": nano_artifact, "onnx": dense["onnx"], "onnx_named_safetensors": named, "pth": pth, "tmp": tmp_path}
    line = fails(invoke(*[c.format(**values) for c in command]), 2, wants)
    assert what in line and "corrupt" not in line


def test_info_of_an_onnx_reads_its_spec_and_precision(dense: dict) -> None:
    info = json.loads(invoke("info", dense["onnx"], "--json").stdout)
    assert (info["format"], info["precision"], info["name"], info["depth"]) == ("onnx", "fp32", "vit-nano", 4)


# ---- 6. pipelines ------------------------------------------------------------------------------------

BASE = {"model": "vit-nano", "data": "digits", "device": "cpu", "baseline": {"epochs": 1, "batch_size": 64},
        "export": {"fp16": False, "int8": False}, "verify": {"batch_sizes": [4], "batches": 1},
        "bench": {"backends": ["onnxruntime"], "device": "cpu", "batch_sizes": [1], "warmup_ms": 1, "min_iters": 1,
                  "min_seconds": 0.01}}


def write_yaml(path: Path, raw: dict[str, Any] | str) -> Path:
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("edit, message", [
    ({"uvc": {"budgets": [0.5], "options": {"gate_interval": "abc"}}}, "'uvc.gate_interval' must be an integer, got 'abc'"),
    ({"uvc": {"budgets": [0.5], "gate_interval": 0}}, "'uvc.gate_interval' must be >= 1, got 0"),
    ({"device": "quantum"}, "'device': unknown device 'quantum'"),
    ({"bench": {"device": "tpu"}}, "'bench.device': unknown device 'tpu'"),
    ({"bench": {"min_iters": 0}}, "'bench.min_iters' must be >= 1, got 0"),
    ({"verify": {"data": "mnist"}}, "'verify.data': unknown data source 'mnist'"),
    ({"export": {"opset": 17}}, "'export.opset' must be one of 18, 19, 20, got 17"),
    ({"dynamicvit": {"keep_ratio": 0.7, "lr": float("inf")}}, "'dynamicvit.lr' must be a finite number, got inf"),
    ({"uvc": {"budgets": [0.5, 0.5]}}, "'uvc.budgets' lists 0.50 twice"),
    ({"dynamicvit": {"materialize": [0.7, 0.7]}}, "'dynamicvit.materialize' lists 0.70 twice"),
])
def test_the_whole_yaml_is_validated_before_any_work(tmp_path: Path, edit: dict[str, Any], message: str) -> None:
    raw = {**BASE, **edit}
    out = tmp_path / "run"
    fails(invoke("run", write_yaml(tmp_path / "p.yaml", raw), "--out", out), 2, message)
    assert not out.exists()


def test_int8_with_synthetic_calibration_data_is_refused_before_work(tmp_path: Path) -> None:
    raw = {**BASE, "data": "synthetic:64", "export": {"fp16": False, "int8": True}}
    out = tmp_path / "run"
    fails(invoke("run", write_yaml(tmp_path / "p.yaml", raw), "--out", out), 2,
          "'deploy.precisions' lists int8, which needs real calibration images")
    assert not out.exists()


def test_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    text = "model: vit-nano\ndata: digits\nbaseline:\n  epochs: 1\nbaseline:\n  epochs: 3\n"
    fails(invoke("run", write_yaml(tmp_path / "p.yaml", text)), 2, "duplicate key 'baseline' (line 5; first on line 3)")


def test_tilde_is_expanded_in_out(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from vitc.pipeline.config import config_from_dict

    monkeypatch.setenv("HOME", str(tmp_path))
    assert config_from_dict({**BASE, "out": "~/runs/x"}).out == str(tmp_path / "runs" / "x")


def test_distinct_budgets_get_distinct_folders_and_ratios_distinct_files() -> None:
    from vitc.pipeline.config import config_from_dict
    from vitc.pipeline.run import Pipeline

    cfg = config_from_dict({**BASE, "uvc": {"budgets": [0.801, 0.804]}, "dynamicvit": {"materialize": [0.701, 0.704]}})
    names = [s.name for s in Pipeline(cfg, Path("x")).plan()]
    assert "uvc-0.801/compress" in names and "uvc-0.804/compress" in names
    assert "dynamicvit-keep0.701/export" in names and "dynamicvit-keep0.704/export" in names


def test_materialize_ratios_that_round_alike_do_not_overwrite(tmp_path: Path, dvt_art: Path) -> None:
    r = invoke("materialize", dvt_art, "--keep-ratios", "0.701,0.704", "-o", tmp_path, "--json")
    assert r.exit_code == 0, r.output
    files = [v["artifact"] for v in json.loads(r.stdout)["variants"]]
    assert [Path(f).name for f in files] == ["materialized-keep0.701.safetensors", "materialized-keep0.704.safetensors"]
    fails(invoke("materialize", dvt_art, "--keep-ratios", "0.7,0.70", "-o", tmp_path), 2, "lists a ratio twice")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished tiny pipeline run (dense only): the default run's one smoke test of a whole `vitc run`."""
    root = tmp_path_factory.mktemp("run")
    r = invoke("run", write_yaml(root / "p.yaml", BASE), "--out", root / "run", "--json")
    assert r.exit_code == 0, r.output
    assert (root / "run" / "report.md").is_file() and json.loads(r.stdout)["stages_skipped"] == []
    return root


def test_a_second_run_into_a_used_folder_refuses_without_resume(small_run: Path) -> None:
    out = small_run / "run"
    before = sorted(p.name for p in out.iterdir())
    fails(invoke("run", small_run / "p.yaml", "--out", out), 2, "already holds files (an earlier run?): add --resume")
    assert sorted(p.name for p in out.iterdir()) == before


def test_dry_run_lists_stages_and_what_resume_would_skip(small_run: Path) -> None:
    r = invoke("run", small_run / "p.yaml", "--out", small_run / "run", "--resume", "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    first = {k: v for k, v in plan["stages"][0].items() if k != "options"}  # --json also lists each stage's options
    assert first == {"stage": 1, "of": len(plan["stages"]), "name": "dense/train", "action": "skip (unchanged)"}
    assert plan["stages"][0]["options"]["epochs"] >= 1
    assert plan["would_run"] == 0
    fresh = invoke("run", small_run / "p.yaml", "--out", small_run / "other", "--dry-run")
    assert fresh.exit_code == 0 and "stage 1/" in fresh.stdout and "dense/train: run" in fresh.stdout
    assert not (small_run / "other").exists()


def test_a_live_lock_keeps_a_second_run_out(small_run: Path) -> None:
    from vitc.pipeline.run import LOCK_NAME

    out = small_run / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_NAME).write_text(str(holder.pid))
        fails(invoke("run", small_run / "p.yaml", "--out", out, "--resume"), 2,
              f"is in use by another vitc run (pid {holder.pid})")
    finally:
        holder.kill()
        holder.wait()
    r = invoke("run", small_run / "p.yaml", "--out", out, "--resume")  # the lock's process is gone: taken over
    assert r.exit_code == 0, r.output
    assert not (out / LOCK_NAME).exists()


@pytest.mark.slow  # two more whole `vitc run`s; small_run above is the default run's one smoke pipeline
def test_a_failed_check_fails_the_run_and_names_the_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vitc.checks import verify

    monkeypatch.setitem(verify.DEFAULT_TOLERANCES, "fp32", (0.0, 0.0, "elemwise"))  # nothing can pass this
    config = write_yaml(tmp_path / "p.yaml", BASE)
    r = invoke("run", config, "--out", tmp_path / "a")
    assert r.exit_code == 1
    assert "FAIL dense onnx fp32: FAILED | ONNX Runtime (fp32) vs PyTorch" in r.stderr
    assert one_error_line(r.stderr) == "error: 1 check(s) failed (see the report; --allow-fail exits 0 anyway)"
    assert (tmp_path / "a" / "report.md").is_file() and "FAIL" in (tmp_path / "a" / "report.md").read_text()
    allowed = invoke("run", config, "--out", tmp_path / "b", "--allow-fail")
    assert allowed.exit_code == 0 and "1 check(s) failed" in allowed.stderr


# ---- 8. machine-readable errors ---------------------------------------------------------------------


def test_json_errors_are_a_document_on_stdout() -> None:
    r = invoke("info", "no-such-model", "--json")
    assert r.exit_code == 2
    doc = json.loads(r.stdout)
    assert doc["exit_code"] == 2 and doc["error"].startswith("unknown model 'no-such-model'")


def test_click_usage_errors_are_json_too_through_the_console_script() -> None:
    run = subprocess.run([*VITC, "bench", "vit-nano", "--precision", "fp64", "--json"], capture_output=True, text=True,
                         env=subprocess_env(), timeout=120)
    assert run.returncode == 2
    doc = json.loads(run.stdout)
    assert doc["exit_code"] == 2 and "'fp64' is not one of" in doc["error"]
    assert run.stderr.splitlines() == [f"error: {doc['error']} (see 'vitc bench --help')"]


def test_click_usage_errors_are_one_line_through_the_console_script() -> None:
    run = subprocess.run([*VITC, "no-such-command"], capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.splitlines() == ["error: No such command 'no-such-command'. (see 'vitc --help')"]


# ---- 9. honest benchmarks -----------------------------------------------------------------------------


def test_a_static_batch_onnx_is_benched_only_at_its_batch(tmp_path: Path, nano_artifact: Path) -> None:
    onnx = tmp_path / "b4.onnx"
    assert invoke("export", nano_artifact, "-o", onnx, "--static-batch", "4").exit_code == 0
    fails(invoke("bench", onnx, "--batch-sizes", "1,4"), 2, "has a static batch of 4: bench it at --batch-sizes 4")
    ok = invoke("bench", onnx, "--batch-sizes", "4", "--min-iters", "2", "--min-seconds", "0", "--warmup-ms", "0")
    assert ok.exit_code == 0, ok.output


def test_compare_accepts_fp32_against_int8_and_labels_both(dense: dict, tmp_path: Path) -> None:
    int8 = tmp_path / "m.int8.onnx"
    assert invoke("quantize", dense["onnx"], "--data", "digits", "--num-samples", "32", "-o", int8).exit_code == 0
    r = invoke("bench", "--compare", dense["onnx"], int8, "--batch-sizes", "8", "--min-iters", "2", "--min-seconds", "0",
               "--warmup-ms", "0", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert [t["precision"] for t in report["targets"]] == ["fp32", "int8"]
    assert report["targets"][1]["label"].startswith("onnxruntime int8")
    assert any("onnxruntime fp32, onnxruntime int8" in w for w in report["warnings"])


# ---- 10. provenance and discovery ---------------------------------------------------------------------


def test_info_shows_what_made_an_artifact(tmp_path: Path) -> None:
    r = invoke("train", "--model", "vit-nano", "--data", "synthetic:64", "--epochs", "1", "--batch-size", "32",
               "--device", "cpu", "--seed", "3", "--out", tmp_path / "t")
    assert r.exit_code == 0, r.output
    info = json.loads(invoke("info", tmp_path / "t" / "model.safetensors", "--json").stdout)
    prov = info["provenance"]
    assert (prov["step"], prov["seed"], prov["data"], prov["parent"]) == ("train", 3, "synthetic:64", {"name": "vit-nano"})
    assert prov["command"].startswith("vitc train --model vit-nano") or prov["command"].startswith("python ")
    assert prov["vitc"] and prov["settings"]["epochs"] == 1


def test_an_unknown_model_name_suggests_the_closest() -> None:
    fails(invoke("info", "deit_smal"), 2, "did you mean deit_small_patch16_224")


def test_vitc_models_lists_accepted_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    r = invoke("models", "deit_tiny*", "--json")
    assert r.exit_code == 0, r.output
    names = [m["name"] for m in json.loads(r.stdout)["models"]]
    assert names == ["deit_tiny_distilled_patch16_224", "deit_tiny_patch16_224"]
    assert json.loads(invoke("models", "vit-", "--json").stdout)["models"][0]["name"] == "vit-micro"
    assert list(tmp_path.glob("vitc/models-timm-*.json"))  # the check is cached per timm version
