"""OrtRunner: metadata → spec/precision, provider choice, static-batch chunking, and `vitc eval` on ONNX
files end to end through ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from conftest import exported
from onnx import TensorProto, helper, numpy_helper

from vitc.backends import load_runner
from vitc.backends.ort_runner import OrtRunner, choose_providers
from vitc.checks.evaluate import evaluate_target
from vitc.cli import cli
from vitc.core.errors import UsageError
from vitc.core.models import SMALL_CONFIGS
from vitc.onnx.io import save_onnx, stamp

SPEC = SMALL_CONFIGS["vit-nano"]  # 3x16x16 input, 10 classes


def linear_classifier(path, batch, with_metadata=True, seed=0):
    """A real ONNX classifier (Flatten → MatMul → Add) with vit-nano's input/output shapes; returns (W, b)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(3 * 16 * 16, 10)).astype(np.float32)
    b = rng.normal(size=(10,)).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["pixels"], ["flat"], name="flatten"),
             helper.make_node("MatMul", ["flat", "w"], ["mm"], name="matmul"),
             helper.make_node("Add", ["mm", "b"], ["logits"], name="bias")]
    graph = helper.make_graph(
        nodes, "linear", [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [batch, 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    if with_metadata:
        stamp(model, {"vitc.spec": SPEC.to_json(), "vitc.precision": "fp32", "vitc.kind": "model"})
    save_onnx(model, path)
    return w, b


def test_runner_reads_spec_and_precision_from_metadata(tmp_path):
    linear_classifier(tmp_path / "m.onnx", "batch")
    with OrtRunner(tmp_path / "m.onnx", device="cpu", threads=1) as r:
        assert (r.backend, r.precision, r.device, r.input_shape, r.static_batch) == ("onnxruntime", "fp32", "cpu", (3, 16, 16), None)
        assert r.spec == SPEC
        d = r.describe()
        assert d["onnxruntime"] == ort.__version__ and d["providers"] == ["CPUExecutionProvider"] and d["threads"] == 1


def test_worker_threads_do_not_spin_unless_asked(tmp_path):
    """Spinning workers of one session steal the cores of the next in an alternating bench (see ort_runner)."""
    linear_classifier(tmp_path / "m.onnx", "batch")
    for kwargs, flag in (({}, "0"), ({"spinning": True}, "1")):
        with load_runner(str(tmp_path / "m.onnx"), backend="onnxruntime", device="cpu", **kwargs) as r:
            options = r.session.get_session_options()
            assert options.get_session_config_entry("session.intra_op.allow_spinning") == flag
            assert r.describe()["spinning"] is (flag == "1")


def test_static_batch_onnx_runs_any_batch_in_padded_chunks(tmp_path):
    w, b = linear_classifier(tmp_path / "static.onnx", 4)
    x = np.random.default_rng(1).normal(size=(10, 3, 16, 16)).astype(np.float32)
    with OrtRunner(tmp_path / "static.onnx", device="cpu") as r:
        assert r.static_batch == 4
        out = r(x)
        np.testing.assert_allclose(out, x.reshape(10, -1) @ w + b, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(r(torch.from_numpy(x[:3])), out[:3], rtol=1e-6, atol=1e-5)
        with pytest.raises(UsageError, match=r"expects input \(B, 3, 16, 16\), got \(2, 3, 8, 8\)"):
            r(np.zeros((2, 3, 8, 8), dtype=np.float32))


def test_provider_choice(tmp_path):
    assert choose_providers("cpu") == (["CPUExecutionProvider"], "cpu")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert choose_providers("auto") == (["CPUExecutionProvider"], "cpu")
        with pytest.raises(UsageError, match="--device cuda needs onnxruntime-gpu"):
            choose_providers("cuda")
    with pytest.raises(UsageError, match="provider NopeExecutionProvider is not installed"):
        choose_providers("auto", ["NopeExecutionProvider"])
    with pytest.raises(UsageError, match="bad device 'tpu'"):
        choose_providers("tpu")


def test_foreign_and_corrupt_files(tmp_path):
    linear_classifier(tmp_path / "foreign.onnx", "batch", with_metadata=False)
    with OrtRunner(tmp_path / "foreign.onnx", device="cpu") as r:
        assert r.spec is None and r.precision == "fp32"
    result = CliRunner().invoke(cli, ["eval", str(tmp_path / "foreign.onnx"), "--data", "digits"])
    assert result.exit_code == 2 and "carries no vitc spec" in result.stderr
    (tmp_path / "bad.onnx").write_bytes((tmp_path / "foreign.onnx").read_bytes()[:100])
    with pytest.raises(UsageError, match="bad.onnx is not a readable ONNX file"):
        OrtRunner(tmp_path / "bad.onnx")


def test_eval_of_an_exported_onnx_matches_pytorch(tmp_path_factory):
    dense = exported(tmp_path_factory, "dense")
    r = CliRunner().invoke(cli, ["eval", dense["onnx"], "--data", "digits", "--json"])
    assert r.exit_code == 0, r.output
    onnx_result = json.loads(r.stdout)
    torch_result = evaluate_target(dense["artifact"], "digits", device="cpu")
    assert (onnx_result["backend"], onnx_result["precision"], onnx_result["images"]) == ("onnxruntime", "fp32", 360)
    assert onnx_result["top1"] == torch_result.top1 and onnx_result["top5"] == torch_result.top5
    with load_runner(dense["onnx"], device="cpu", threads=1) as runner:
        assert isinstance(runner, OrtRunner) and runner.spec.name == "vit-nano"
