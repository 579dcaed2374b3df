"""`vitc quantize`: INT8 Q/DQ for TensorRT — symmetric INT8 activations, per-channel weights, real
calibration images, the token-score path kept float, metadata kept, TensorRT-ready."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from vitc.checks.verify import verify_onnx
from vitc.cli import cli
from vitc.core.data import parse_data
from vitc.core.errors import UsageError
from vitc.core.models import SMALL_CONFIGS
from vitc.onnx.calibration import ImageCalibrationReader
from vitc.onnx.graph import token_score_nodes
from vitc.onnx.io import load_onnx, metadata, onnx_spec
from vitc.onnx.quantize import quantize_onnx
from vitc.onnx.readiness import check_trt_ready


@pytest.fixture(scope="module")
def int8(dvt, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "dvt.int8.onnx"
    r = CliRunner().invoke(cli, ["quantize", dvt["onnx"], "--calib-data", "digits", "--num-samples", "96",
                                 "--batch-size", "32", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    return {"onnx": str(out), "result": json.loads(r.stdout), "artifact": dvt["artifact"]}


def test_qdq_is_symmetric_int8_with_per_channel_weights(int8):
    r = int8["result"]
    assert r["trt_ready"] and r["precision"] == "int8" and r["quantize_linear"] > 0
    from vitc.core.host import cpu_has_int8_dot

    bits = 8 if cpu_has_int8_dot() else 7  # --reduce-range auto: 7-bit weights where u8 x s8 kernels would saturate
    assert r["calibration"] == {"method": "minmax", "data": "digits", "split": "train", "num_samples": 96, "batch_size": 32,
                                "seed": 0, "attention": False, "per_channel": True, "weight_bits": bits, "float_blocks": []}
    model = load_onnx(int8["onnx"])
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    per_channel = 0
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert node.domain == ""
            zp = inits[node.input[2]]
            assert zp.dtype == np.int8 and not zp.any()  # signed, symmetric
            per_channel += int(zp.size > 1)
    assert per_channel >= 1
    # every weight MatMul/Gemm/Conv outside the token-score path reads an INT8 weight through a DequantizeLinear
    producers = {o: n for n in model.graph.node for o in n.output}
    scores = set(token_score_nodes(model))
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm", "Conv") and node.name not in scores:
            weight = producers.get(node.input[1])
            if weight is not None and weight.op_type == "DequantizeLinear" and weight.input[0] in inits:
                w = inits[weight.input[0]]
                assert w.dtype == np.int8 and int(np.abs(w.astype(np.int32)).max()) <= 2 ** (bits - 1)


def test_token_score_path_stays_float(int8):
    model = load_onnx(int8["onnx"])
    producers = {o: n for n in model.graph.node for o in n.output}
    scores = [n for n in model.graph.node if n.name in set(token_score_nodes(model))]
    assert sum(n.op_type == "MatMul" for n in scores) == 8 and sum(n.op_type == "TopK" for n in scores) == 2
    for node in scores:
        for name in node.input:
            p = producers.get(name)
            assert p is None or p.op_type != "DequantizeLinear", f"{node.name} reads a dequantized tensor"


def test_metadata_is_kept_with_precision_int8(int8, dvt):
    model = load_onnx(int8["onnx"])
    meta, source = metadata(model), metadata(load_onnx(dvt["onnx"]))
    assert meta["vitc.precision"] == "int8" and meta["vitc.keep_ratio"] == source["vitc.keep_ratio"]
    assert meta["vitc.spec"] == source["vitc.spec"] and json.loads(meta["vitc.calibration"])["method"] == "minmax"
    assert check_trt_ready(model)["ready"]


def test_int8_verifies_against_pytorch_with_the_cosine_default(int8):
    report = verify_onnx(int8["onnx"], int8["artifact"], data="digits", batch_size=64, threads=1)
    assert report and (report.stat, report.atol) == ("cosine", 1e-2)
    assert report.errors.cosine_mean >= 0.99 and report.errors.top1_agreement >= 95.0
    assert report.errors.max_abs > 1e-4  # it really is quantized


def test_entropy_calibration_runs(dvt, tmp_path):
    r = quantize_onnx(dvt["onnx"], "digits", tmp_path / "e.onnx", num_samples=32, method="entropy", batch_size=16)
    assert r["calibration"]["method"] == "entropy" and r["trt_ready"]


def test_reader_is_deterministic_real_and_capped():
    spec = SMALL_CONFIGS["vit-nano"]
    a = ImageCalibrationReader(parse_data("digits"), spec, "pixels", num_samples=70, batch_size=32)
    b = ImageCalibrationReader(parse_data("digits"), spec, "pixels", num_samples=70, batch_size=32)
    batches = list(iter(a.get_next, None))
    assert [x["pixels"].shape for x in batches] == [(32, 3, 16, 16), (32, 3, 16, 16), (6, 3, 16, 16)]
    assert np.array_equal(batches[0]["pixels"], b.get_next()["pixels"]) and a.num_samples == 70
    assert ImageCalibrationReader(parse_data("digits"), spec, "pixels", num_samples=70, batch_size=32, drop_last=True).num_samples == 64
    everything = ImageCalibrationReader(parse_data("digits"), spec, "pixels", num_samples=10**6, batch_size=500)
    assert everything.num_samples == 1437  # the digits train split, not val


def test_refusals(dvt, tmp_path):
    with pytest.raises(UsageError, match="calibration needs real images"):
        quantize_onnx(dvt["onnx"], "synthetic", tmp_path / "s.onnx")
    r = CliRunner().invoke(cli, ["quantize", dvt["onnx"], "--calib-data", "digits", "--out", str(tmp_path / "m.onnx"),
                                 "--method", "histogram"])
    assert r.exit_code == 2
    fp16 = tmp_path / "fp16.onnx"
    model = load_onnx(dvt["onnx"])
    from vitc.onnx.io import save_onnx, stamp

    stamp(model, {"vitc.precision": "fp16"})
    save_onnx(model, fp16)
    with pytest.raises(UsageError, match="is fp16; quantize the fp32 ONNX"):
        quantize_onnx(fp16, "digits", tmp_path / "q.onnx")
    foreign = tmp_path / "foreign.onnx"
    del model.metadata_props[:]
    save_onnx(model, foreign)
    with pytest.raises(UsageError, match="carries no vitc spec"):
        quantize_onnx(foreign, "digits", tmp_path / "q.onnx")
    assert not (tmp_path / "q.onnx").exists() and onnx_spec(load_onnx(foreign)) is None


def test_float_blocks_keep_those_blocks_matmuls_float(dense, tmp_path):
    """--float-blocks: a mixed file whose named blocks have no Q/DQ on their MatMuls (found by the module scopes the
    dynamo export records), the rest INT8; a block the model does not have is refused."""
    from vitc.onnx.graph import block_of_nodes

    full = quantize_onnx(dense["onnx"], "digits", tmp_path / "full.onnx", num_samples=32)
    mixed = quantize_onnx(dense["onnx"], "digits", tmp_path / "mixed.onnx", num_samples=32, float_blocks=[0, 2])
    assert mixed["calibration"]["float_blocks"] == [0, 2] and 0 < mixed["quantize_linear"] < full["quantize_linear"]
    blocks = block_of_nodes(load_onnx(dense["onnx"]))
    graph = load_onnx(tmp_path / "mixed.onnx").graph
    fed = {n.output[0]: n.op_type for n in graph.node}
    quantized = {node.name: any(fed.get(i) == "DequantizeLinear" for i in node.input)
                 for node in graph.node if node.op_type == "MatMul" and node.name in blocks}
    assert quantized and not any(q for name, q in quantized.items() if blocks[name] in (0, 2))  # float blocks: no Q/DQ
    assert any(q for name, q in quantized.items() if blocks[name] in (1, 3))  # the others: INT8
    with pytest.raises(UsageError, match="--float-blocks: .* has no block 9"):
        quantize_onnx(dense["onnx"], "digits", tmp_path / "bad.onnx", num_samples=32, float_blocks=[9])
    assert not (tmp_path / "bad.onnx").exists()
