"""UVC: the resource model against analytic MACs, the primal–dual updates, skip gates, slicing
parity, --prune-v export, input errors, and the CLI end to end (compress → eval → materialize →
resume)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import one_error_line

from vitc.cli import cli
from vitc.core.artifacts import load_artifact, save_model
from vitc.core.errors import CheckFailed
from vitc.core.flops import model_macs
from vitc.core.models import SMALL_CONFIGS, resolve_model
from vitc.core.spec import build_model
from vitc.methods.uvc.compress import materialize_uvc, model_from_artifact, save_uvc
from vitc.methods.uvc.model import BlockMasks, UVCViT, apply_masks, masks_from_counts
from vitc.methods.uvc.objectives import UVCSearch, UVCSettings, distillation_loss, z_lr_at
from vitc.methods.uvc.slice import sliced_spec
from vitc.train.distributed import DistInfo
from vitc.train.loop import StepContext, TrainSettings, default_param_groups


def _peaky(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Matrices (and tokens) redrawn with std 0.15: distinct unit norms and inputs that matter, so
    rankings and parity checks are not trivially satisfied by timm's tiny 0.02 init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)
    return model.eval()


def _random_counts(spec, seed: int, v: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    s = torch.stack([torch.tensor([float(torch.randint(0, b.heads, (1,), generator=g)) - 0.5,
                                   float(torch.randint(0, b.mlp_hidden, (1,), generator=g)) - 0.3])
                     for b in spec.blocks]).clamp(min=0)
    if not v:
        return s, None
    hmax = max(b.heads for b in spec.blocks)
    return s, torch.randint(0, spec.blocks[0].head_dim, (spec.depth, hmax), generator=g).float()


def _gated(name: str, seed: int, skip: tuple[int, ...]) -> tuple[UVCViT, object]:
    vit, spec = resolve_model(name)
    net = UVCViT(_peaky(vit, seed), gate_mode="hard")
    for i in skip:
        net.gate_logits.data[i] = torch.tensor([0.3, -0.2])  # skip > keep
    return net, spec


def _uvc_artifact(path: Path, name: str = "vit-micro", seed: int = 0, skip: tuple[int, ...] = (1, 4),
                  v: bool = False) -> Path:
    net, spec = _gated(name, seed, skip)
    s, r = _random_counts(spec, seed, v)
    masks = masks_from_counts(net.vit, spec, s, r)
    apply_masks(net.vit, masks)
    return save_uvc(path, net, spec, masks, {"method": "uvc"})


def _ctx(step: int, epoch: int = 0, lr: float = 1e-3) -> StepContext:
    return StepContext(epoch, step, step, 10, 100, lr, torch.device("cpu"), DistInfo())


# ---- resource model --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_R_equals_analytic_macs_of_the_materialized_spec(seed):
    net, spec = _gated("vit-micro", seed, skip=tuple(i for i in range(8) if (i + seed) % 3 == 0))
    s, _ = _random_counts(spec, seed)
    search = UVCSearch(spec, net.vit, UVCSettings(budget=0.5), 0.1, epochs=10, seed=0)
    kept = net.kept_blocks()
    R = float(search._ratio(net, s, search.r, torch.tensor(kept, dtype=torch.float32)))
    masks = masks_from_counts(net.vit, spec, s, None)
    exact = model_macs(sliced_spec(spec, masks, kept)) / model_macs(spec)
    assert abs(R - exact) <= 0.01 * exact
    assert pytest.approx(search.resource.masked_ratio(masks, kept), rel=1e-6) == R
    assert exact < 1.0


def test_R_is_one_for_the_dense_model_and_counts_heads_as_macs():
    spec = SMALL_CONFIGS["vit-micro"]
    search = UVCSearch(spec, torch.nn.Identity(), UVCSettings(budget=0.5), 0.1, epochs=10, seed=0)
    ones = torch.ones(spec.depth)
    zero = torch.zeros(spec.depth)
    assert float(search.resource.ratio(zero, zero, zero, ones)) == pytest.approx(1.0, abs=1e-6)
    # all blocks skipped: only the patch embedding and the head remain
    dense = model_macs(spec)
    rest = (spec.num_patches * 3 * 16 * 64 + 64 * 10) / dense
    assert float(search.resource.ratio(zero, zero, zero, zero)) == pytest.approx(rest, rel=1e-5)


def test_z_lr_follows_the_papers_schedule_not_the_dead_official_one():
    sched = (1.0, 5.0, 9.0, 13.0, 17.0)
    got = [z_lr_at(sched, e, 30) for e in range(30)]  # 0-based epochs; the paper counts from 1
    assert got[:5] == [1.0] * 5 and got[5] == 5.0 and got[11] == 9.0 and got[17] == 13.0 and got[23:] == [17.0] * 7


def test_distillation_loss_is_deits_soft_kd():
    logits = torch.randn(4, 10)
    targets = torch.arange(4)
    loss, terms = distillation_loss(logits, logits, targets, alpha=0.1, tau=1.0, label_smoothing=0.0)
    assert float(terms["kd"]) == pytest.approx(0.0, abs=1e-6)
    assert float(loss) == pytest.approx(0.9 * float(torch.nn.functional.cross_entropy(logits, targets)), rel=1e-6)


# ---- the primal-dual step ----------------------------------------------------------------------------


def _search_steps(budget: float, steps: int, prune_v: bool = False, count_lr: float = 0.2, gate_interval: int = 2):
    """A few real stage-1 steps on vit-nano (random images): AdamW on the KD loss, then UVC's update.
    The gate logits are left out of AdamW here, so only UVC's gate optimiser moves them."""
    torch.manual_seed(0)
    vit, spec = resolve_model("vit-nano")
    net = UVCViT(vit)
    settings = UVCSettings(budget=budget, prune_v=prune_v, gate_warmup_epochs=0, count_lr=count_lr,
                           z_lr_schedule=(10.0,), gate_interval=gate_interval)
    search = UVCSearch(spec, build_model(spec, init_weights=True).eval(), settings, 0.1, epochs=5, seed=0)
    search.setup(net, torch.device("cpu"))
    opt = torch.optim.AdamW(default_param_groups(net, 0.05, skip={"gate_logits"}), lr=1e-3)
    search.on_epoch_start(net, 0)
    x, y = torch.randn(8, *spec.input_shape), torch.randint(0, 10, (8,))
    zs, gate_moved = [float(search.z)], []
    for step in range(steps):
        loss, _ = search.loss(net, x, y, _ctx(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        before = net.gate_logits.detach().clone()
        search.after_step(net, _ctx(step))
        gate_moved.append(not torch.equal(before, net.gate_logits.detach()))
        zs.append(float(search.z))
    return net, spec, search, zs, gate_moved


def test_z_grows_while_R_exceeds_the_budget_and_the_counts_respond():
    net, spec, search, zs, _ = _search_steps(budget=0.3, steps=12)
    assert all(b > a for a, b in zip(zs, zs[1:])), zs  # R > 0.3 throughout: z strictly increases
    assert float(search.s.max()) > 0  # counts moved off zero...
    masks = search.masks(net)
    assert search.resource.masked_ratio(masks, [True] * spec.depth) < 1.0  # ...and remove real MACs
    assert float(search.y.min()) >= 1e-3  # duals never go negative


def test_z_shrinks_to_zero_when_the_budget_is_met():
    _, _, search, zs, _ = _search_steps(budget=1.0, steps=4)
    assert zs[-1] == 0.0 and zs[-1] < zs[0]


def test_gates_move_only_every_gate_interval():
    *_, moved = _search_steps(budget=0.3, steps=6)
    # interval 2: the official rule steps when (global_step + 1) % 2 == 0, global_step = step + 1
    assert moved == [True, False, True, False, True, False]


def test_gate_interval_one_steps_the_gates_every_step():
    # the official accumulation weight (global_step mod interval) would be 0 on every step here
    net, *_, moved = _search_steps(budget=0.3, steps=3, gate_interval=1)
    assert moved == [True, True, True]
    start = torch.tensor([-1.0, 1.0]).expand_as(net.gate_logits)  # the logits' initial value
    # weight decay alone (lr 0.1, 1e-4, momentum 0.9) would shrink them by < 6e-5 in three steps
    assert (net.gate_logits.detach() - start).abs().max() > 1e-4


def test_the_state_handed_to_stage_2_is_the_largest_R_within_budget():
    torch.manual_seed(0)
    vit, spec = resolve_model("vit-nano")
    net = UVCViT(vit)
    search = UVCSearch(spec, vit, UVCSettings(budget=0.5, gate_warmup_epochs=2), 0.1, epochs=10, seed=0)
    search._consider(net, 0.4, epoch=1, step=None)  # warm-up: never a candidate
    assert search.pick is None
    for ratio, epoch, step, expect in [(0.62, 2, 3, None), (0.48, 2, 4, (3, 4)), (0.33, 2, 5, (3, 4)),
                                       (0.49, 3, None, (4, None)), (0.49, 4, 7, (4, None)), (0.49, 5, None, (6, None))]:
        search._consider(net, ratio, epoch=epoch, step=step)
        got = None if search.pick is None else (search.pick["epoch"], search.pick["step"])
        assert got == expect, (ratio, epoch, step)
    assert search.pick is not None and search.pick["R"] == 0.49
    assert set(search.pick["model"]) == set(net.state_dict()) and len(search.pick["masks"]) == spec.depth


# ---- skip gates -----------------------------------------------------------------------------------------


def test_a_skipped_block_is_an_identity():
    net, spec = _gated("vit-nano", 0, skip=tuple(range(4)))
    x = torch.randn(3, *spec.input_shape)
    vit = net.vit
    expected = vit.forward_head(vit.norm(vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))))
    assert torch.equal(net(x), expected)
    # the soft gate with (skip, keep) weights (1, 0) is the same identity
    net.gate_logits.data[:] = torch.tensor([60.0, -60.0])
    net.gate_mode = "soft"
    assert torch.allclose(net(x), expected, atol=1e-6)


