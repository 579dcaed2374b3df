"""The OpenVINO backend: fp32 parity with PyTorch, fp16 and INT8 Q/DQ files, the IR that `vitc build --backend
openvino` writes, one-line errors (missing file, corrupt file, no package), the stacked bench and the pipeline's
OpenVINO columns."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from conftest import VITC, exported, one_error_line, subprocess_env

from vitc.backends import load_runner
from vitc.backends.openvino_runner import INSTALL_HINT, OpenVinoRunner
from vitc.checks.verify import verify_onnx
from vitc.cli import cli
from vitc.core.errors import UsageError


@pytest.fixture(scope="module")
def nano_int8(dense, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The seeded vit-nano's INT8 Q/DQ file, calibrated on digits."""
    out = tmp_path_factory.mktemp("ov-int8") / "nano.int8.onnx"
    r = CliRunner().invoke(cli, ["quantize", dense["onnx"], "--data", "digits", "--num-samples", "64", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return str(out)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A vit-nano trained on digits (~90% top-1, so top-1 has class evidence to lose), its ONNX and INT8 file."""
    folder = tmp_path_factory.mktemp("ov-trained")
    r = CliRunner().invoke(cli, ["train", "--model", "vit-nano", "--data", "digits", "-o", str(folder), "--epochs", "15",
                                 "--warmup-epochs", "1", "--batch-size", "32"])
    assert r.exit_code == 0, r.output
    art, onnx, int8 = folder / "model.safetensors", folder / "model.onnx", folder / "model.int8.onnx"
    r = CliRunner().invoke(cli, ["export", str(art), "--out", str(onnx)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["quantize", str(onnx), "--data", "digits", "--num-samples", "256", "--out", str(int8)])
    assert r.exit_code == 0, r.output
    return {"artifact": str(art), "onnx": str(onnx), "int8": str(int8)}


def _images(n: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 16, 16), dtype=np.float32)


# ---- precision ------------------------------------------------------------------------------------

def test_fp32_matches_pytorch_within_1e4_at_an_explicit_f32_hint(dense):
    x = _images()
    with load_runner(dense["artifact"], backend="torch", device="cpu") as torch_runner:
        ref = torch_runner(x)
    with load_runner(dense["onnx"], backend="openvino", threads=1) as ov:
        out = ov(x)
        info = ov.describe()
        assert (ov.backend, ov.precision, ov.spec.name, ov.static_batch) == ("openvino", "fp32", "vit-nano", None)
    assert np.abs(out - ref).max() <= 1e-4
    assert (info["inference_precision"], info["performance_hint"], info["threads"]) == ("f32", "LATENCY", 1)
    report = verify_onnx(dense["onnx"], dense["artifact"], backend="openvino", threads=1)
    assert report and report.onnx_backend["backend"] == "openvino" and report.errors.max_abs <= 1e-4


def test_fp16_file_runs_at_its_own_precision(dense, tmp_path):
    fp16 = tmp_path / "nano.fp16.onnx"
    r = CliRunner().invoke(cli, ["export", dense["artifact"], "--fp16", "--out", str(fp16)])
    assert r.exit_code == 0, r.output
    x = _images(16)
    with load_runner(dense["onnx"], backend="onnxruntime", threads=1) as ort32:
        ref = ort32(x)
    with load_runner(str(fp16), backend="openvino", threads=1) as ov:
        assert ov.precision == "fp16"
        out = ov(x)
    assert out.dtype == np.float32 and 0 < np.abs(out - ref).mean() <= 1e-2


def test_a_precision_other_than_the_files_is_refused(dense, nano_int8):
    with pytest.raises(UsageError, match="computes in fp32"):
        load_runner(dense["onnx"], backend="openvino", precision="int8")
    with pytest.raises(UsageError, match="applies to fp32 files only"):
        load_runner(nano_int8, backend="openvino", precision="bf16")


def test_int8_file_runs_int8_kernels_with_onnx_runtimes_numbers(nano_int8):
    x = _images(32)
    with OpenVinoRunner(nano_int8, threads=1) as ov:
        assert ov.precision == "int8" and ov.inference_precision == "f32"
        out = ov(x)
        runtime = ov.compiled.get_runtime_model()
        fc = {op.get_rt_info()["runtimePrecision"].astype(str) for op in runtime.get_ordered_ops()
              if op.get_rt_info()["layerType"].astype(str) == "FullyConnected"}
    assert fc and fc <= {"i8", "u8"}  # every GEMM runs as INT8, none as dequantized float
    with load_runner(nano_int8, backend="onnxruntime", threads=1) as ort:
        ref = ort(x)
    cosine = np.sum(out * ref, 1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    assert cosine.mean() >= 0.99 and (out.argmax(1) == ref.argmax(1)).mean() >= 0.9


@pytest.mark.slow
def test_int8_keeps_top1_of_a_trained_model_on_real_images(trained):
    from vitc.checks.evaluate import evaluate_target

    fp32 = evaluate_target(trained["onnx"], "digits", backend="onnxruntime")
    int8 = evaluate_target(trained["int8"], "digits", backend="openvino")
    assert fp32.top1 > 80  # trained: the logits carry class evidence that INT8 could lose
    assert abs(int8.top1 - fp32.top1) <= 1.5, (fp32, int8)
    report = verify_onnx(trained["int8"], trained["artifact"], data="digits", backend="openvino", threads=1)
    assert report and report.stat == "cosine" and report.errors.top1_agreement >= 95.0, report.summary()


def test_token_selection_model_verifies_with_openvinos_own_decisions(tmp_path_factory):
    dvt = exported(tmp_path_factory, "dvt")
    report = verify_onnx(dvt["onnx"], dvt["artifact"], backend="openvino", threads=1)
    assert report, report.summary()
    assert report.selection is not None and report.errors.max_abs <= 1e-4


# ---- one process, several runners ------------------------------------------------------------------

# Two runners opened one after the other and freed in the order they were made (as garbage collection may free
# them), then a signal whose Python handler runs on the thread's alternate signal stack (CPython installs every
# Python-level handler with SA_ONSTACK). Runs in a child process: the failure it guards against is a SIGSEGV.
SIGNAL_AFTER_RUNNERS = """
import os, signal, sys
from vitc.backends.openvino_runner import OpenVinoRunner

first = OpenVinoRunner(sys.argv[1], threads=1)
second = OpenVinoRunner(sys.argv[1], threads=1)
del first
del second
handled = []
signal.signal(signal.SIGUSR1, lambda signum, frame: handled.append(signum))
os.kill(os.getpid(), signal.SIGUSR1)
print("handled", *handled)
"""


def test_a_signal_after_runners_were_freed_is_handled_not_a_segfault(dense):
    """OpenVINO's CPU plugin swaps the thread's alternate signal stack for its own buffer and, freed out of order,
    leaves it pointing at unmapped memory: with one plugin per runner, the next signal (Ctrl-C, a child's SIGCHLD
    under torch's DataLoader handler) killed the process with SIGSEGV (the one-process test suite's crash)."""
    run = subprocess.run([sys.executable, "-c", SIGNAL_AFTER_RUNNERS, dense["onnx"]], capture_output=True, text=True,
                         env=subprocess_env(), timeout=300)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    assert run.stdout.split() == ["handled", str(int(signal.SIGUSR1))]


# ---- build ---------------------------------------------------------------------------------------

def test_build_writes_an_ir_that_reopens_and_matches(dense, tmp_path):
    out = tmp_path / "engines" / "nano.xml"
    r = CliRunner().invoke(cli, ["build", dense["onnx"], "--backend", "openvino", "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert (result["precision"], result["inference_precision"]) == ("fp32", "f32")
    assert out.is_file() and out.with_suffix(".bin").is_file() and any((tmp_path / "engines" / "ov_cache").iterdir())
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".vitc-ov-")]  # no staging left behind
    x = _images(8)
    with load_runner(dense["onnx"], backend="openvino", threads=1) as a, load_runner(str(out), threads=1) as b:
        assert b.backend == "openvino" and b.spec == a.spec and b.cache_dir == str(out.parent / "ov_cache")
        np.testing.assert_allclose(b(x), a(x), atol=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--backend", "openvino", "-o", "{tmp}/m.bin"], "--out must name the IR's .xml file"),
    (["--backend", "openvino", "--min-batch", "2", "-o", "{tmp}/m.xml"], "--min-batch applies to --backend tensorrt, not openvino"),
    (["--inference-precision", "bf16", "-o", "{tmp}/m.engine"], "--inference-precision applies to --backend openvino"),
])
def test_build_usage_errors(dense, tmp_path, args, message):
    r = CliRunner().invoke(cli, ["build", dense["onnx"], *[a.format(tmp=tmp_path) for a in args]])
    assert r.exit_code == 2 and message in r.output, r.output


# ---- one-line errors -------------------------------------------------------------------------------

def _vitc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VITC, *args], capture_output=True, text=True, env=subprocess_env(), timeout=300)


def test_missing_and_corrupt_files_are_one_line(tmp_path):
    missing = _vitc("eval", str(tmp_path / "none.onnx"), "--backend", "openvino", "--data", "digits")
    assert missing.returncode == 2 and "none.onnx" in one_error_line(missing.stderr)
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(b"not a model" * 10)
    r = _vitc("bench", f"openvino:{bad_onnx}", "--batch-sizes", "1")
    assert r.returncode == 2 and "bad.onnx" in one_error_line(r.stderr)
    bad_ir = tmp_path / "bad.xml"
    bad_ir.write_text("<html></html>")
    bad_ir.with_suffix(".bin").write_bytes(b"")
    r = _vitc("eval", str(bad_ir), "--data", "digits")
    assert r.returncode == 2 and one_error_line(r.stderr) == f"error: {bad_ir} is not an OpenVINO IR (root element <html>, expected <net>)"
    (tmp_path / "lone.xml").write_text("<net></net>")
    r = _vitc("eval", str(tmp_path / "lone.xml"), "--data", "digits")
    assert r.returncode == 2 and "has no weights file lone.bin" in one_error_line(r.stderr)


def test_missing_package_is_one_line_and_exit_1(dense):
    code = ("import sys; sys.modules['openvino'] = None; sys.argv = ['vitc'] + sys.argv[1:]; "
            "from vitc.cli import main; main()")
    r = subprocess.run([sys.executable, "-c", code, "eval", dense["onnx"], "--backend", "openvino", "--data", "digits"],
                       capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert r.returncode == 1 and one_error_line(r.stderr) == f"error: {INSTALL_HINT}"


# ---- stacked bench and the pipeline ----------------------------------------------------------------

def test_stacked_bench_gives_speedups_gflops_and_the_peak(dense, nano_int8):
    r = CliRunner().invoke(cli, ["bench", dense["onnx"], f"openvino:{dense['onnx']}",
                                 f"openvino:{nano_int8}", "--batch-sizes", "2", "--warmup-ms", "0",
                                 "--min-iters", "3", "--min-seconds", "0", "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["reference"] == dense["onnx"] and report["targets"][0]["backend"] == "onnxruntime"
    assert [t["label"] for t in report["targets"]] == ["onnxruntime fp32 on cpu", "openvino fp32 on cpu", "openvino int8 on cpu"]
    assert [t["macs_ratio"] for t in report["targets"]] == [1.0, 1.0, 1.0]
    (res,) = report["results"]
    rows = res["rows"]
    assert res["rounds"] == 3 and all(x["iterations"] == 3 for x in rows)
    assert rows[0]["speedup"] == 1.0  # the reference's own row
    assert all(x["speedup"] == pytest.approx(rows[0]["latency_ms"]["median"] / x["latency_ms"]["median"]) for x in rows)
    peaks = {p["precision"]: p for p in res["peaks"]}  # one GEMM per precision, timed in the same rounds
    assert set(peaks) == {"fp32", "int8"} and all(p["iterations"] == 3 and p["threads"] >= 1 for p in peaks.values())
    for p in peaks.values():
        assert p["gflops"] == pytest.approx(2 * p["n"] ** 3 / (p["median_ms"] / 1e3) / 1e9)
    macs = report["targets"][0]["macs"]
    for x, target in zip(rows, report["targets"]):
        assert x["gflops"] == pytest.approx(2 * macs * x["images_per_s"] / 1e9)
        assert x["peak_fraction"] == pytest.approx(x["gflops"] / peaks[target["precision"]]["gflops"])


@pytest.mark.slow
def test_pipeline_with_openvino_reports_the_stacked_columns(tmp_path):
    config = {
        "model": "vit-nano", "data": "digits", "seed": 0, "device": "cpu",
        "baseline": {"epochs": 1, "batch_size": 64},
        "export": {"fp16": False, "int8": True, "calib_samples": 64},
        "verify": {"batch_sizes": [1], "batches": 1},
        "bench": {"backends": ["onnxruntime", "openvino"], "device": "cpu", "batch_sizes": [2], "warmup_ms": 0,
                  "min_iters": 2, "min_seconds": 0},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    r = subprocess.run([*VITC, "run", str(path), "--out", str(tmp_path / "run")], capture_output=True, text=True,
                       env=subprocess_env(), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    rows = {(x["backend"], x["precision"]): x for x in report["rows"]}
    assert {("openvino", "fp32"), ("openvino", "int8"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")} <= set(rows)
    assert rows[("onnxruntime", "fp32")]["stacked_speedup"]["2"] == 1.0
    for key in (("openvino", "fp32"), ("openvino", "int8"), ("onnxruntime", "int8")):
        row = rows[key]
        assert row["top1"] is not None and row["format"] == f"{'onnx' if key[0] == 'onnxruntime' else 'openvino'} {key[1]}"
        ref = rows[("onnxruntime", "fp32")]["throughput"]["2"]
        assert row["stacked_speedup"]["2"] == pytest.approx(row["throughput"]["2"] / ref)
        assert row["gflops"]["2"] > 0 and row["peak_fraction"]["2"] > 0
    md = (tmp_path / "run" / "report.md").read_text()
    assert "vs dense ORT fp32 @2" in md and "GFLOP/s (of peak) @2" in md and "| openvino int8 |" in md


def test_pipelines_bench_openvino_only_when_asked():
    from vitc.pipeline.sections import DeployStage

    assert "openvino" not in DeployStage().backends and "onnxruntime" in DeployStage().backends
