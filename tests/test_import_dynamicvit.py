"""``vitc import dynamicvit``: checkpoints in the official DynamicViT layout (written here from a vitc model
under the official key names; no official code is vendored) become dynamicvit artifacts that reproduce
the source ranked by the official key, and that materialize, export, verify and evaluate; checkpoints
that do not fit are one line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import one_error_line

from vitc.cli import cli
from vitc.core.artifacts import load_artifact
from vitc.core.models import resolve_model, resolve_spec
from vitc.core.token_select import TokenSelect
from vitc.methods import load_any
from vitc.methods.dynamicvit.compress import attach_predictors, resolve_stages, with_token_selection
from vitc.methods.dynamicvit.forward import gathered_forward
from vitc.methods.dynamicvit.official import expected_shapes, official_names

# The official PredictorLG (models/dyvit.py): in_conv = LayerNorm, Linear, GELU;
# out_conv = Linear, GELU, Linear, GELU, Linear, LogSoftmax.
OFFICIAL_PREDICTOR_KEYS = [f"{part}.{i}.{w}" for part, i in [("in_conv", 0), ("in_conv", 1), ("out_conv", 0),
                                                            ("out_conv", 2), ("out_conv", 4)] for w in ("weight", "bias")]
# VisionTransformerDiffPruning's own parameters besides blocks and predictors (DeiT: no pre_logits)
OFFICIAL_TOP_KEYS = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight",
                     "norm.bias", "head.weight", "head.bias"}


def _source(seed: int = 0) -> tuple[torch.nn.Module, object]:
    """A vitc DynamicViT vit-nano (predictors before blocks 1, 2, 3), weights spread so scores differ."""
    torch.manual_seed(seed)
    dense, spec = resolve_model("vit-nano")
    model, ts_spec = attach_predictors(dense, spec, 0.7, resolve_stages(spec, None))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 or name.endswith(("cls_token", "pos_embed")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)
    return model.eval(), ts_spec


def official_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of the official model with these weights: backbone block b under blocks.b, the
    predictor of stage k under score_predictor.k (written from the official layout, not from vitc's map)."""
    state = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("blocks.")}
    block = stage = 0
    for module in model.blocks:
        if isinstance(module, TokenSelect):
            state.update({f"score_predictor.{stage}.{k}": v.clone() for k, v in module.predictor.state_dict().items()})
            stage += 1
        else:
            state.update({f"blocks.{block}.{k}": v.clone() for k, v in module.state_dict().items()})
            block += 1
    return state