def test_fixed_warmup_gates_mix_half_and_half():
    net, spec = _gated("vit-nano", 0, skip=())
    net.gate_mode = "fixed"
    x = torch.randn(2, *spec.input_shape)
    vit = net.vit
    h = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
    for blk in vit.blocks:
        h = 0.5 * blk(h) + 0.5 * h
    assert torch.allclose(net(x), vit.forward_head(vit.norm(h)), atol=1e-6)


# ---- materialization -----------------------------------------------------------------------------------


def test_sliced_model_equals_the_masked_model(tmp_path):
    art = load_artifact(_uvc_artifact(tmp_path / "c.safetensors", skip=(1, 4)))
    model, spec, check = materialize_uvc(art)
    assert check["max_abs_diff"] <= 1e-5
    masks = [BlockMasks(art.tensors[f"uvc.proj_mask.{i}"], art.tensors[f"uvc.mlp_mask.{i}"]) for i in range(8)]
    kept_idx = [i for i in range(8) if i not in (1, 4)]
    assert spec.depth == 6 and len(model.blocks) == 6
    for j, i in enumerate(kept_idx):
        heads, neurons = masks[i].heads_kept(16), masks[i].neurons_kept()
        assert (spec.blocks[j].heads, spec.blocks[j].head_dim, spec.blocks[j].mlp_hidden) == (heads, 16, neurons)
        assert model.blocks[j].attn.qkv.out_features == 3 * heads * 16
        assert model.blocks[j].attn.scale == pytest.approx(16 ** -0.5)
    x = torch.randn(5, *spec.input_shape)
    assert torch.allclose(model(x), model_from_artifact(art)(x), atol=1e-5)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in build_model(art.spec).parameters())


