"""TensorRT build and runner: everything that runs without TensorRT — profile shapes from a real ONNX,
precision detection, the sidecar, timing-cache paths, parser-error formatting, the one-line
"not installed" error through the CLI, and the repaired stubs that make the mypy check real."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from vitc.backends.tensorrt.build import (
    BuildSettings,
    ParserErrorInfo,
    make_sidecar,
    parser_failure_message,
    read_sidecar,
    read_timing_cache,
    sidecar_path,
    timing_cache_path,
)
from vitc.backends.tensorrt.common import INSTALL_HINT, TensorRTUnavailable, require_tensorrt, tensorrt_version
from vitc.cli import cli
from vitc.core.errors import UsageError
from vitc.core.models import SMALL_CONFIGS
from vitc.onnx.io import precision_of as onnx_precision
from vitc.onnx.profile import batch_profile, read_onnx

HAVE_TRT = tensorrt_version() is not None
no_trt = pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed here; these tests check its absence")
REPO = Path(__file__).resolve().parents[1]


def _linear_onnx(path: Path, batch: int | str = "batch", hw: int | str = 16, weight_dtype=np.float32,
                 qdq: bool = False, meta: dict[str, str] | None = None) -> Path:
    """A real ONNX graph (pixels (B,3,H,W) → flatten → matmul → logits (B,10)) with chosen shapes/types."""
    feat = 3 * 16 * 16
    w = numpy_helper.from_array(np.ones((feat, 10), dtype=weight_dtype), "w")
    nodes = [helper.make_node("Flatten", ["pixels"], ["flat"], axis=1)]
    inits = [w]
    src = "flat"
    if weight_dtype != np.float32:
        nodes.append(helper.make_node("Cast", ["flat"], ["flat_c"], to=helper.np_dtype_to_tensor_dtype(np.dtype(weight_dtype))))
        src = "flat_c"
    if qdq:
        inits += [numpy_helper.from_array(np.array(0.1, np.float32), "scale"), numpy_helper.from_array(np.array(0, np.int8), "zp")]
        nodes += [helper.make_node("QuantizeLinear", [src, "scale", "zp"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["dq"])]
        src = "dq"
    nodes.append(helper.make_node("MatMul", [src, "w"], ["mm"]))
    nodes.append(helper.make_node("Cast", ["mm"], ["logits"], to=TensorProto.FLOAT))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [batch, 3, hw, hw])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    for k, v in (meta or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


# ---- profile shapes --------------------------------------------------------------------------

def test_profile_varies_only_the_batch_of_a_real_onnx(tmp_path):
    info = read_onnx(_linear_onnx(tmp_path / "m.onnx"))
    assert [t.name for t in info.inputs] == ["pixels"] and info.inputs[0].dims == ("batch", 3, 16, 16)
    prof = batch_profile(info, 1, 32, 64)
    assert prof.shapes == {"pixels": ((1, 3, 16, 16), (32, 3, 16, 16), (64, 3, 16, 16))}
    assert prof.to_dict()["pixels"]["opt"] == [32, 3, 16, 16]
    assert (prof.min_batch, prof.max_batch) == (1, 64)


def test_profile_rejects_bad_ranges_and_dynamic_token_dims(tmp_path):
    info = read_onnx(_linear_onnx(tmp_path / "m.onnx"))
    with pytest.raises(UsageError, match="--min-batch <= --opt-batch"):
        batch_profile(info, 8, 4, 64)
    dyn = read_onnx(_linear_onnx(tmp_path / "dyn.onnx", hw="height"))
    with pytest.raises(UsageError, match="dynamic dimension 'height' at axis 2"):
        batch_profile(dyn, 1, 1, 1)


def test_static_batch_admits_only_itself(tmp_path):
    info = read_onnx(_linear_onnx(tmp_path / "s.onnx", batch=4))
    assert batch_profile(info, 4, 4, 4).shapes["pixels"][2] == (4, 3, 16, 16)
    with pytest.raises(UsageError, match="static batch of 4.*--min-batch 4 --opt-batch 4 --max-batch 4"):
        batch_profile(info, 1, 4, 8)


def test_precision_comes_from_the_graph_or_its_stamp(tmp_path):
    assert read_onnx(_linear_onnx(tmp_path / "a.onnx")).precision == "fp32"
    assert read_onnx(_linear_onnx(tmp_path / "b.onnx", weight_dtype=np.float16)).precision == "fp16"
    assert read_onnx(_linear_onnx(tmp_path / "c.onnx", qdq=True)).precision == "int8"
    stamped = onnx.load(str(_linear_onnx(tmp_path / "d.onnx", meta={"vitc.precision": "fp16"})))
    assert onnx_precision(stamped) == "fp16"


def test_unreadable_onnx_is_a_usage_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not a protobuf" * 10)
    with pytest.raises(UsageError):
        read_onnx(bad)
    with pytest.raises(UsageError, match="no such"):
        read_onnx(tmp_path / "missing.onnx")


# ---- sidecar, timing cache, parser errors ------------------------------------------------------

def test_sidecar_records_profile_precision_versions_and_spec(tmp_path):
    spec = SMALL_CONFIGS["vit-nano"]
    onnx_path = _linear_onnx(tmp_path / "m.onnx", weight_dtype=np.float16, meta={"vitc.spec": spec.to_json()})
    info = read_onnx(onnx_path)
    settings = BuildSettings(1, 8, 16, workspace_gb=2.0, builder_level=4)
    side = make_sidecar(info, batch_profile(info, 1, 8, 16), settings, engine=b"\x01\x02\x03", tensorrt_version="10.13.0",
                        gpu={"name": "NVIDIA H100"}, timing_cache=tmp_path / "timing.cache", timing_cache_reused=True,
                        build_seconds=12.3456)
    assert side["precision"] == "fp16" and side["tensorrt"] == "10.13.0" and side["gpu"]["name"] == "NVIDIA H100"
    assert side["profile"] == {"pixels": {"min": [1, 3, 16, 16], "opt": [8, 3, 16, 16], "max": [16, 3, 16, 16]}}
    assert side["inputs"] == [{"name": "pixels", "dtype": "FLOAT", "shape": [-1, 3, 16, 16]}]
    assert side["workspace_bytes"] == 2 * 2**30 and side["builder_optimization_level"] == 4
    assert side["engine_bytes"] == 3 and side["build_seconds"] == 12.346
    assert side["spec"]["name"] == "vit-nano"
    # round trip through the file the runner reads
    engine = tmp_path / "m.engine"
    sidecar_path(engine).write_text(json.dumps(side))
    assert sidecar_path(engine).name == "m.engine.json"
    assert read_sidecar(engine) == json.loads(json.dumps(side))
    assert read_sidecar(tmp_path / "other.engine") is None
    sidecar_path(engine).write_text('{"format": "something else"}')
    with pytest.raises(UsageError, match="not a vitc engine sidecar"):
        read_sidecar(engine)


def test_timing_cache_defaults_beside_the_engine_and_reads_empty_when_new(tmp_path):
    engine = tmp_path / "runs" / "model.engine"
    assert timing_cache_path(engine) == tmp_path / "runs" / "timing.cache"
    assert timing_cache_path(engine, tmp_path / "shared.cache") == tmp_path / "shared.cache"
    assert read_timing_cache(tmp_path / "new.cache") == b""
    (tmp_path / "old.cache").write_bytes(b"tactics")
    assert read_timing_cache(tmp_path / "old.cache") == b"tactics"
    with pytest.raises(UsageError, match="is a folder"):
        timing_cache_path(engine, tmp_path)


def test_parser_errors_are_reported_per_node_in_one_line():
    errors = [ParserErrorInfo(12, "/blocks.0/attn/TopK", "TopK", "K must be an initializer", "UNSUPPORTED_NODE"),
              ParserErrorInfo(-1, "", "", "model has no graph", "INVALID_GRAPH")]
    assert str(errors[0]) == "node 12 '/blocks.0/attn/TopK' (TopK): K must be an initializer [UNSUPPORTED_NODE]"
    assert str(errors[1]) == "graph: model has no graph [INVALID_GRAPH]"
    msg = parser_failure_message("m.onnx", errors)
    assert "\n" not in msg and msg.startswith("TensorRT could not parse m.onnx: node 12") and "(+1 more above)" in msg


def test_build_settings_are_validated():
    with pytest.raises(UsageError, match="--builder-level"):
        BuildSettings(builder_level=7).validate()
    with pytest.raises(UsageError, match="--workspace-gb"):
        BuildSettings(workspace_gb=0).validate()


# ---- TensorRT absent: one line, exit 1 ------------------------------------------------------------

@no_trt
def test_stub_namespace_is_not_mistaken_for_tensorrt():
    assert tensorrt_version() is None
    with pytest.raises(TensorRTUnavailable) as e:
        require_tensorrt()
    assert str(e.value) == INSTALL_HINT and "pip install" in INSTALL_HINT


@no_trt
def test_build_without_tensorrt_is_one_line_exit_1(tmp_path):
    onnx_path = _linear_onnx(tmp_path / "m.onnx")
    out = tmp_path / "m.engine"
    r = CliRunner().invoke(cli, ["build", str(onnx_path), "--out", str(out), "--opt-batch", "8", "--max-batch", "16"])
    assert r.exit_code == 1
    assert r.output.strip() == f"error: {INSTALL_HINT}"
    assert not out.exists() and not sidecar_path(out).exists()


def test_build_usage_errors_come_before_the_tensorrt_check(tmp_path):
    onnx_path = _linear_onnx(tmp_path / "m.onnx")
    r = CliRunner().invoke(cli, ["build", str(onnx_path), "--out", str(tmp_path / "e.engine"), "--min-batch", "9", "--opt-batch", "4"])
    assert r.exit_code == 2 and "--min-batch <= --opt-batch" in r.output
    r = CliRunner().invoke(cli, ["build", str(tmp_path / "nope.onnx"), "--out", str(tmp_path / "e.engine")])
    assert r.exit_code == 2 and "no such" in r.output


@no_trt
@pytest.mark.parametrize("cmd", [["eval", "{e}", "--data", "digits"], ["bench", "{e}"], ["bench", "{e}", "--backend", "tensorrt"]])
def test_engine_runner_without_tensorrt_is_one_line(tmp_path, cmd):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"serialized engine")
    r = CliRunner().invoke(cli, [c.format(e=engine) for c in cmd])
    assert r.exit_code == 1, r.output
    assert r.output.strip() == f"error: {INSTALL_HINT}"


# ---- the type check is real ---------------------------------------------------------------------

def test_repaired_stubs_parse(tmp_path):
    from tools.trt_stubs import repair_line, repair_stubs

    files, repaired = repair_stubs(tmp_path)
    assert files >= 2 and repaired >= 1
    for pyi in tmp_path.rglob("*.pyi"):
        ast.parse(pyi.read_text())
    assert repair_line("    def f(self, in: list[int], out: int) -> None:\n") == "    def f(self, in_: list[int], out: int) -> None:\n"
    assert repair_line("def g(a: int = 1, b: int) -> None:") == "def g(a: int = 1, b: int = ...) -> None:"
    assert repair_line("x = 1\n") == "x = 1\n"


@pytest.mark.slow
def test_mypy_checks_tensorrt_calls_against_the_stubs(tmp_path):
    """The TensorRT modules pass, and a wrong call into tensorrt fails (so `tensorrt` is not Any)."""
    from tools.trt_stubs import repair_stubs

    repair_stubs(tmp_path / "stubs")
    canary = tmp_path / "canary.py"
    canary.write_text("def f() -> None:\n    import tensorrt as trt\n    n: int = trt.Builder(trt.Logger()).create_network(0)\n")
    modules = ["vitc/backends/tensorrt/runner.py", "vitc/backends/tensorrt/build.py", "vitc/backends/tensorrt/common.py",
               "vitc/onnx/profile.py", "tools/trt_stubs.py"]
    files = [str(REPO / m) for m in modules] + [str(canary)]
    env = {**os.environ, "MYPYPATH": str(tmp_path / "stubs")}
    r = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"), "--follow-imports=silent",
                        "--cache-dir", str(tmp_path / "cache"), *files], capture_output=True, text=True, env=env, cwd=REPO)
    errors = [ln for ln in r.stdout.splitlines() if ": error:" in ln]
    assert len(errors) == 1 and "canary.py:3" in errors[0] and '"INetworkDefinition"' in errors[0], r.stdout
