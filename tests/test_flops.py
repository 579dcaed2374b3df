"""Analytic MACs: the published DeiT figures, `vitc info`, and a profiler cross-check."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from torch.utils.flop_counter import FlopCounterMode

from vitc.cli import cli
from vitc.core.flops import model_macs, per_block_macs, predictor_macs
from vitc.core.models import SMALL_CONFIGS, resolve_spec
from vitc.core.spec import BlockSpec, ViTSpec, build_model
from vitc.core.summary import count_params


@pytest.mark.parametrize(
    "name,gmacs,mparams",
    [("deit_tiny_patch16_224", 1.25, 5.72), ("deit_small_patch16_224", 4.60, 22.05), ("deit_base_patch16_224", 17.56, 86.57)],
)
def test_deit_macs_and_params(name: str, gmacs: float, mparams: float) -> None:
    spec = resolve_spec(name)
    assert model_macs(spec) / 1e9 == pytest.approx(gmacs, rel=0.01)
    assert round(count_params(spec) / 1e6, 2) == mparams


def test_info_json_deit_small() -> None:
    result = CliRunner().invoke(cli, ["info", "deit_small_patch16_224", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["macs"] == pytest.approx(4.60e9, rel=0.01)
    assert round(info["params"] / 1e6, 2) == 22.05
    assert len(info["blocks"]) == 12 and info["blocks"][0]["tokens"] == 197
    assert sum(b["macs"] for b in info["blocks"]) < info["macs"]  # + patch embedding and head


def test_info_human_readable_artifact(nano_artifact) -> None:
    result = CliRunner().invoke(cli, ["info", str(nano_artifact)])
    assert result.exit_code == 0, result.output
    assert "vit-nano (model)" in result.stdout and "MACs" in result.stdout


def _micro(**changes: object) -> ViTSpec:
    return SMALL_CONFIGS["vit-micro"].replace(**changes)


CROSS_CHECK = {
    "dense": _micro(),
    "dynamicvit-keep-tokens": _micro(blocks=[BlockSpec(4, 16, 256, {2: 48, 4: 24, 6: 12}.get(i)) for i in range(8)]),
    "uvc-heads-mlp": _micro(blocks=[BlockSpec(h, 16, m) for h, m in [(4, 256), (3, 200), (1, 17), (2, 256), (4, 64), (2, 100), (1, 1)]]),
    "distilled": _micro(distilled=True),
    "reg-tokens-gap": _micro(reg_tokens=4, class_token=False, global_pool="avg", fc_norm=True, no_embed_class=True),
    "patch8-noncubic": _micro(img_size=48, patch_size=8, num_classes=7),
}


@pytest.mark.parametrize("key", list(CROSS_CHECK))
def test_macs_match_torch_flop_counter(key: str) -> None:
    """flop_counter counts 2·MACs of every matmul/conv; with fused attention off QKᵀ and attn·V are matmuls."""
    spec = CROSS_CHECK[key]
    model = build_model(spec, init_weights=True)
    for blk in model.blocks:
        if hasattr(blk, "attn"):
            blk.attn.fused_attn = False
    batch = 2
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.randn(batch, *spec.input_shape))
    assert counter.get_total_flops() == 2 * batch * model_macs(spec)


def test_per_block_terms() -> None:
    spec = CROSS_CHECK["dynamicvit-keep-tokens"]
    rows = per_block_macs(spec)
    assert rows[0].predictor == 0 and rows[2].predictor == predictor_macs(64, 64)
    n = 48 + 1  # kept patch tokens + class token entering block 2
    assert rows[2].qk == rows[2].av == n * n * 64
    assert rows[2].fc1 == rows[2].fc2 == n * 64 * 256