def test_materialize_refuses_to_write_a_model_that_differs(tmp_path, monkeypatch):
    import vitc.methods.uvc.compress as uvc
    from vitc.methods import materialize

    src = _uvc_artifact(tmp_path / "c.safetensors")
    real = uvc.sliced_state

    def corrupt(*args, **kwargs):
        state = real(*args, **kwargs)
        w = state["blocks.0.mlp.fc2.weight"]
        state["blocks.0.mlp.fc2.weight"] = w + 0.01 * torch.randn(w.shape, generator=torch.Generator().manual_seed(0))
        return state

    monkeypatch.setattr(uvc, "sliced_state", corrupt)
    out = tmp_path / "m.safetensors"
    with pytest.raises(CheckFailed, match="differs from the masked model"):
        materialize(src, out)
    assert not out.exists() and not list(tmp_path.glob(".m.safetensors*"))


def test_prune_v_learns_v_counts_and_the_result_materializes_and_exports(tmp_path):
    from vitc.checks.export import export_verified
    from vitc.methods import materialize

    net, spec, search, _, _ = _search_steps(budget=0.3, steps=6, prune_v=True, count_lr=1.0)
    assert float(search.r.max()) > 0  # V-channel counts learned
    masks = search.masks(net)
    kept = net.kept_blocks()
    alive_v = [m.v_channels_kept() for m in masks]
    assert any(v < m.heads_kept(16) * 16 for v, m in zip(alive_v, masks))  # channels pruned inside alive heads
    apply_masks(net.vit, masks)
    net.gate_mode = "hard"
    src = save_uvc(tmp_path / "c.safetensors", net, spec, masks, {"method": "uvc", "prune_v": True})
    summary = materialize(src, tmp_path / "m.safetensors")
    assert summary["max_abs_diff"] <= 1e-4
    # R counted the V channels; timm's Attention keeps alive heads' full V, so the real MACs are higher
    assert search.resource.masked_ratio(masks, kept) < summary["macs_after"] / summary["macs_before"]
    exported = export_verified(tmp_path / "m.safetensors", tmp_path / "m.onnx")
    assert exported["verify"]["passed"]


