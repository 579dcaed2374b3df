"""ONNX export and the TensorRT readiness check.

Exports are the slow part (torch.export + ONNX translation, ~10 s each on a loaded CPU), so two are
made per session and shared with test_verify/test_quantize/test_ort_runner through :func:`exported`:

* ``dense``: a vit-nano artifact exported through the CLI (``vitc export ... --json``);
* ``dvt``: a UVC- and DynamicViT-shaped model (3 blocks with different heads/head counts/MLP widths,
  token selection before blocks 1 and 2 keeping floor(16·0.7^s) patch tokens), through the library.

Broken graphs for the readiness check are built by hand with ``onnx.helper``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from conftest import DVT_RATIO, dvt_model
from onnx import TensorProto, helper

from vitc.checks import verify
from vitc.checks.export import export_verified
from vitc.cli import cli
from vitc.core.errors import CheckFailed, UsageError
from vitc.core.models import SMALL_CONFIGS
from vitc.core.token_select import keep_counts
from vitc.onnx import export as onnx_export
from vitc.onnx.graph import token_score_nodes
from vitc.onnx.io import load_onnx, metadata, onnx_spec
from vitc.onnx.readiness import check_trt_ready
from vitc.onnx.trt_ops import MAX_TOPK_K, SUPPORTED_OPS, matrix_rows

# ------------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------------

def test_cli_export_writes_a_checked_verified_dynamic_batch_onnx(dense):
    r = dense["result"]
    assert r["trt_ready"] is True and r["verify"]["passed"] is True
    assert r["verify"]["max_abs"] <= 1e-4 and r["verify"]["top1_agreement"] == 100.0
    assert r["verify"]["onnx"] == dense["onnx"]  # the final name, not the temporary file
    assert (r["precision"], r["opset"], r["batch"], r["kind"]) == ("fp32", 18, "dynamic", "model")
    assert r["input"] == {"name": "pixels", "shape": ["batch", 3, 16, 16]}
    assert r["output"] == {"name": "logits", "shape": ["batch", 10]}
    model = load_onnx(dense["onnx"])
    ops = [n.op_type for n in model.graph.node]
    # one LayerNormalization per LayerNorm (2 per block + final), attention decomposed to MatMul/Softmax
    assert ops.count("LayerNormalization") == 2 * 4 + 1 and ops.count("Softmax") == 4
    assert "TopK" not in ops and not any(n.domain for n in model.graph.node)
    meta = metadata(model)
    assert (meta["vitc.precision"], meta["vitc.kind"]) == ("fp32", "model") and "vitc.keep_ratio" not in meta
    assert onnx_spec(model) == SMALL_CONFIGS["vit-nano"]
    assert not list(Path(dense["onnx"]).parent.glob(".*.tmp"))  # atomic write left no temporary file


def test_token_selection_exports_as_constant_k_topk_with_static_token_counts(dvt):
    r = dvt["result"]
    k1, k2 = keep_counts(16, DVT_RATIO, 2)
    assert (k1, k2) == (11, 7)
    assert [t["k"] for t in r["topk"]] == [k1, k2] and r["keep_tokens"] == [k1, k2]
    assert r["keep_ratio"] == DVT_RATIO and r["verify"]["passed"] and r["verify"]["max_abs"] <= 1e-4
    model = load_onnx(dvt["onnx"])
    assert metadata(model)["vitc.keep_ratio"] == "0.7"
    inferred = onnx.shape_inference.infer_shapes(model)
    token_dims = {tuple(d.dim_value for d in v.type.tensor_type.shape.dim[1:])
                  for v in inferred.graph.value_info if len(v.type.tensor_type.shape.dim) == 3}
    # residual stream at 1+16, 1+11 and 1+7 tokens, all static
    assert {(17, 32), (12, 32), (8, 32)} <= token_dims
    assert {"GatherElements", "TopK"} <= {n.op_type for n in model.graph.node}


def test_token_score_nodes_are_exactly_the_predictors_and_topk(dvt):
    model = load_onnx(dvt["onnx"])
    chosen = set(token_score_nodes(model))
    by_name = {n.name: n for n in model.graph.node}
    meta = {n.name: {p.key: p.value for p in n.metadata_props} for n in model.graph.node}
    in_select = {n for n, m in meta.items() if "TokenSelect" in m.get("namespace", "")}
    predictor = {n for n, m in meta.items() if "predictor" in m.get("pkg.torch.onnx.name_scopes", "")}
    assert predictor <= chosen <= in_select  # the whole predictor, nothing outside token selection
    # ... and not the gather/concat that carry the kept tokens on
    assert not any(by_name[n].op_type == "GatherElements" or (by_name[n].op_type == "Concat" and n not in predictor)
                   for n in chosen)
    assert sum(by_name[n].op_type == "MatMul" for n in chosen) == 2 * 4  # 4 Linear layers per predictor
    assert sum(by_name[n].op_type == "TopK" for n in chosen) == 2


def _reuse_trace(monkeypatch, dvt) -> None:
    """Skip re-tracing: hand export_onnx the already exported graph (minus its metadata)."""
    cached = load_onnx(dvt["onnx"])
    del cached.metadata_props[:]

    def fake_trace(model, spec, *, opset=18, batch=None):
        copy = onnx.ModelProto()
        copy.CopyFrom(cached)
        return copy

    monkeypatch.setattr(onnx_export, "trace_to_onnx", fake_trace)


def test_fp16_export_keeps_io_layernorm_softmax_and_token_scores_in_fp32(dvt, tmp_path, monkeypatch):
    _reuse_trace(monkeypatch, dvt)
    out = tmp_path / "dvt.fp16.onnx"
    r = export_verified(dvt["artifact"], out, fp16=True)
    assert r["precision"] == "fp16" and r["trt_ready"] and r["verify"]["passed"]
    assert (r["verify"]["stat"], r["verify"]["atol"], r["verify"]["rtol"]) == ("mean", 1e-2, 1e-2)
    assert r["verify"]["top1_agreement"] == 100.0
    model = load_onnx(out)
    assert metadata(model)["vitc.precision"] == "fp16"
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    scores = set(token_score_nodes(model))
    for node in model.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax", "LogSoftmax", "TopK"):
            assert types[node.input[0]] == TensorProto.FLOAT, node.name
        if node.op_type == "MatMul":
            want = TensorProto.FLOAT if node.name in scores else TensorProto.FLOAT16
            assert types.get(node.output[0]) == want, node.name
    inits = {t.data_type for t in model.graph.initializer}
    assert TensorProto.FLOAT16 in inits


def test_export_writes_nothing_when_verification_fails(dvt, tmp_path, monkeypatch):

    _reuse_trace(monkeypatch, dvt)
    monkeypatch.setitem(verify.DEFAULT_TOLERANCES, "fp32", (0.0, 0.0, "elemwise"))
    out = tmp_path / "never.onnx"
    with pytest.raises(CheckFailed, match=r"never\.onnx not written: FAILED \| ONNX Runtime \(fp32\) vs PyTorch"):
        export_verified(dvt["artifact"], out)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, message", [
    ({"opset": 17}, "--opset must be one of 18, 19, 20"),
    ({"static_batch": 0}, "--static-batch must be >= 1"),
    ({"keep_ratio": 0.5}, "was materialized at keep ratio 0.7; --keep-ratio 0.5 needs the DynamicViT"),
])
def test_export_refuses_bad_options(dvt, tmp_path, kwargs, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        export_verified(dvt["artifact"], tmp_path / "x.onnx", **kwargs)


def test_export_cli_usage_errors_exit_2(dense, tmp_path):
    runner = CliRunner()
    # the batch is dynamic unless --static-batch N; the old no-op --dynamic-batch flag is gone
    r = runner.invoke(cli, ["export", dense["artifact"], "--out", str(tmp_path / "m.onnx"), "--dynamic-batch"])
    assert r.exit_code == 2 and "No such option '--dynamic-batch'" in r.stderr
    r = runner.invoke(cli, ["export", dense["artifact"], "--out", str(tmp_path / "m.onnx"), "--static-batch", "0"])
    assert r.exit_code == 2 and "error: --static-batch must be >= 1, got 0" in r.stderr
    r = runner.invoke(cli, ["export", dense["artifact"], "--out", str(tmp_path / "m.txt")])
    assert r.exit_code == 2 and "error: --out must name a .onnx file" in r.stderr
    r = runner.invoke(cli, ["export", dense["artifact"]])
    assert r.exit_code == 2 and "--out is required" in r.stderr
    r = runner.invoke(cli, ["export", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "m.onnx")])
    assert r.exit_code == 2 and "error: no such file" in r.stderr and "Traceback" not in r.output


# ------------------------------------------------------------------------------------------------
# readiness
# ------------------------------------------------------------------------------------------------

def _graph(nodes, inputs, outputs, initializers=(), opset=18):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _tokens(name="x", tokens="17"):
    dim = int(tokens) if tokens.isdigit() else tokens
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", dim, 8])


def _topk_model(k_from_shape: bool, k: int = 4):
    """scores (batch, 16) → TopK; K either a constant or computed from the input's shape at run time."""
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 16])
    values = helper.make_tensor_value_info("values", TensorProto.FLOAT, None)
    nodes, inits = [], []
    if k_from_shape:
        nodes += [
            helper.make_node("Shape", ["scores"], ["shape"], name="shape_of_scores", start=1, end=2),
            helper.make_node("Div", ["shape", "two"], ["k"], name="half_the_tokens"),
        ]
        inits.append(helper.make_tensor("two", TensorProto.INT64, [1], [2]))
    else:
        inits.append(helper.make_tensor("k", TensorProto.INT64, [1], [k]))
    nodes.append(helper.make_node("TopK", ["scores", "k"], ["values", "indices"], name="select_tokens", axis=1))
    return _graph(nodes, [scores], [values], inits)


