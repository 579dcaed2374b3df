"""The runner interface on torch and ONNX Runtime: same logits for the same model, shape and option
checks, backend detection, and `vitc bench` on an ONNX file through ONNX Runtime."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import exported

from vitc.backends import detect_backend, load_runner
from vitc.backends.torch_runner import TorchRunner
from vitc.checks.bench import BenchSettings, bench, synthetic_batch
from vitc.cli import cli
from vitc.core.errors import UsageError
from vitc.core.models import resolve_model


@pytest.fixture(scope="module")
def nano(tmp_path_factory):
    """A seeded vit-nano artifact and its ONNX export (dynamic batch, through vitc's own exporter): the session's."""
    return exported(tmp_path_factory, "dense")


def test_torch_runner_returns_the_models_logits_for_numpy_and_tensor_input():
    torch.manual_seed(0)
    model, spec = resolve_model("vit-nano")
    x = synthetic_batch(spec.input_shape, 3, seed=1)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    runner = TorchRunner(model, spec, device="cpu")
    for batch in (x, torch.from_numpy(x)):
        out = runner(batch)
        assert out.dtype == np.float32 and out.shape == (3, 10)
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)
    staged = runner.stage(x)
    np.testing.assert_allclose(runner.run_staged(staged).numpy(), expected, atol=1e-6)
    assert runner.cuda_stream() is None and runner.describe()["threads"] == torch.get_num_threads()


def test_torch_runner_checks_shape_precision_and_device():
    model, spec = resolve_model("vit-nano")
    runner = TorchRunner(model, spec, device="cpu")
    with pytest.raises(UsageError, match=r"expects input \(B, 3, 16, 16\), got \(2, 3, 32, 32\)"):
        runner(np.zeros((2, 3, 32, 32), np.float32))
    with pytest.raises(UsageError, match="fp16 on the torch backend needs --device cuda"):
        TorchRunner(model, spec, device="cpu", precision="fp16")
    with pytest.raises(UsageError, match="precision must be one of"):
        TorchRunner(model, spec, device="cpu", precision="int8")
    with pytest.raises(UsageError, match="need a CUDA device"):
        TorchRunner(model, spec, device="cpu", cuda_graph=True)
    x = synthetic_batch(spec.input_shape, 2)
    ref = runner(x)
    bf16 = TorchRunner(copy.deepcopy(model), spec, device="cpu", precision="bf16")
    assert bf16(x).dtype == np.float32 and 0 < np.abs(bf16(x) - ref).max() < 0.05


def test_backend_detection_and_option_misuse(nano):
    assert detect_backend("m.onnx") == "onnxruntime" and detect_backend("m.engine") == "tensorrt"
    assert detect_backend("deit_small_patch16_224") == "torch" and detect_backend("a/model.safetensors") == "torch"
    with pytest.raises(UsageError, match="unknown backend 'tvm'"):
        load_runner(nano["onnx"], backend="tvm")
    with pytest.raises(UsageError, match="--compile applies to the torch backend, not onnxruntime"):
        load_runner(nano["onnx"], compile=True)
    with pytest.raises(UsageError, match="computes in fp32.*--precision fp16 does not apply"):
        load_runner(nano["onnx"], precision="fp16")


def test_onnxruntime_runner_matches_torch_through_load_runner(nano):
    x = synthetic_batch((3, 16, 16), 5, seed=2)
    with load_runner(nano["artifact"], device="cpu") as rt, load_runner(nano["onnx"], device="cpu") as ro:
        assert (rt.backend, ro.backend) == ("torch", "onnxruntime")
        assert ro.spec is not None and ro.spec.name == "vit-nano" and ro.precision == "fp32"
        assert ro.input_shape == rt.input_shape == (3, 16, 16)
        ref, got = rt(x), ro(x)
        assert got.dtype == np.float32 and got.shape == (5, 10)
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-3)
        np.testing.assert_allclose(ro.run_staged(ro.stage(x)), got, atol=0)
        with pytest.raises(UsageError, match="expects input"):
            ro(np.zeros((1, 3, 8, 8), np.float32))


def test_bench_cli_on_an_onnx_file(nano):
    r = CliRunner().invoke(cli, ["bench", nano["onnx"], "--batch", "1,4", "--min-iters", "3", "--min-seconds", "0",
                                 "--warmup-ms", "0", "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    (target,) = report["targets"]
    assert (target["backend"], target["precision"], target["model"]) == ("onnxruntime", "fp32", "vit-nano")
    assert [x["batch"] for x in report["results"]] == [1, 4]
    for res in report["results"]:
        (x,) = res["rows"]
        assert x["iterations"] == 3 and x["gpu_compute_ms"] is None
        assert x["images_per_s"] == pytest.approx(x["batch"] * x["iterations"] / x["seconds"])
        assert x["latency_ms"]["min"] <= x["latency_ms"]["median"] <= x["latency_ms"]["p99"] <= x["latency_ms"]["max"]
        assert x["peak_fraction"] == pytest.approx(x["gflops"] / res["peaks"][0]["gflops"])  # of the fp32 GEMM, same rounds
    assert report["environment"]["versions"]["onnxruntime"] and target["runner"]["providers"] == ["CPUExecutionProvider"]


def test_compare_accepts_two_precisions_and_labels_each_side():
    """fp32 against a lower precision is the comparison quantization users want (issue: it was refused)."""
    model, spec = resolve_model("vit-nano")
    fp32 = TorchRunner(copy.deepcopy(model), spec, device="cpu")
    bf16 = TorchRunner(copy.deepcopy(model), spec, device="cpu", precision="bf16")
    report = bench([fp32, bf16], ["fp32", "bf16"], BenchSettings(batch_sizes=[1], warmup_ms=0, min_iters=1, min_seconds=0,
                                                                  peak=False))
    assert [t.label for t in report.targets] == ["torch fp32 on cpu", "torch bf16 on cpu"]
    assert any("torch bf16, torch fp32" in w for w in report.warnings)
    row = report.row(1, 1)
    assert row.speedup == pytest.approx(report.row(0, 1).latency_ms.median / row.latency_ms.median)