# ---- input errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("budget", ["0", "1.5", "-0.2"])
def test_budget_outside_0_1_is_a_one_line_usage_error(tmp_path, budget):
    res = CliRunner().invoke(cli, ["compress", "uvc", "vit-nano", "--data", "digits", "--budget", budget,
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert one_error_line(res.output) == f"error: --budget must be in (0, 1], got {float(budget)}"


def test_models_uvc_cannot_gate_are_refused_with_one_line(tmp_path):
    runner = CliRunner()
    args = ["--data", "digits", "--budget", "0.5", "--out", str(tmp_path / "o")]

    uvc_art = _uvc_artifact(tmp_path / "c.safetensors", name="vit-nano", skip=())
    res = runner.invoke(cli, ["compress", "uvc", str(uvc_art), *args])
    assert res.exit_code == 2 and "is a uvc artifact" in one_error_line(res.output)

    spec = SMALL_CONFIGS["vit-nano"]
    blocks = list(spec.blocks)
    blocks[2] = type(blocks[2])(blocks[2].heads, blocks[2].head_dim, blocks[2].mlp_hidden, keep_tokens=8)
    token_spec = spec.replace(blocks=blocks)
    token_art = save_model(tmp_path / "t.safetensors", build_model(token_spec, init_weights=True), token_spec)
    res = runner.invoke(cli, ["compress", "uvc", str(token_art), *args])
    assert res.exit_code == 2 and "token-selection" in one_error_line(res.output)

    res = runner.invoke(cli, ["compress", "uvc", "eva02_tiny_patch14_224", *args])
    assert res.exit_code == 2 and "unsupported model family Eva" in one_error_line(res.output)
    assert not (tmp_path / "o").exists()


def test_help_documents_units():
    res = CliRunner().invoke(cli, ["compress", "uvc", "--help"])
    assert res.exit_code == 0
    text = " ".join(res.output.split())  # click wraps the option help
    for phrase in ("--budget", "fraction of the dense model's", "--prune-v", "does not realise the V-channel MACs",
                   "--gate-interval", "official 50"):
        assert phrase in text


# ---- end to end ---------------------------------------------------------------------------------------------


def test_cli_compress_eval_materialize_and_resume(tmp_path, nano_artifact, monkeypatch):
    monkeypatch.setenv("VITC_PROGRESS", "0")
    runner = CliRunner()
    out = tmp_path / "uvc"
    # vit-nano has 2 heads per block: removing one everywhere gives R = 0.731, under the 0.75 budget
    args = ["compress", "uvc", str(nano_artifact), "--data", "digits", "--budget", "0.75", "--epochs", "4",
            "--gate-warmup-epochs", "1", "--z-lr-schedule", "100", "--count-lr", "1", "--out", str(out), "--json"]
    res = runner.invoke(cli, [*args, "--finetune-epochs", "1"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.index("{"):])
    assert summary["resource"] <= 0.75 and summary["macs_compressed"] <= 0.75 * summary["macs_dense"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["stage"] for r in metrics["epochs"]] == ["warmup", "search", "search", "search", "finetune"]
    for rec in metrics["epochs"]:
        for key in ("loss", "ce", "kd", "R", "blocks_kept", "heads_kept", "neurons_kept", "val_top1"):
            assert key in rec
    assert all("z" in r for r in metrics["epochs"][:4])
    assert metrics["epochs"][-1]["val_top1"] == summary["val_top1"]
    # the preset and every effective setting are recorded (clipping at 1 by default)
    meta = load_artifact(summary["artifact"]).meta
    for record in (metrics, meta):
        assert record["preset"] == "small-data"
        assert record["settings"]["max_grad_norm"] == 1.0 and record["settings"]["z_lr_schedule"] == [100.0]
    assert summary["preset"] == "small-data"

    res = runner.invoke(cli, ["eval", summary["artifact"], "--data", "digits", "--json"])
    assert res.exit_code == 0, res.output
    masked_top1 = json.loads(res.output[res.output.index("{"):])["top1"]
    assert masked_top1 == pytest.approx(summary["val_top1"], abs=1e-6)

    mat = tmp_path / "m.safetensors"
    res = runner.invoke(cli, ["materialize", summary["artifact"], "--out", str(mat), "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.output[res.output.index("{"):])
    assert m["macs_after"] == summary["macs_compressed"] <= 0.75 * m["macs_before"]
    assert m["params_after"] < m["params_before"] and m["max_abs_diff"] <= 1e-4
    res = runner.invoke(cli, ["eval", str(mat), "--data", "digits", "--json"])
    assert json.loads(res.output[res.output.index("{"):])["top1"] == pytest.approx(masked_top1, abs=0.3)

    # resume: stage 1 is complete and loads; stage 2 continues from its epoch-1 checkpoint
    res = runner.invoke(cli, [*args, "--finetune-epochs", "2", "--resume"])
    assert res.exit_code == 0, res.output
    resumed = json.loads((out / "metrics.json").read_text())["epochs"]
    assert [r["stage"] for r in resumed][-2:] == ["finetune", "finetune"]
    strip = lambda rec: {k: v for k, v in rec.items() if k != "seconds"}
    assert [strip(r) for r in resumed[:5]] == [strip(r) for r in metrics["epochs"]]


# ---- gradient clipping, presets and the official code's quirks -------------------------------------------


@pytest.mark.parametrize("preset", ["small-data", "paper", "official-code"])
def test_every_preset_clips_both_stages_at_1_and_0_turns_it_off(preset):
    from vitc.core.settings import cli_label, make

    label = cli_label(UVCSettings)
    s = make(UVCSettings, {"budget": 0.5, "preset": preset}, label)
    assert s.max_grad_norm == 1.0
    assert s.search_loop().max_grad_norm == 1.0 and s.finetune_loop().max_grad_norm == 1.0
    off = make(UVCSettings, {"budget": 0.5, "preset": preset, "max_grad_norm": 0.0}, label)
    assert off.max_grad_norm is None and off.search_loop().max_grad_norm is None
    assert off.finetune_loop().max_grad_norm is None
    assert off.prune_v == (preset != "small-data")  # r is always optimised by the released code


def test_imagenet_presets_follow_the_official_schedules():
    from vitc.core.settings import cli_label, make

    label = cli_label(UVCSettings)
    for preset in ("paper", "official-code"):
        s = make(UVCSettings, {"budget": 0.5, "preset": preset}, label)
        # stage 1: WarmupCosineSchedule to 0 over 500 steps of warm-up; stage 2: timm cosine to 1e-5
        assert (s.lr, s.search_loop().min_lr, s.finetune_lr, s.finetune_loop().min_lr) == (1e-4, 0.0, 5e-5, 1e-5)
        assert (s.gate_interval, s.dual_lr, s.z_lr_schedule, s.gate_warmup_epochs) == (50, 1e-4, (1, 5, 9, 13, 17), 5)
    quirks = ("z_lr_dynamic", "pin_at_upper_bound", "decay_all_params")
    official = make(UVCSettings, {"budget": 0.5, "preset": "official-code"}, label)
    paper = make(UVCSettings, {"budget": 0.5, "preset": "paper"}, label)
    small = make(UVCSettings, {"budget": 0.5}, label)
    assert [getattr(official, q) for q in quirks] == [False, True, True]
    assert [getattr(paper, q) for q in quirks] == [True, False, False]
    assert [getattr(small, q) for q in quirks] == [True, False, False]
    assert small.finetune_loop().min_lr == small.min_lr == 1e-5  # small-data: unchanged
    # an explicit value beats the preset's
    assert make(UVCSettings, {"budget": 0.5, "preset": "official-code", "pin_at_upper_bound": False},
                label).pin_at_upper_bound is False


class _Recording(UVCSearch):
    """UVCSearch that records, when its step begins, the global gradient norm and the gate gradient."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.norms: list[float] = []
        self.gate_seen: list[torch.Tensor] = []

    def after_step(self, model, ctx):
        grads = [p.grad.detach().flatten() for p in model.parameters() if p.grad is not None]
        self.norms.append(float(torch.cat(grads).norm()))
        self.gate_seen.append(model.gate_logits.grad.detach().clone())
        super().after_step(model, ctx)


def _search_fit(tmp_path: Path, max_grad_norm: float | None) -> _Recording:
    """Four real stage-1 steps on vit-nano through the shared loop (random images)."""
    from vitc.train.loop import fit

    torch.manual_seed(0)
    vit, spec = resolve_model("vit-nano")
    teacher = build_model(spec, init_weights=True).eval()
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, *spec.input_shape, generator=g),
                                          torch.randint(0, 10, (32,), generator=g))
    settings = UVCSettings(budget=0.3, epochs=1, gate_warmup_epochs=0, batch_size=8, gate_interval=1000,
                           gate_weight=0.0, max_grad_norm=max_grad_norm, device="cpu")
    search = _Recording(spec, teacher, settings, 0.1, epochs=1, seed=0)
    fit(UVCViT(vit), search, data, None, settings.search_loop(), tmp_path / str(max_grad_norm))
    return search


def test_the_gate_step_reads_the_clipped_gate_gradient(tmp_path):
    clipped = _search_fit(tmp_path, 1e-3)
    free = _search_fit(tmp_path, None)
    assert len(clipped.norms) == len(free.norms) == 4
    # the loop clipped every gradient before UVC's step ran ...
    assert all(n == pytest.approx(1e-3, rel=1e-4) for n in clipped.norms), clipped.norms
    assert all(n > 1e-2 for n in free.norms), free.norms
    # ... so the first step's gate gradient is the unclipped one scaled by the clip factor (same start)
    torch.testing.assert_close(clipped.gate_seen[0], free.gate_seen[0] * (1e-3 / free.norms[0]), rtol=1e-4, atol=1e-9)
    # and that clipped gradient is what the gate step accumulates: weight (global step mod interval),
    # the budget term switched off with gate_weight 0
    for i, (seen, acc) in enumerate(zip(clipped.gate_seen, clipped.gate_grads)):
        torch.testing.assert_close(acc, seen * (i + 1))


def test_quirk_z_lr_dynamic_off_keeps_eta_z_at_the_first_value():
    torch.manual_seed(0)
    vit, spec = resolve_model("vit-nano")
    teacher = build_model(spec, init_weights=True).eval()
    x, y = torch.randn(8, *spec.input_shape), torch.randint(0, 10, (8,))
    dz = {}
    for dynamic in (True, False):
        net = UVCViT(_peaky(resolve_model("vit-nano")[0], 0))
        settings = UVCSettings(budget=0.3, gate_warmup_epochs=0, z_lr_schedule=(1, 5, 9, 13, 17), z_lr_dynamic=dynamic)
        search = UVCSearch(spec, teacher, settings, 0.1, epochs=30, seed=0)
        search.setup(net, torch.device("cpu"))
        search.on_epoch_start(net, 20)  # 0-based epoch 20 of 30: the paper's fourth value
        assert search.z_lr == (13.0 if dynamic else 1.0)
        search.loss(net, x, y, _ctx(0, epoch=20))[0].backward()
        before = float(search.z)
        search.after_step(net, _ctx(0, epoch=20))
        dz[dynamic] = float(search.z) - before
    assert dz[False] > 0 and dz[True] == pytest.approx(13 * dz[False], rel=1e-5)


def test_quirk_pin_at_upper_bound_keeps_a_count_at_its_bound():
    from vitc.methods.uvc.objectives import _count_step

    upper = torch.tensor([[2.0, 4.0]])
    x_max = upper - 1 - 1e-8
    grad = torch.tensor([[1.0, 1.0]])  # both counts pushed down
    moved = {}
    for pin in (False, True):
        x = torch.tensor([[float(x_max[0, 0]), 1.5]])  # the head count at its bound ub - 1
        _count_step(x, grad, upper, lr=0.5, pin=pin)
        moved[pin] = x
    assert float(moved[True][0, 0]) == pytest.approx(float(x_max[0, 0]))  # pinned: never decreases again
    assert float(moved[False][0, 0]) == pytest.approx(float(x_max[0, 0]) - 0.5)
    assert float(moved[True][0, 1]) == float(moved[False][0, 1]) == pytest.approx(1.0)  # others move alike


def test_quirk_decay_all_params_decays_biases_norms_tokens_in_stage_1_only():
    from vitc.methods.uvc.objectives import UVCFinetune

    torch.manual_seed(0)
    vit, spec = resolve_model("vit-nano")
    net = UVCViT(vit)
    cfg = TrainSettings(weight_decay=0.05)
    norm = net.vit.blocks[0].norm1.weight
    for decay_all in (False, True):
        settings = UVCSettings(budget=0.5, decay_all_params=decay_all)
        groups = UVCSearch(spec, vit, settings, 0.1, epochs=10, seed=0).param_groups(net, cfg)
        decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
        one_d = [p for n, p in net.named_parameters() if p.ndim <= 1 or n.endswith(("cls_token", "pos_embed"))]
        assert id(net.gate_logits) in decayed  # the gate logits sit in the weight optimiser with decay, as officially
        assert all((id(p) in decayed) == decay_all for p in one_d if p is not net.gate_logits)
        # the effect: one AdamW step with zero gradients shrinks a LayerNorm weight only under the quirk
        with torch.no_grad():
            norm.fill_(1.0)
        opt = torch.optim.AdamW(groups, lr=0.1)
        for g in groups:
            for p in g["params"]:
                p.grad = torch.zeros_like(p)
        opt.step()
        assert float(norm.detach().mean()) == pytest.approx(1 - 0.1 * 0.05 if decay_all else 1.0)
        # stage 2 follows timm's rule under every preset (post_train.py's create_optimizer)
        tune = UVCFinetune(spec, vit, settings, 0.1, [], 0.5).param_groups(net, cfg)
        tune_decayed = {id(p) for g in tune if g["weight_decay"] > 0 for p in g["params"]}
        assert not any(id(p) in tune_decayed for p in one_d)


def test_help_shows_the_gradient_clip_default_and_the_presets():
    res = CliRunner().invoke(cli, ["compress", "uvc", "--help"])
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    clip = re.search(r"--max-grad-norm FLOAT (.*?)\[default: \(?([^)\]]+)\)?\]", text)
    assert clip is not None and clip.group(2) == "1", text
    assert "as the official code does" in clip.group(1) and "0 = off" in clip.group(1)
    assert "--preset [small-data|paper|official-code]" in text and "[default: small-data]" in text