def test_readiness_passes_on_a_constant_k_topk():
    summary = check_trt_ready(_topk_model(False))
    assert summary["ready"] and summary["topk"] == [{"node": "select_tokens", "k": 4}] and summary["batch"] == "dynamic"


@pytest.mark.parametrize("build_model, pattern", [
    (lambda: _topk_model(True), r"node 'select_tokens' \(TopK\): K \('k'\) is computed at run time"),
    (lambda: _topk_model(False, k=MAX_TOPK_K + 1), r"node 'select_tokens' \(TopK\): K = 3841 is outside TensorRT's range 1-3840"),
    (lambda: _graph([helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], name="ln_tokens", axis=-1)],
                    [_tokens(tokens="num_tokens")], [_tokens("y", "num_tokens")],
                    [helper.make_tensor(n, TensorProto.FLOAT, [8], [1.0] * 8) for n in "gb"]),
     r"graph input 'x' \(consumed by node 'ln_tokens'\): has a dynamic dimension 'num_tokens' at axis 1"),
    (lambda: _graph([helper.make_node("Unique", ["x"], ["y"], name="unique_tokens", sorted=1)],
                    [_tokens()], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]),
     r"node 'unique_tokens' \(Unique\): op Unique is not supported by TensorRT's ONNX parser"),
    (lambda: _graph([helper.make_node("FastGelu", ["x"], ["y"], name="ort_gelu", domain="com.microsoft")],
                    [_tokens()], [_tokens("y")]),
     r"node 'ort_gelu' \(com\.microsoft\.FastGelu\): ONNX Runtime contrib op"),
    (lambda: _graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], [_tokens()], [_tokens("y")], opset=21),
     r"model: opset 21 is outside the range TensorRT 10 parses \(9-20\)"),
    (lambda: _graph([helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["y"], name="q_asym")], [_tokens()],
                    [helper.make_tensor_value_info("y", TensorProto.INT8, ["batch", 17, 8])],
                    [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("zp", TensorProto.INT8, [], [3])]),
     r"node 'q_asym' \(QuantizeLinear\): zero point must be a constant 0"),
])
def test_readiness_rejects_broken_graphs_naming_the_node(build_model, pattern):
    model = build_model()
    with pytest.raises(CheckFailed, match="not TensorRT-ready: " + pattern) as info:
        check_trt_ready(model)
    assert "\n" not in str(info.value)


