"""Spec ⇄ timm round trips (logit parity through an artifact) and refusal of unsupported families."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

from vitc.core.artifacts import load_model, save_model
from vitc.core.errors import UsageError
from vitc.core.models import SMALL_CONFIGS
from vitc.core.spec import BlockSpec, ViTSpec, build_model, spec_from_model

# (timm name, extra create_model kwargs, what the spec must show)
ROUND_TRIP = [
    ("deit_tiny_patch16_224", {}, dict(embed_dim=192, patch_size=16, img_size=224)),
    ("deit_small_patch16_224", {}, dict(embed_dim=384)),
    ("deit_base_patch16_224", {}, dict(embed_dim=768)),
    ("deit_tiny_distilled_patch16_224", {}, dict(distilled=True)),
    ("deit3_small_patch16_224", {}, dict(layer_scale=True)),
    ("vit_wee_patch16_reg1_gap_256", {}, dict(reg_tokens=1, global_pool="avg", img_size=256)),
    ("deit_tiny_patch16_224", dict(reg_tokens=4, class_token=False, global_pool="avg", no_embed_class=True, img_size=160),
     dict(reg_tokens=4, class_token=False, img_size=160)),
    ("vit_small_patch32_224", {}, dict(patch_size=32)),
]


@pytest.mark.parametrize("name,kwargs,expect", ROUND_TRIP, ids=[f"{n}{'+kw' if k else ''}" for n, k, _ in ROUND_TRIP])
def test_timm_round_trip_through_artifact(tmp_path: Path, name: str, kwargs: dict, expect: dict) -> None:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    spec = spec_from_model(model, name)
    for key, value in expect.items():
        assert getattr(spec, key) == value, key
    assert ViTSpec.from_json(spec.to_json()) == spec

    loaded, art = load_model(save_model(tmp_path / "m.safetensors", model, spec))
    assert art.spec == spec and type(loaded) is type(model)
    assert spec_from_model(loaded, name) == spec
    x = torch.randn(2 if spec.embed_dim < 768 else 1, *spec.input_shape)
    with torch.inference_mode():
        diff = (model(x) - loaded(x)).abs().max().item()
    assert diff <= 1e-5


def _micro(**changes: object) -> ViTSpec:
    return SMALL_CONFIGS["vit-micro"].replace(**changes)


COMPRESSED = {
    # UVC-style: fewer heads of the same size, narrower MLPs, a block with a single neuron
    "uvc": _micro(blocks=[BlockSpec(h, 16, m) for h, m in [(4, 256), (3, 200), (1, 17), (2, 256), (4, 64), (2, 100), (1, 1), (4, 256)]]),
    # the first block pruned to a head count that does not divide embed_dim (timm's default blocks need it)
    "uvc-first-block": _micro(blocks=[BlockSpec(3, 16, 100), BlockSpec(4, 16, 256), BlockSpec(1, 16, 8)]),
    # DynamicViT-style: token selection before blocks 2, 4, 6
    "dynamicvit": _micro(blocks=[BlockSpec(4, 16, 256, {2: 48, 4: 24, 6: 12}.get(i)) for i in range(8)]),
    "no-bias": _micro(qkv_bias=False, proj_bias=False, blocks=[BlockSpec(2, 16, 100)] * 2),
    "distilled+layerscale": _micro(distilled=True, layer_scale=True),
}


@pytest.mark.parametrize("key", list(COMPRESSED))
def test_compressed_specs_round_trip(tmp_path: Path, key: str) -> None:
    spec = COMPRESSED[key]
    torch.manual_seed(0)
    model = build_model(spec, init_weights=True)
    assert spec_from_model(model, spec.name) == spec
    loaded, _ = load_model(save_model(tmp_path / "m.safetensors", model, spec))
    x = torch.randn(3, *spec.input_shape)
    with torch.inference_mode():
        assert (model(x) - loaded(x)).abs().max().item() <= 1e-5


def _swiglu_vit() -> torch.nn.Module:
    from timm.layers import SwiGLUPacked

    return timm.create_model("vit_small_patch16_224", mlp_layer=SwiGLUPacked, act_layer="silu", mlp_ratio=2.66667 * 2)


REFUSED = [
    (lambda: timm.create_model("eva02_tiny_patch14_224"), "rotary"),
    (lambda: timm.create_model("vit_medium_patch16_rope_reg1_gap_256"), "rotary"),
    (lambda: timm.create_model("vit_relpos_base_patch16_224"), "relative position"),
    (_swiglu_vit, "SwiGLU"),
    (lambda: timm.create_model("vit_base_patch16_siglip_224"), "map"),
    (lambda: timm.create_model("vit_small_patch16_224", qk_norm=True), "qk-norm"),
    (lambda: timm.create_model("vit_tiny_r_s16_p8_224"), "HybridEmbed"),
    (lambda: timm.create_model("vit_base_patch16_clip_224"), "patch embedding"),
    (lambda: timm.create_model("vit_small_patch16_18x2_224"), "ParallelThingsBlock"),
    (lambda: timm.create_model("vit_base_patch16_rpn_224"), "ResPostBlock"),
    (lambda: timm.create_model("vit_small_patch16_224", dynamic_img_size=True), "dynamic image size"),
    (lambda: timm.create_model("resnet18"), "ResNet"),
]


@pytest.mark.parametrize("make,words", REFUSED, ids=[w for _, w in REFUSED])
def test_unsupported_families_are_refused_with_one_line(make, words: str) -> None:
    with torch.device("meta"):  # no weights needed to read the architecture
        model = make()
    with pytest.raises(UsageError) as e:
        spec_from_model(model)
    msg = str(e.value)
    assert words in msg and "unsupported" in msg and "\n" not in msg


@pytest.mark.parametrize(
    "change,words",
    [
        (dict(patch_size=0), "patch_size"),
        (dict(img_size=30), "not a multiple"),
        (dict(embed_dim="64"), "embed_dim"),
        (dict(class_token=1), "class_token"),
        (dict(mean=[0.5, 0.5]), "mean"),
        (dict(std=[0.5, 0.0, 0.5]), "std"),
        (dict(norm_eps=float("nan")), "norm_eps"),
        (dict(blocks=[]), "no blocks"),
        (dict(blocks=[{"heads": 2, "head_dim": 16}]), "malformed"),
        (dict(blocks=[{"heads": "2", "head_dim": 16, "mlp_hidden": 64}]), "heads"),
        (dict(blocks=[{"heads": 2, "head_dim": 16, "mlp_hidden": 64, "keep_tokens": 99}]), "keep_tokens"),
        (dict(global_pool="map"), "global_pool"),
        (dict(class_token=False), "class token"),
        (dict(format="vitc.spec/0"), "format"),
        (dict(colour="blue"), "unknown keys"),
    ],
)
def test_bad_specs_raise_usage_error(change: dict, words: str) -> None:
    d = {**SMALL_CONFIGS["vit-nano"].to_dict(), **change}
    with pytest.raises(UsageError, match=words):
        ViTSpec.from_json(json.dumps(d))


@pytest.mark.parametrize("text", ["[1, 2]", "not json", "null", '"spec"'])
def test_spec_json_that_is_not_an_object(text: str) -> None:
    with pytest.raises(UsageError):
        ViTSpec.from_json(text)


def test_keep_schedule_and_prefix_tokens() -> None:
    spec = COMPRESSED["dynamicvit"].replace(distilled=True, reg_tokens=2)
    assert spec.num_prefix_tokens == 4
    assert spec.keep_schedule() == [64, 64, 48, 48, 24, 24, 12, 12]