def official_eval_forward(sd: dict[str, torch.Tensor], x: torch.Tensor, pruning_loc: list[int], counts: list[int],
                          heads: int, patch: int, depth: int) -> torch.Tensor:
    """The official ``VisionTransformerDiffPruning.forward`` in eval mode, re-derived from its description
    (research notes; no official code): explicit attention, predictors on patch tokens with the global
    half averaged over the surviving tokens, ``argsort(log p(keep), descending)[:, :k]``, CLS at index 0,
    ``batch_index_select``; logits from the class token after the final norm."""
    F = torch.nn.functional

    def ln(t: torch.Tensor, p: str) -> torch.Tensor:
        return F.layer_norm(t, t.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], 1e-6)

    def lin(t: torch.Tensor, p: str) -> torch.Tensor:
        return F.linear(t, sd[p + ".weight"], sd[p + ".bias"])

    b = x.shape[0]
    h = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch).flatten(2).transpose(1, 2)
    h = torch.cat([sd["cls_token"].expand(b, -1, -1), h], dim=1) + sd["pos_embed"]
    stage = 0
    for i in range(depth):
        if i in pruning_loc:
            pred = f"score_predictor.{stage}"
            z = F.gelu(lin(ln(h[:, 1:], f"{pred}.in_conv.0"), f"{pred}.in_conv.1"))
            half = z.shape[-1] // 2
            z = torch.cat([z[..., :half], z[..., half:].mean(dim=1, keepdim=True).expand(-1, z.shape[1], -1)], dim=-1)
            z = F.gelu(lin(F.gelu(lin(z, f"{pred}.out_conv.0")), f"{pred}.out_conv.2"))
            score = F.log_softmax(lin(z, f"{pred}.out_conv.4"), dim=-1)[:, :, 0]
            keep = torch.argsort(score, dim=1, descending=True)[:, : counts[stage]]
            policy = torch.cat([torch.zeros(b, 1, dtype=keep.dtype), keep + 1], dim=1)
            h = h.gather(1, policy.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
            stage += 1
        n, c = h.shape[1], h.shape[2]
        qkv = lin(ln(h, f"blocks.{i}.norm1"), f"blocks.{i}.attn.qkv").reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = ((q @ k.transpose(-2, -1)) * (c // heads) ** -0.5).softmax(dim=-1)
        h = h + lin((attn @ v).transpose(1, 2).reshape(b, n, c), f"blocks.{i}.attn.proj")
        h = h + lin(F.gelu(lin(ln(h, f"blocks.{i}.norm2"), f"blocks.{i}.mlp.fc1")), f"blocks.{i}.mlp.fc2")
    return lin(ln(h, "norm")[:, 0], "head")


def _with_official_key(model: torch.nn.Module) -> torch.nn.Module:
    for m in model.blocks:
        if isinstance(m, TokenSelect):
            m.score = "keep"
    return model


def _import(runner: CliRunner, ckpt: Path, out: Path, *extra: str) -> object:
    return runner.invoke(cli, ["import", "dynamicvit", str(ckpt), "--model", "vit-nano", "--keep-ratio", "0.7",
                               "--out", str(out), *extra])


def test_vitc_predictor_has_the_official_layout_and_keys_map_one_to_one():
    model, _ = _source()
    state = official_state(model)
    assert {k for k in state if not k.startswith(("blocks.", "score_predictor."))} == OFFICIAL_TOP_KEYS
    for k in range(3):
        assert sorted(n[len(f"score_predictor.{k}."):] for n in state if n.startswith(f"score_predictor.{k}.")) \
            == sorted(OFFICIAL_PREDICTOR_KEYS)
    # DeiT-S with the official pruning_loc 3, 6, 9 (vitc's default stages), shapes only (meta device)
    dense = resolve_spec("deit_small_patch16_224")
    spec = with_token_selection(dense, 0.7, resolve_stages(dense, None))
    shapes = expected_shapes(spec)
    names = official_names(spec, list(shapes))
    assert len(set(names.values())) == len(names)  # one to one
    assert names["blocks.3.predictor.in_conv.0.weight"] == "score_predictor.0.in_conv.0.weight"
    assert names["blocks.4.norm1.weight"] == "blocks.3.norm1.weight"
    assert names["blocks.11.predictor.out_conv.4.bias"] == "score_predictor.2.out_conv.4.bias"
    assert names["blocks.14.mlp.fc2.bias"] == "blocks.11.mlp.fc2.bias"
    assert names["cls_token"] == "cls_token" and names["head.weight"] == "head.weight"
    assert shapes["blocks.3.predictor.in_conv.1.weight"] == (384, 384)
    assert [shapes[f"blocks.3.predictor.out_conv.{i}.weight"] for i in (0, 2, 4)] == [(192, 384), (96, 192), (2, 96)]
    assert {n for n in names.values() if n.startswith("score_predictor.")} == {
        f"score_predictor.{k}.{key}" for k in range(3) for key in OFFICIAL_PREDICTOR_KEYS}


@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "under-model"])
def test_imported_checkpoint_reproduces_the_source_ranked_by_the_official_key(tmp_path, wrapped):
    source, _ = _source()
    state = official_state(source)
    if wrapped:  # what the official utils.save_model writes (args is an argparse.Namespace)
        obj = {"model": state, "optimizer": {"state": {}, "param_groups": []}, "epoch": 29, "scaler": {"scale": 1.0},
               "args": argparse.Namespace(model="deit-s", base_rate=0.7, lr=1e-3, output_dir="logs/x"),
               "best": 79.3, "best_ema": 0.0}
    else:
        obj = state
    ckpt, out = tmp_path / "checkpoint-29.pth", tmp_path / "imported.safetensors"
    torch.save(obj, ckpt)
    r = _import(CliRunner(), ckpt, out, "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["wrapper"] == ("model" if wrapped else None) and summary["token_score"] == "keep"
    assert summary["stages"] == [1, 2, 3] and summary["keep_tokens"] == [11, 7, 5]

    art = load_artifact(out)
    assert art.kind == "dynamicvit" and art.spec.token_score == "keep" and art.meta["keep_ratio"] == 0.7
    assert art.meta["imported"]["sha256"] == summary["sha256"] and art.meta["provenance"]["step"] == "import dynamicvit"
    assert art.meta["provenance"]["settings"]["model"] == "vit-nano" and art.meta["origin"]["name"] == "vit-nano"

    imported, _ = load_any(out)
    reference = _with_official_key(source)
    x = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, got_idx = gathered_forward(imported, x)
        want, want_idx = gathered_forward(reference, x)
    assert (got - want).abs().max() <= 1e-5
    for a, b in zip(got_idx, want_idx):
        assert torch.equal(a, b)
    # and the official eval forward, computed from the checkpoint itself, gives the same logits
    with torch.no_grad():
        official = official_eval_forward(state, x, [1, 2, 3], [11, 7, 5], heads=2, patch=4, depth=4)
    assert (got - official).abs().max() <= 1e-5
    with torch.no_grad():  # the comparison can fail: ranked by the other end of the predictor, it does
        flipped = {k: (-v if k.endswith("out_conv.4.weight") else v) for k, v in state.items()}
        assert (official_eval_forward(flipped, x, [1, 2, 3], [11, 7, 5], heads=2, patch=4, depth=4) - got).abs().max() > 1e-3


def test_imported_artifact_materializes_exports_verifies_and_evaluates(tmp_path):
    source, _ = _source(1)
    ckpt, art = tmp_path / "ck.pth", tmp_path / "imported.safetensors"
    torch.save({"model": official_state(source)}, ckpt)
    runner = CliRunner()
    assert _import(runner, ckpt, art).exit_code == 0

    r = runner.invoke(cli, ["materialize", str(art), "--keep-ratios", "0.5,0.7", "--out", str(tmp_path / "m"), "--json"])
    assert r.exit_code == 0, r.output
    variants = json.loads(r.stdout)["variants"]
    assert [v["keep_tokens"] for v in variants] == [[8, 4, 2], [11, 7, 5]]
    assert load_artifact(variants[1]["artifact"]).spec.token_score == "keep"  # the key travels with the model

    r = runner.invoke(cli, ["export", str(art), "--out", str(tmp_path / "m.onnx"), "--json"])  # + parity check
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["verify", str(tmp_path / "m.onnx"), "--against", str(art), "--data", "digits", "--json"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["eval", str(art), "--data", "digits", "--json"])
    assert r.exit_code == 0, r.output
    assert 0.0 <= json.loads(r.stdout)["top1"] <= 100.0


def _mangle(state: dict[str, torch.Tensor], how: str) -> dict[str, torch.Tensor]:
    state = dict(state)
    if how == "missing":
        del state["blocks.2.mlp.fc1.bias"]
    elif how == "shape":
        state["score_predictor.1.out_conv.2.weight"] = torch.zeros(7, 16)
    elif how == "unexpected":
        state["pre_logits.fc.weight"] = torch.zeros(32, 32)
    elif how == "plain-deit":
        state = {k: v for k, v in state.items() if not k.startswith("score_predictor.")}
    elif how == "two-predictors":
        state = {k: v for k, v in state.items() if not k.startswith("score_predictor.2.")}
    return state


@pytest.mark.parametrize(("how", "model", "message"), [
    ("missing", "vit-nano", "does not fit vit-nano with predictors before blocks 1,2,3: blocks.2.mlp.fc1.bias is missing"),
    ("shape", "vit-nano", "score_predictor.1.out_conv.2.weight has shape [7, 16], expected [8, 16]"),
    ("unexpected", "vit-nano", "unexpected key pre_logits.fc.weight"),
    ("plain-deit", "vit-nano", "has no score_predictor.* weights: not a DynamicViT checkpoint"),
    ("two-predictors", "vit-nano", "has 2 score predictors (score_predictor.0-1) but vit-nano with predictors "
                                   "before blocks 1,2,3 needs 3"),
    ("none", "vit-micro", "does not fit vit-micro with predictors before blocks 2,4,6: cls_token has shape [1, 1, 32], "
                          "expected [1, 1, 64]"),
])
def test_a_checkpoint_that_does_not_fit_is_one_line_naming_the_first_mismatch(tmp_path, how, model, message):
    source, _ = _source()
    ckpt, out = tmp_path / "ck.pth", tmp_path / "imported.safetensors"
    torch.save({"model": _mangle(official_state(source), how)}, ckpt)
    r = CliRunner().invoke(cli, ["import", "dynamicvit", str(ckpt), "--model", model, "--keep-ratio", "0.7",
                                 "--out", str(out)])
    assert r.exit_code == 2
    assert message in one_error_line(r.output)
    assert not out.exists() and not list(tmp_path.glob(".imported*"))


class _Payload:
    """A pickled object whose loading would run code."""

    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_pickled_code_and_bad_options_are_refused_with_one_line(tmp_path):
    source, _ = _source()
    runner = CliRunner()
    ckpt, out = tmp_path / "evil.pth", tmp_path / "imported.safetensors"
    torch.save({"model": official_state(source), "args": _Payload()}, ckpt)
    r = _import(runner, ckpt, out)
    assert r.exit_code == 2 and "was refused: not a plain-weights checkpoint" in one_error_line(r.output)
    assert "pickled code ran" not in r.output and not out.exists()

    good = tmp_path / "ck.pth"
    torch.save(official_state(source), good)
    for args, text in [(["--keep-ratio", "0"], "--keep-ratio must be in (0, 1]"),
                       (["--stages", "3,2,1"], "strictly increasing"),
                       (["--token-score", "logodds", "--stages", "1,2,9"], "out of range [1, 3]")]:
        r = runner.invoke(cli, ["import", "dynamicvit", str(good), "--model", "vit-nano", "--keep-ratio", "0.7",
                                "--out", str(out), *args])
        assert r.exit_code == 2 and text in one_error_line(r.output), r.output
    r = runner.invoke(cli, ["import", "dynamicvit", str(tmp_path / "nope.pth"), "--model", "vit-nano",
                            "--keep-ratio", "0.7", "--out", str(out)])
    assert r.exit_code == 2 and "no such checkpoint" in one_error_line(r.output)
    assert not out.exists()


def test_imported_with_vitc_key_ranks_by_log_odds(tmp_path):
    source, _ = _source()
    ckpt, out = tmp_path / "ck.pth", tmp_path / "imported.safetensors"
    torch.save(official_state(source), ckpt)
    r = _import(CliRunner(), ckpt, out, "--token-score", "logodds")
    assert r.exit_code == 0, r.output
    imported, art = load_any(out)
    assert art.spec.token_score == "logodds"
    assert all(m.score == "logodds" for m in imported.blocks if isinstance(m, TokenSelect))
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (imported(x) - source(x)).abs().max() <= 1e-5  # the vitc source ranks by log-odds too
