"""`vitc verify`: ONNX Runtime vs PyTorch on the same random and real inputs, Polygraphy-style statistics,
PASS/FAIL and exit codes, one-line errors for mismatched pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from vitc.checks.verify import compare_outputs, default_tolerances, verify_onnx
from vitc.cli import cli
from vitc.core.artifacts import save_model
from vitc.core.errors import UsageError
from vitc.core.models import SMALL_CONFIGS
from vitc.core.spec import build_model

# ------------------------------------------------------------------------------------------------
# the comparison rules
# ------------------------------------------------------------------------------------------------

def test_elemwise_fails_only_where_both_tolerances_are_exceeded():
    ref = np.array([[10.0, 0.001, -2.0]], dtype=np.float32)
    # 10.0 -> 10.005: abs 5e-3 > atol but rel 5e-4 <= rtol: passes
    out = ref + np.array([[0.005, 0.0, 0.0]], dtype=np.float32)
    e = compare_outputs(out, ref, atol=1e-4, rtol=1e-3, stat="elemwise")
    assert e.passed and e.max_abs == pytest.approx(0.005, rel=1e-3)
    # 0.001 -> 0.0012: rel 0.2 > rtol and abs 2e-4 > atol: fails; the required tolerances are the maxima
    out = ref + np.array([[0.0, 0.0002, 0.0]], dtype=np.float32)
    e = compare_outputs(out, ref, atol=1e-4, rtol=1e-3, stat="elemwise")
    assert not e.passed
    assert e.required_atol == pytest.approx(2e-4, rel=1e-3) and e.required_rtol == pytest.approx(0.2, rel=1e-3)
    assert compare_outputs(out, ref, atol=e.required_atol * 1.01, rtol=1e-3, stat="elemwise").passed


def test_mean_and_max_statistics_and_top1_agreement():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(64, 10)).astype(np.float32)
    out = ref + rng.normal(scale=1e-3, size=ref.shape).astype(np.float32)
    out[0, 0] += 1.0  # one outlier
    mean = compare_outputs(out, ref, atol=1e-2, rtol=1e-2, stat="mean")
    assert mean.passed and mean.required_atol == pytest.approx(np.abs(out - ref).mean(), rel=1e-5)
    assert not compare_outputs(out, ref, atol=1e-2, rtol=1e-2, stat="max").passed
    assert mean.p99_abs < mean.max_abs and mean.median_abs < mean.mean_abs
    flipped = ref.copy()
    flipped[:8] = -flipped[:8]
    e = compare_outputs(flipped, ref, atol=1e-2, rtol=1e-2, stat="cosine")
    assert e.top1_agreement < 100.0 and e.cosine_min == pytest.approx(-1.0) and not e.passed


def test_nan_always_fails():
    ref = np.ones((2, 3), dtype=np.float32)
    out = ref.copy()
    out[1, 2] = np.nan
    for stat in ("elemwise", "mean", "cosine"):
        e = compare_outputs(out, ref, atol=1e9, rtol=1e9, stat=stat)
        assert not e.passed and e.nonfinite == 1


def test_default_tolerances_by_precision():
    assert default_tolerances("fp32") == (1e-4, 1e-3, "elemwise")
    assert default_tolerances("fp16") == (1e-2, 1e-2, "mean")
    assert default_tolerances("int8")[2] == "cosine"


# ------------------------------------------------------------------------------------------------
# ONNX Runtime vs PyTorch
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["dense", "dvt"])
@pytest.mark.parametrize("batch_size, batches", [(1, 40), (32, None)])
def test_onnx_matches_pytorch_on_digits_at_batch_1_and_32(request, name, batch_size, batches):
    model = request.getfixturevalue(name)
    report = verify_onnx(model["onnx"], model["artifact"], data="digits", batch_size=batch_size, batches=batches, threads=1)
    assert report and report.passed
    assert report.images == (40 if batch_size == 1 else 360)  # the whole digits val split at batch 32
    assert report.errors.max_abs <= 1e-4 and report.errors.top1_agreement == 100.0 and report.errors.nonfinite == 0
    d = report.to_dict()
    assert d["passed"] is True and d["stat"] == "elemwise" and d["data"] == "digits val" and d["batch_size"] == batch_size


def test_random_inputs_report_and_text(dvt):
    report = verify_onnx(dvt["onnx"], dvt["artifact"], batch_size=5, threads=1)
    assert report and report.images == 4 * 5 and report.data == "random"
    text = report.to_text()
    for needle in ("Absolute Difference", "Relative Difference", "Cosine Similarity", "Top-1 Agreement",
                   "Minimum Required Tolerance: elemwise error", "PASSED |"):
        assert needle in text
    assert report.onnx_backend["providers"] == ["CPUExecutionProvider"]


def test_different_weights_fail_with_exit_1_and_json(dense, tmp_path):
    torch.manual_seed(123)
    spec = SMALL_CONFIGS["vit-nano"]
    other = save_model(tmp_path / "other.safetensors", build_model(spec, init_weights=True), spec)
    r = CliRunner().invoke(cli, ["verify", dense["onnx"], "--against", str(other), "--batches", "2", "--batch-size", "4", "--json"])
    assert r.exit_code == 1, r.output
    report = json.loads(r.stdout)
    assert report["passed"] is False and report["required_atol"] > 1e-4 and report["images"] == 8
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("error: FAILED | ONNX Runtime (fp32) vs PyTorch")]


def test_cli_verify_passes_with_exit_0(dense):
    r = CliRunner().invoke(cli, ["verify", dense["onnx"], "--against", dense["artifact"], "--batches", "1", "--batch-size", "3"])
    assert r.exit_code == 0, r.output
    assert "PASSED | ONNX Runtime (fp32) vs PyTorch on 3 random images at batch 3" in r.stdout


def test_mismatched_input_shapes_are_a_one_line_usage_error(dense, tmp_path):
    torch.manual_seed(0)
    spec = SMALL_CONFIGS["vit-micro"]  # 32 px, the ONNX takes 16 px
    micro = save_model(tmp_path / "micro.safetensors", build_model(spec, init_weights=True), spec)
    with pytest.raises(UsageError, match=r"takes input 3x16x16 but .*micro\.safetensors takes 3x32x32: they are not the same model"):
        verify_onnx(dense["onnx"], str(micro))
    r = CliRunner().invoke(cli, ["verify", dense["onnx"], "--against", str(micro)])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error: ")


def test_bad_options_are_usage_errors(dense):
    with pytest.raises(UsageError, match="--stat must be one of"):
        verify_onnx(dense["onnx"], dense["artifact"], stat="p50")
    with pytest.raises(UsageError, match="unknown data source"):
        verify_onnx(dense["onnx"], dense["artifact"], data="mnist")


# ------------------------------------------------------------------------------------------------
# token-selection models: numerics on the same kept tokens, decisions reported
# ------------------------------------------------------------------------------------------------


def test_keep_masks_follow_indices_through_the_stages():
    from vitc.onnx.selection import keep_masks_from_indices

    # stage 1 keeps patches 5, 2, 0, 3 (in that order); stage 2 keeps list entries 1 and 3 = patches 2, 3
    masks = keep_masks_from_indices([np.array([[5, 2, 0, 3]]), np.array([[1, 3]])], num_patches=6)
    assert masks[0].tolist() == [[1, 0, 1, 1, 0, 1]]
    assert masks[1].tolist() == [[0, 0, 1, 1, 0, 0]]


def test_gathered_forward_reproduces_the_model_and_forces_kept_tokens(dvt):
    from vitc.core.artifacts import load_artifact
    from vitc.methods.dynamicvit.compress import model_from_artifact
    from vitc.methods.dynamicvit.forward import gathered_forward

    model = model_from_artifact(load_artifact(dvt["artifact"]))
    torch.manual_seed(0)
    x = torch.randn(4, *SMALL_CONFIGS["vit-nano"].input_shape)
    with torch.inference_mode():
        logits, idx = gathered_forward(model, x)
        assert (logits - model(x)).abs().max() <= 1e-6
        same, _ = gathered_forward(model, x, idx)
        assert torch.equal(same, logits)
        # the last stage's tokens in another order: the same set (earlier stages' order feeds later indices)
        shuffled, _ = gathered_forward(model, x, [*idx[:-1], idx[-1].flip(1)])
        assert (shuffled - logits).abs().max() <= 1e-5
        other = [idx[0].roll(1, dims=0), idx[1]]  # image b gets image b-1's stage-1 tokens
        moved, _ = gathered_forward(model, x, other)
        assert (moved - logits).abs().max() > 1e-3


def test_selection_flips_are_reported_and_numerics_checked_on_the_same_tokens(dvt, tmp_path):
    """Against an artifact with other predictor weights (same backbone) the kept tokens differ, yet the
    ONNX's numbers match the fp32 model run on the ONNX's kept tokens: the flips are reported and
    judged by top-1 agreement, the numerics by the usual tolerance."""
    from vitc.core.artifacts import load_artifact

    report = verify_onnx(dvt["onnx"], dvt["artifact"], batch_size=8, threads=1)
    assert report.selection is not None and report.selection["images_flipped"] == 0 and report
    assert "Token Selection" in report.to_text()

    art = load_artifact(dvt["artifact"])
    torch.manual_seed(7)
    tensors = {k: (torch.randn_like(v) if ".predictor." in k and v.ndim == 2 else v) for k, v in art.tensors.items()}
    model = build_model(art.spec)
    model.load_state_dict(tensors)
    other = save_model(tmp_path / "other-predictors.safetensors", model, art.spec, meta=art.meta)
    report = verify_onnx(dvt["onnx"], str(other), batch_size=8, threads=1)
    sel = report.selection
    assert sel["images_flipped"] > 0 and 0 <= sel["top1_changed_by_selection"] <= sel["images_flipped"]
    assert report.errors.max_abs <= 1e-4  # aligned: the backbone computes the same on the same tokens
    assert sel["passed"] and sel["min_top1_agreement"] is None  # random inputs: flips reported, not judged
    assert report.passed
    real = verify_onnx(dvt["onnx"], str(other), data="digits", batches=2, batch_size=16, threads=1).selection
    # this model is untrained: on real images its own top-1 is at chance, so flips are reported, not judged
    assert real["own_top1"] is not None and real["own_top1"] < 30
    assert real["min_top1_agreement"] is None and "not above chance" in real["not_judged"] and real["passed"]
    assert report.to_dict()["selection"]["images_flipped"] == sel["images_flipped"]


def test_a_selection_that_changes_decisions_fails(dvt, tmp_path):
    """The ONNX's predictor picks other tokens than the artifact's on every image; labelled with the
    artifact's own predictions (so the flips are judged), the swaps change the fp32 top-1 on several
    of 64 images — significantly more than 1% — and the check fails, while the numerics still pass."""
    import numpy as np

    from vitc.backends.ort_runner import OrtRunner
    from vitc.checks.verify import SelectionCheck, binomial_tail, compare_outputs
    from vitc.core.artifacts import load_artifact
    from vitc.methods.dynamicvit.forward import gathered_forward

    art = load_artifact(dvt["artifact"])
    torch.manual_seed(7)
    model = build_model(art.spec)
    model.load_state_dict({k: (torch.randn_like(v) if ".predictor." in k and v.ndim == 2 else v)
                           for k, v in art.tensors.items()})
    model.eval()
    rng = np.random.default_rng(0)
    with OrtRunner(dvt["onnx"], threads=1) as runner:
        check = SelectionCheck.for_model(dvt["onnx"], model, art.spec, runner)
        assert check is not None
        for _ in range(2):
            x = rng.standard_normal((32, *art.spec.input_shape)).astype(np.float32)
            with torch.inference_mode():
                own, _ = gathered_forward(model, torch.from_numpy(x))
            out, ref = check(x, own.argmax(1).numpy())
            assert compare_outputs(out, ref, 1e-4, 1e-3, "elemwise").passed  # same tokens, same numbers
    summary = check.summary()
    assert summary["min_top1_agreement"] is not None  # the model is right on every image: judged
    assert summary["images_flipped"] == 64 and summary["top1_changed_by_selection"] >= 3
    assert summary["p_value"] == binomial_tail(summary["top1_changed_by_selection"], 64, 0.01) < 0.05
    assert not summary["passed"]


@pytest.mark.parametrize("correct, changed, judged, passed", [
    (31, 0, True, True),    # 97% top-1, no swap changed a top-1: judged, passes
    (31, 1, True, True),    # one change in 32 is what a 1% rate gives 28% of the time (p = 0.275): passes
    (31, 3, True, False),   # three in 32 is not (p = 0.004): the selection changes decisions, fails
    (9, 12, True, False),   # 28% top-1 is above chance + 3 s.e. (26.0%): judged, fails
    (3, 12, False, True),   # 9% top-1, at chance: the flips are reported, not judged
])
def test_flips_are_judged_only_where_the_model_is_above_chance(correct, changed, judged, passed):
    from vitc.checks.verify import SelectionCheck

    check = SelectionCheck.__new__(SelectionCheck)
    check.images = check.labelled = 32
    check.classes, check.flipped, check.changed = 10, 20, changed
    check.correct_own, check.agree_own = correct, 32 - changed
    summary = check.summary()
    assert (summary["min_top1_agreement"] is not None) == judged and summary["passed"] == passed
    assert (summary["not_judged"] is None) == judged
    assert summary["top1_changed_by_selection"] == changed


def test_selection_significance_is_an_exact_binomial_tail():
    from vitc.checks.verify import binomial_tail

    assert binomial_tail(0, 32, 0.01) == 1.0 and binomial_tail(33, 32, 0.01) == 0.0
    assert binomial_tail(1, 32, 0.01) == pytest.approx(1 - 0.99**32)
    assert binomial_tail(2, 32, 0.01) == pytest.approx(1 - 0.99**32 - 32 * 0.01 * 0.99**31)
    assert 0.0 < binomial_tail(200, 10_000, 0.01) < 1e-15  # large n stays finite (log space)
