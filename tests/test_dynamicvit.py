"""DynamicViT: keep counts, predictor size, masked training forward vs gathered inference, losses,
optimisation groups, MACs, errors, and the CLI end to end (compress → materialize → info → eval)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from vitc.cli import cli
from vitc.core.errors import UsageError
from vitc.core.models import SMALL_CONFIGS, resolve_model
from vitc.core.spec import build_model
from vitc.core.token_select import PredictorLG, TokenSelect, default_stages, keep_counts
from vitc.methods.dynamicvit import defaults as D
from vitc.methods.dynamicvit.compress import (
    DynamicViTObjective,
    MaskedTrainModel,
    attach_predictors,
    dense_macs,
    materialize_ratio,
    ratio_loss,
    resolve_stages,
    stage_keep_counts,
    token_distill_loss,
    with_token_selection,
)
from vitc.methods.dynamicvit.forward import cls_attention_forward, masked_forward, softmax_with_policy
from vitc.methods.dynamicvit.settings import DynamicViTSettings
from vitc.train.settings import TrainSettings


def _peaky(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Re-draw the weights with a larger std so attention and predictor scores are far from uniform
    (timm's 0.02 init makes every token look alike, and parity tests would pass trivially)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 or name.endswith(("cls_token", "pos_embed")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)
    return model.eval()


def _micro_with_predictors(keep_ratio: float = 0.7, seed: int = 0):
    torch.manual_seed(seed)
    dense, spec = resolve_model("vit-micro")
    model, new_spec = attach_predictors(dense, spec, keep_ratio, resolve_stages(spec, None))
    return _peaky(model, seed), new_spec


# ---- keep counts, stages, predictor size ---------------------------------------------------------


def test_keep_counts_cumulative_floor_for_196_patches():
    assert keep_counts(196, 0.7, 3) == [137, 96, 67]
    assert keep_counts(196, 0.5, 3) == [98, 49, 24]
    assert keep_counts(196, 0.9, 3) == [176, 158, 142]
    assert keep_counts(100, 0.7, 2) == [70, 49]  # 100·0.7² is 48.999… in floats; the paper's floor is 49


def test_stage_counts_use_the_models_patch_count():
    spec = SMALL_CONFIGS["vit-micro"]  # 64 patches, depth 8
    assert default_stages(spec.depth) == [2, 4, 6]
    assert default_stages(12) == [3, 6, 9]
    new = with_token_selection(spec, 0.7, [2, 4, 6])
    assert [b.keep_tokens for b in new.blocks] == [None, None, 44, None, 31, None, 21, None]
    assert new.keep_schedule() == [64, 64, 44, 44, 31, 31, 21, 21]


def test_deit_small_predictor_has_241250_parameters():
    assert sum(p.numel() for p in PredictorLG(384).parameters()) == 241_250


@pytest.mark.parametrize(
    ("stages", "message"),
    [([4, 2], "strictly increasing"), ([0, 3], "out of range [1, 7]"), ([2, 8], "out of range [1, 7]"), ([], "at least one")],
)
def test_bad_stages_are_one_line_usage_errors(stages, message):
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")) as e:
        resolve_stages(SMALL_CONFIGS["vit-micro"], stages)
    assert "\n" not in str(e.value)


def test_zero_token_stage_and_bad_ratio_are_refused():
    nano = SMALL_CONFIGS["vit-nano"]  # 16 patches
    with pytest.raises(UsageError, match="without patch tokens"):
        stage_keep_counts(nano, 0.2, 3)  # 3, 0, 0
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(UsageError, match=r"\(0, 1\]"):
            stage_keep_counts(nano, bad, 3)


# ---- masked softmax and the training forward -----------------------------------------------------


def test_softmax_with_policy_equals_softmax_over_kept_keys():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 6, 6) * 2
    policy = torch.tensor([[1, 1, 0, 1, 0, 1], [1, 0, 0, 0, 1, 1]], dtype=torch.float32).unsqueeze(-1)
    probs = softmax_with_policy(logits, policy)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 3, 6))
    for b in range(2):
        kept = policy[b, :, 0].bool()
        for i in range(6):
            cols = kept.clone()
            cols[i] = True  # self-loop
            ref = logits[b, :, i, cols].softmax(-1)
            torch.testing.assert_close(probs[b, :, i, cols], ref, atol=2e-5, rtol=0)
            assert probs[b, :, i, ~cols].max() < 1e-4  # dropped keys get only the eps/N share
    half = softmax_with_policy(logits.to(torch.bfloat16), policy)
    assert half.dtype == torch.bfloat16  # computed in fp32, returned in the input dtype


def test_gate_gradient_is_bounded_when_a_dropped_key_dominates():
    # Query 0 keeps only itself; the dropped key 1 is 40 nats above it. The official max over all
    # keys caps d(prob)/d(gate) near 1/eps; a max over kept keys would give exp(40) ~ 2e17.
    logits = torch.tensor([[[[0.0, 40.0, -5.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]])
    policy = torch.tensor([[[1.0], [0.0], [1.0]]], requires_grad=True)
    probs = softmax_with_policy(logits, policy)
    probs[0, 0, 0, 0].backward()
    grad = policy.grad.abs().max()
    assert torch.isfinite(grad) and 1e3 < grad <= 2e6


def test_all_ones_policy_equals_timm_forward():
    torch.manual_seed(0)
    dense, _ = resolve_model("vit-micro")
    dense = _peaky(dense)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        out = masked_forward(dense, x)
        ref = dense(x)
        feats = dense.forward_features(x)
    assert out.keep_masks == []
    assert (out.logits - ref).abs().max() <= 1e-5
    assert (out.tokens - feats[:, 1:]).abs().max() <= 1e-5


def test_masked_forward_with_inference_decisions_equals_gathered_forward():
    model, spec = _micro_with_predictors(0.7)
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        gathered = model(x)
        masked = masked_forward(model, x, decide="topk")
        counts = [[int(v) for v in m.sum(1)] for m in masked.keep_masks]
        # the same decisions passed explicitly, and a different fixed set as a control
        explicit = masked_forward(model, x, decisions=masked.keep_masks)
        other = [torch.roll(m, 1, dims=1) * prev for m, prev in
                 zip(masked.keep_masks, [torch.ones_like(masked.keep_masks[0])] + masked.keep_masks[:-1])]
        wrong = masked_forward(model, x, decisions=other)
    assert counts == [[44] * 6, [31] * 6, [21] * 6]
    assert (masked.logits - gathered).abs().max() <= 1e-5
    assert (explicit.logits - gathered).abs().max() <= 1e-5
    assert (wrong.logits - gathered).abs().max() > 1e-3  # the comparison can fail


def test_gumbel_decisions_are_hard_cumulative_and_train_the_predictor():
    model, _ = _micro_with_predictors(0.7)
    model.train()
    x = torch.randn(8, 3, 32, 32)
    out = masked_forward(model, x, decide="gumbel")
    prev = torch.ones_like(out.keep_masks[0])
    for m in out.keep_masks:
        assert set(m.unique().tolist()) <= {0.0, 1.0}
        assert bool((m <= prev).all())  # a dropped token stays dropped
        prev = m
    (out.logits.sum() + ratio_loss(out.keep_masks, 0.7)).backward()
    selectors = [m for m in model.blocks if isinstance(m, TokenSelect)]
    assert all(s.predictor.in_conv[1].weight.grad.abs().sum() > 0 for s in selectors)


# ---- losses ----------------------------------------------------------------------------------------


def test_ratio_loss_zero_at_target_and_exact_otherwise():
    b, n, rho = 4, 64, 0.5
    masks = []
    for s in (1, 2, 3):
        m = torch.zeros(b, n)
        m[:, : int(n * rho**s)] = 1  # 32, 16, 8 of 64: exactly rho^s
        masks.append(m)
    assert float(ratio_loss(masks, rho)) == 0.0
    masks[0] = torch.ones(b, n)  # stage 1 keeps everything: (1 - 0.5)^2 / 3 stages
    assert math.isclose(float(ratio_loss(masks, rho)), 0.25 / 3, rel_tol=1e-6)


def test_token_distillation_counts_only_kept_tokens():
    s, t = torch.zeros(2, 4, 3), torch.zeros(2, 4, 3)
    s[0, 1] = 2.0  # kept: contributes 4 per channel
    s[1, 3] = 100.0  # dropped: ignored
    keep = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.float32)
    assert math.isclose(float(token_distill_loss(s, t, keep)), 4 * 3 / (3 * 3), rel_tol=1e-6)
    assert float(token_distill_loss(s, t, torch.zeros(2, 4))) == 0.0


def test_objective_param_groups_freeze_backbone_then_scale():
    torch.manual_seed(0)
    dense, spec = resolve_model("vit-nano")
    obj = DynamicViTObjective(dense, DynamicViTSettings(keep_ratio=0.7, freeze_epochs=2))
    model, _ = attach_predictors(dense, spec, 0.7, [1, 2, 3])
    for name in ("cls_token", "pos_embed"):
        getattr(model, name).requires_grad_(False)
    wrapper = MaskedTrainModel(model)
    groups = obj.param_groups(wrapper, TrainSettings())
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert id(model.cls_token) not in in_groups and id(model.pos_embed) not in in_groups
    pred = {id(p) for m in model.blocks if isinstance(m, TokenSelect) for p in m.parameters()}
    for g in groups:
        ids = {id(p) for p in g["params"]}
        assert (ids <= pred) == (g["role"] == "predictor") and ids
    scales = {(g["role"], e): obj.lr_scale(g, e) for g in groups for e in (0, 1, 2, 5)}
    assert scales[("backbone", 0)] == scales[("backbone", 1)] == 0.0
    assert scales[("backbone", 2)] == scales[("backbone", 5)] == obj.cfg.backbone_lr_scale > 0
    assert scales[("predictor", 0)] == 1.0
    # the teacher is a frozen copy of the dense model, not the student
    assert not any(isinstance(m, TokenSelect) for m in obj.teacher.blocks)
    assert not any(p.requires_grad for p in obj.teacher.parameters())


# ---- module tree, materialization, MACs ------------------------------------------------------------


def test_training_tree_has_the_keys_of_build(tmp_path):
    from vitc.core.artifacts import load_artifact, save_artifact

    model, spec = _micro_with_predictors(0.7)
    assert list(model.state_dict()) == list(build_model(spec).state_dict())
    path = save_artifact(tmp_path / "c.safetensors", spec, model.state_dict(), kind="dynamicvit", meta={"keep_ratio": 0.7})
    art = load_artifact(path)
    m5, s5 = materialize_ratio(art, 0.5)
    assert [b.keep_tokens for b in s5.blocks if b.keep_tokens] == [32, 16, 8]
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = masked_forward(model_with_keep(model, [32, 16, 8]), x, decide="topk").logits
        assert (m5(x) - ref).abs().max() <= 1e-5
    with pytest.raises(UsageError, match=r"\(0, 1\]"):
        materialize_ratio(art, 1.2)


def model_with_keep(model: torch.nn.Module, counts: list[int]) -> torch.nn.Module:
    for sel, k in zip([m for m in model.modules() if isinstance(m, TokenSelect)], counts):
        sel.num_keep = k
    return model


def test_deit_small_macs_at_keep_07():
    from vitc.checks.inspect import summarize

    _, spec = resolve_model("deit_small_patch16_224")
    dvt = with_token_selection(spec, 0.7, resolve_stages(spec, None))
    info = summarize(dvt)
    assert [b["keep_tokens"] for b in info["blocks"] if b["keep_tokens"]] == [137, 96, 67]
    assert [b["tokens"] for b in info["blocks"]] == [197] * 3 + [138] * 3 + [97] * 3 + [68] * 3
    assert 2.8e9 <= info["macs"] <= 3.1e9
    assert 4.55e9 <= dense_macs(dvt) <= 4.65e9
    assert info["params"] - sum(p.numel() for p in build_model(spec).parameters()) == 3 * 241_250


def test_cls_attention_baseline_keeps_every_token_at_ratio_one():
    torch.manual_seed(0)
    dense, _ = resolve_model("vit-micro")
    dense = _peaky(dense)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        full = cls_attention_forward(dense, x, {2: 64, 4: 64, 6: 64})
        pruned = cls_attention_forward(dense, x, {2: 32, 4: 16, 6: 8})
        ref = dense(x)
    assert (full - ref).abs().max() <= 1e-5
    assert (pruned - ref).abs().max() > 1e-3


# ---- CLI end to end --------------------------------------------------------------------------------


def test_cli_compress_materialize_info_eval(tmp_path):
    runner = CliRunner()
    out = tmp_path / "dvt"
    r = runner.invoke(cli, ["compress", "dynamicvit", "vit-nano", "--data", "digits", "--keep-ratio", "0.7",
                            "--epochs", "2", "--freeze-epochs", "1", "--batch-size", "128", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["stages"] == [1, 2, 3] and result["keep_tokens"] == [11, 7, 5]
    metrics = json.loads((out / "metrics.json").read_text())
    epochs = metrics["epochs"]
    assert len(epochs) == 2 and [e["backbone_lr_scale"] for e in epochs] == [0.0, D.BACKBONE_LR_SCALE]
    for key in ("ce", "kl", "token", "ratio", "kept_stage1", "kept_stage2", "kept_stage3", "val_top1"):
        assert all(math.isfinite(e[key]) for e in epochs), key

    r = runner.invoke(cli, ["materialize", str(out / "compressed.safetensors"), "--keep-ratios", "0.5,0.9",
                            "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    variants = json.loads(r.stdout)["variants"]
    assert [v["keep_tokens"] for v in variants] == [[8, 4, 2], [14, 12, 11]]

    r = runner.invoke(cli, ["info", str(out / "materialized-keep0.50.safetensors"), "--json"])
    assert r.exit_code == 0, r.output
    assert [b["tokens"] for b in json.loads(r.stdout)["blocks"]] == [17, 9, 5, 3]

    r = runner.invoke(cli, ["eval", str(out / "compressed.safetensors"), "--data", "digits", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["top1"] == pytest.approx(epochs[-1]["val_top1"])

    # a DynamicViT artifact cannot be compressed again
    r = runner.invoke(cli, ["compress", "dynamicvit", str(out / "compressed.safetensors"), "--data", "digits",
                            "--out", str(tmp_path / "again")])
    assert r.exit_code == 2 and "already has token selection" in r.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--keep-ratio", "1.5"], "--keep-ratio must be in (0, 1]"),
        (["--keep-ratio", "0"], "--keep-ratio must be in (0, 1]"),
        (["--stages", "2,9"], "out of range [1, 3]"),
        (["--keep-ratio", "0.2"], "without patch tokens"),
    ],
)
def test_cli_bad_input_is_one_line_error(tmp_path, args, message):
    r = CliRunner().invoke(cli, ["compress", "dynamicvit", "vit-nano", "--data", "digits", "--epochs", "1",
                                 "--out", str(tmp_path / "x"), *args])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not (tmp_path / "x" / "compressed.safetensors").exists()


# ---- the ranking key (spec token_score) --------------------------------------------------------------


def test_token_score_is_recorded_validated_and_old_specs_load_with_logodds():
    from vitc.core.spec import ViTSpec, spec_from_model
    from vitc.core.token_select import TOKEN_SCORES

    assert D.TOKEN_SCORES == TOKEN_SCORES and D.TOKEN_SCORE == "logodds"  # the torch-free copy --help reads
    _, spec = _micro_with_predictors(0.7)
    old = spec.to_dict()
    del old["token_score"]  # a spec written before the field existed
    assert ViTSpec.from_dict(old).token_score == "logodds"
    keep = spec.replace(token_score="keep")
    assert ViTSpec.from_json(keep.to_json()) == keep
    model = build_model(keep)
    assert all(m.score == "keep" for m in model.blocks if isinstance(m, TokenSelect))
    assert spec_from_model(model, keep.name) == keep
    with pytest.raises(UsageError, match=r"spec token_score must be one of logodds, keep, got 'logit'") as e:
        ViTSpec.from_dict({**old, "token_score": "logit"})
    assert "\n" not in str(e.value)
    # vitc training attaches predictors that rank by the spec's key
    torch.manual_seed(0)
    dense, dspec = resolve_model("vit-nano")
    trained, tspec = attach_predictors(dense, dspec.replace(token_score="keep"), 0.7, [1, 2, 3])
    assert tspec.token_score == "keep" and {m.score for m in trained.blocks if isinstance(m, TokenSelect)} == {"keep"}
    assert DynamicViTSettings().token_score == "logodds"


def _saturated_pair() -> tuple[torch.nn.Module, torch.nn.Module, object, object]:
    """Two vit-nano token-selection models with the same weights, ranking by logodds and by keep; the
    stage-1 predictor is saturated: log p(keep) rounds to exactly 0.0 for every token in float32 (logit
    differences ~25) while the log-odds still differ."""
    torch.manual_seed(0)
    dense, spec = resolve_model("vit-nano")
    model, ts_spec = attach_predictors(dense, spec, 0.7, [1, 2, 3])
    model = _peaky(model)
    first = next(m for m in model.blocks if isinstance(m, TokenSelect))
    with torch.no_grad():
        first.predictor.out_conv[4].weight.mul_(20)
        first.predictor.out_conv[4].bias.copy_(torch.tensor([25.0, 0.0]))
    keep_spec = ts_spec.replace(token_score="keep")
    keep_model = build_model(keep_spec)
    keep_model.load_state_dict(model.state_dict())
    return model.eval(), keep_model.eval(), ts_spec, keep_spec


@torch.no_grad()
def test_saturated_predictor_the_keys_keep_different_tokens_and_each_model_follows_its_own(tmp_path):
    from vitc.core.artifacts import save_artifact
    from vitc.methods import load_any
    from vitc.methods.dynamicvit.forward import embed, gathered_forward
    from vitc.onnx.export import trace_to_onnx
    from vitc.onnx.selection import SelectionProbe

    logodds, keep, lo_spec, keep_spec = _saturated_pair()
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    # recorded: both survive an artifact round trip with their key
    for model, spec, name in ((logodds, lo_spec, "lo"), (keep, keep_spec, "keep")):
        path = save_artifact(tmp_path / f"{name}.safetensors", spec, model.state_dict(), kind="dynamicvit",
                             meta={"keep_ratio": 0.7})
        loaded, art = load_any(path)
        assert art.spec.token_score == spec.token_score
        assert (loaded(x) - model(x)).abs().max() == 0

    sel = next(m for m in logodds.blocks if isinstance(m, TokenSelect))
    log_probs = sel.predictor(logodds.blocks[0](embed(logodds, x))[:, 1:])
    lp_keep, odds = log_probs[..., 0], log_probs[..., 0] - log_probs[..., 1]
    assert bool((lp_keep == 0.0).all()) and odds.std(dim=1).min() > 0.1  # saturated, but the odds still differ
    k = sel.num_keep

    def kept(idx: torch.Tensor) -> list[set[int]]:
        return [set(row.tolist()) for row in idx]

    lo_logits, lo_idx = gathered_forward(logodds, x)
    keep_logits, keep_idx = gathered_forward(keep, x)
    # logodds: exactly the k largest log-odds (no ties); keep: k tokens tied at the top of log p(keep)
    assert kept(lo_idx[0]) == kept(odds.topk(k, dim=1).indices)
    assert all(bool((lp_keep[b, list(s)] == lp_keep[b].max()).all()) for b, s in enumerate(kept(keep_idx[0])))
    assert kept(keep_idx[0]) != kept(lo_idx[0]) and (keep_logits - lo_logits).abs().max() > 1e-3
    # the training forward's topk decisions follow the same key (strict for logodds)
    masked = masked_forward(logodds, x, decide="topk")
    assert [set(torch.nonzero(row).flatten().tolist()) for row in masked.keep_masks[0]] == kept(lo_idx[0])
    assert (masked.logits - lo_logits).abs().max() <= 1e-5
    masked_keep = masked_forward(keep, x, decide="topk").keep_masks[0]
    assert all(bool((lp_keep[b][row > 0] == 0.0).all()) for b, row in enumerate(masked_keep))

    # ONNX: each export ranks by its model's key. Under logodds ONNX Runtime keeps PyTorch's tokens; under
    # keep it breaks the ties its own way (lowest index first), a valid top-k of log p(keep) that need
    # not be PyTorch's — why vitc ranks its own models by the log-odds.
    for model, spec, logits, idx in ((logodds, lo_spec, lo_logits, lo_idx), (keep, keep_spec, keep_logits, keep_idx)):
        probe = SelectionProbe(trace_to_onnx(model, spec), spec.num_patches, ["CPUExecutionProvider"], threads=1)
        out, onnx_idx = probe(x.numpy())
        ref, _ = gathered_forward(model, x, [torch.from_numpy(i) for i in onnx_idx])
        assert abs(out - ref.numpy()).max() <= 1e-4  # the ONNX computes its model on the tokens it keeps
        first_kept = kept(torch.from_numpy(onnx_idx[0]))
        if spec.token_score == "logodds":
            assert first_kept == kept(idx[0]) and abs(out - logits.numpy()).max() <= 1e-4
        else:
            assert all(bool((lp_keep[b, list(s)] == 0.0).all()) for b, s in enumerate(first_kept))
            assert first_kept != kept(lo_idx[0])