def test_a_runtime_token_count_downstream_is_reported_with_its_node():
    """Reshape to a token count read from a second input: the reshape's output dimension is dynamic."""
    x = _tokens()
    n = helper.make_tensor_value_info("n", TensorProto.INT64, [3])
    nodes = [helper.make_node("Reshape", ["x", "n"], ["y"], name="reshape_to_runtime_tokens")]
    model = _graph(nodes, [x, n], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    summary = check_trt_ready(model, raise_on_fail=False)
    assert not summary["ready"]
    assert any("reshape_to_runtime_tokens" in v and "dynamic dimension" in v for v in summary["violations"])


def test_check_only_cli_on_good_and_broken_files(dvt, tmp_path):
    runner = CliRunner()
    r = runner.invoke(cli, ["export", "--check-only", dvt["onnx"], "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["ready"] and [t["k"] for t in summary["topk"]] == [11, 7]
    broken = tmp_path / "broken.onnx"
    onnx.save(_topk_model(True), broken)
    r = runner.invoke(cli, ["export", "--check-only", str(broken)])
    assert r.exit_code == 1
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert errors == ["error: not TensorRT-ready: node 'select_tokens' (TopK): K ('k') is computed at run time; "
                      "TensorRT needs a constant K (initializer or Constant) <= 3840 (and 1 more violation)"]


def test_truncated_corrupt_and_foreign_files_are_one_line_errors(dense, tmp_path):
    data = Path(dense["onnx"]).read_bytes()
    cases = {"truncated.onnx": data[: len(data) // 2], "empty.onnx": b"", "text.onnx": b"hello, not a model\n",
             "zeros.onnx": bytes(1000)}
    for name, payload in cases.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(UsageError) as info:
            load_onnx(tmp_path / name)
        assert str(tmp_path / name) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UsageError, match="no such ONNX file"):
        load_onnx(tmp_path / "missing.onnx")
    r = CliRunner().invoke(cli, ["export", "--check-only", str(tmp_path / "truncated.onnx")])
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1


def test_supported_ops_come_from_the_parsers_own_matrix_shipped_as_package_data():
    rows = matrix_rows()  # read from vitc/onnx/data/, inside the installed package
    assert len(rows) == 196 and len(SUPPORTED_OPS) == 150
    assert {"MatMul", "Softmax", "LayerNormalization", "TopK", "GatherElements", "QuantizeLinear"} <= SUPPORTED_OPS
    assert rows["Unique"] is False and rows["AffineGrid"] is False and "Unique" not in SUPPORTED_OPS


@pytest.mark.parametrize("command", ["export", "verify", "quantize"])
def test_help(command):
    r = CliRunner().invoke(cli, [command, "--help"])
    assert r.exit_code == 0 and "Usage:" in r.output


@torch.no_grad()
def test_token_scores_of_random_predictors_are_spread_at_the_cut():
    """Guard for the fixture itself: scores tied at the K-th place would make TopK parity a coin toss.
    (Ties among kept tokens only reorder them, which the blocks after selection do not see.)"""
    model = dvt_model(0)
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    sel = model.blocks[1]
    tokens = model.blocks[0](model._pos_embed(model.patch_embed(x)))[:, 1:]
    scores = sel.keep_scores(tokens).sort(dim=1, descending=True).values.numpy()
    k = sel.num_keep
    assert (scores[:, k - 1] - scores[:, k]).min() > 1e-4 and np.isfinite(scores).all()
