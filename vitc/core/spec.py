"""The architecture spec: a small JSON description of a timm ViT, and ``build_model(spec)`` back to timm.

A spec describes everything the weights do not: image and patch size, prefix tokens (class,
distillation, registers), pooling, LayerScale, and per block the number of heads, the head size,
the MLP width and, for DynamicViT models, how many patch tokens a token-selection module keeps
before the block. Compressed models stay timm ``VisionTransformer`` instances: blocks with fewer
heads get a timm ``Attention`` built with ``attn_head_dim`` (the head size is never changed, so the
attention scale stays ``head_dim ** -0.5``), narrower MLPs get a timm ``Mlp``, skipped blocks are
simply absent, and token-selection modules sit in ``model.blocks`` between the blocks. For
token-selection models the spec also records the key the modules rank tokens by (``token_score``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import partial
from typing import Any

from torch import nn

from vitc.core.errors import UsageError
from vitc.core.token_select import LOGODDS, TOKEN_SCORES

SPEC_FORMAT = "vitc.spec/1"


@dataclass
class BlockSpec:
    """One transformer block.

    ``keep_tokens``: when set, a token-selection module placed before this block keeps that many
    patch tokens (prefix tokens are always kept).
    """

    heads: int
    head_dim: int
    mlp_hidden: int
    keep_tokens: int | None = None


@dataclass
class ViTSpec:
    """Architecture of a (possibly compressed) timm Vision Transformer. Sizes in pixels/channels.

    ``token_score``: what the token-selection modules rank patch tokens by — ``"logodds"``
    (log p(keep) − log p(drop), vitc's default) or ``"keep"`` (log p(keep), the official DynamicViT
    code's key, recorded by models imported from it); see :mod:`vitc.core.token_select`. Specs
    written before the field existed load with ``"logodds"``, the key they were ranked by.
    """

    name: str
    img_size: int
    patch_size: int
    embed_dim: int
    num_classes: int
    blocks: list[BlockSpec]
    in_chans: int = 3
    class_token: bool = True
    distilled: bool = False
    reg_tokens: int = 0
    no_embed_class: bool = False
    global_pool: str = "token"
    fc_norm: bool = False
    pre_norm: bool = False
    final_norm: bool = True
    qkv_bias: bool = True
    proj_bias: bool = True
    layer_scale: bool = False
    norm_eps: float = 1e-6
    act: str = "gelu"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    token_score: str = LOGODDS

    # ---- derived sizes -------------------------------------------------------------------------
    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Patch tokens of the model's input size (196 for 224/16)."""
        return self.grid * self.grid

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + int(self.distilled) + self.reg_tokens

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_chans, self.img_size, self.img_size)

    def without_token_selection(self) -> ViTSpec:
        """The same backbone with every token kept (no token-selection modules)."""
        return self.replace(blocks=[dataclasses.replace(b, keep_tokens=None) for b in self.blocks])

    def keep_schedule(self) -> list[int]:
        """Patch tokens entering each block (after any token selection placed before it)."""
        tokens, schedule = self.num_patches, []
        for blk in self.blocks:
            if blk.keep_tokens is not None:
                tokens = blk.keep_tokens
            schedule.append(tokens)
        return schedule

    # ---- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["blocks"] = [{k: v for k, v in b.items() if v is not None} for b in d["blocks"]]
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return {"format": SPEC_FORMAT, **d}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ViTSpec:
        if not isinstance(d, dict):
            raise UsageError(f"malformed spec: expected a JSON object, got {type(d).__name__}")
        d = dict(d)
        fmt = d.pop("format", None)
        if fmt != SPEC_FORMAT:
            raise UsageError(f"unsupported spec format {fmt!r} (expected {SPEC_FORMAT!r})")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UsageError(f"spec has unknown keys: {', '.join(unknown)}")
        try:
            blocks = [BlockSpec(**b) for b in d.pop("blocks")]
            d["mean"], d["std"] = tuple(d.get("mean", cls.mean)), tuple(d.get("std", cls.std))
            spec = cls(blocks=blocks, **d)
        except (TypeError, KeyError) as e:  # missing/unknown block keys, non-list blocks or mean
            raise UsageError(f"malformed spec: {e}") from None
        spec.validate()
        return spec

    @classmethod
    def from_json(cls, text: str) -> ViTSpec:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise UsageError(f"spec is not valid JSON: {e}") from None

    def replace(self, **changes: Any) -> ViTSpec:
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        """Raise ``UsageError`` on a spec no model can have (also guards specs read from files)."""
        _check_types(self)
        if self.img_size % self.patch_size:
            raise UsageError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if not self.blocks:
            raise UsageError("spec has no blocks")
        if self.global_pool not in ("token", "avg", ""):
            raise UsageError(f"unsupported global_pool {self.global_pool!r}")
        if self.act not in _ACTS:
            raise UsageError(f"unsupported activation {self.act!r}")
        prev = self.num_patches
        for i, b in enumerate(self.blocks):
            if min(b.heads, b.head_dim, b.mlp_hidden) < 1:
                raise UsageError(f"block {i}: heads, head_dim and mlp_hidden must be >= 1")
            if b.keep_tokens is not None:
                if not 1 <= b.keep_tokens <= prev:
                    raise UsageError(f"block {i}: keep_tokens {b.keep_tokens} outside [1, {prev}]")
                prev = b.keep_tokens


_ACTS = {"gelu": partial(nn.GELU), "gelu_tanh": partial(nn.GELU, approximate="tanh")}

_POSITIVE_INTS = ("img_size", "patch_size", "embed_dim", "in_chans")
_BOOLS = ("class_token", "distilled", "no_embed_class", "fc_norm", "pre_norm", "final_norm", "qkv_bias",
          "proj_bias", "layer_scale")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def _check_types(spec: ViTSpec) -> None:
    """Field types and ranges, so a hand-edited or corrupt spec fails here, not deep inside timm."""
    if not isinstance(spec.name, str):
        raise UsageError("spec name must be a string")
    for key in _POSITIVE_INTS:
        if not _is_int(getattr(spec, key)) or getattr(spec, key) < 1:
            raise UsageError(f"spec {key} must be a positive integer, got {getattr(spec, key)!r}")
    if not _is_int(spec.num_classes) or spec.num_classes < 0:
        raise UsageError(f"spec num_classes must be an integer >= 0, got {spec.num_classes!r}")
    if not _is_int(spec.reg_tokens) or spec.reg_tokens < 0:
        raise UsageError(f"spec reg_tokens must be an integer >= 0, got {spec.reg_tokens!r}")
    for key in _BOOLS:
        if not isinstance(getattr(spec, key), bool):
            raise UsageError(f"spec {key} must be true or false, got {getattr(spec, key)!r}")
    if not _is_number(spec.norm_eps) or not spec.norm_eps > 0:
        raise UsageError(f"spec norm_eps must be a positive number, got {spec.norm_eps!r}")
    if not _is_number(spec.crop_pct) or not spec.crop_pct > 0:
        raise UsageError(f"spec crop_pct must be a positive number, got {spec.crop_pct!r}")
    for key in ("mean", "std"):
        values = getattr(spec, key)
        if len(values) != spec.in_chans or not all(_is_number(v) for v in values):
            raise UsageError(f"spec {key} must be {spec.in_chans} numbers, got {list(values)!r}")
    if not all(_is_number(v) and v > 0 for v in spec.std):
        raise UsageError(f"spec std must be positive, got {list(spec.std)!r}")
    if not isinstance(spec.interpolation, str) or not isinstance(spec.global_pool, str) or not isinstance(spec.act, str):
        raise UsageError("spec interpolation, global_pool and act must be strings")
    if not isinstance(spec.token_score, str) or spec.token_score not in TOKEN_SCORES:
        raise UsageError(f"spec token_score must be one of {', '.join(TOKEN_SCORES)}, got {spec.token_score!r}")
    if not spec.class_token and spec.global_pool == "token":
        raise UsageError("spec global_pool 'token' needs a class token")
    for i, b in enumerate(spec.blocks):
        if not isinstance(b, BlockSpec):
            raise UsageError(f"block {i} is not a block spec")
        for key in ("heads", "head_dim", "mlp_hidden"):
            if not _is_int(getattr(b, key)):
                raise UsageError(f"block {i}: {key} must be an integer, got {getattr(b, key)!r}")
        if b.keep_tokens is not None and not _is_int(b.keep_tokens):
            raise UsageError(f"block {i}: keep_tokens must be an integer, got {b.keep_tokens!r}")


# ------------------------------------------------------------------------------------------------
# timm model -> spec
# ------------------------------------------------------------------------------------------------

_REFUSED_CLASSES = {
    "Eva": "rotary position embedding (EVA family)",
    "VisionTransformerRelPos": "relative position bias",
    "Beit": "relative position bias (BEiT family)",
    "VisionTransformerSAM": "windowed attention with relative position (SAM)",
    "Hiera": "hierarchical attention (Hiera)",
    "NaFlexVit": "variable-resolution patch embedding (NaFlexViT)",
}


def spec_from_model(model: nn.Module, name: str | None = None) -> ViTSpec:
    """Describe a supported timm ViT; raise ``UsageError`` naming the first unsupported feature."""
    from timm.layers import Mlp, PatchEmbed
    from timm.layers.attention import Attention
    from timm.models.vision_transformer import Block, VisionTransformer

    from vitc.core.token_select import TokenSelect

    cls_name = type(model).__name__
    if cls_name in _REFUSED_CLASSES:
        raise UsageError(f"unsupported model family {cls_name}: {_REFUSED_CLASSES[cls_name]}")
    if not isinstance(model, VisionTransformer):
        raise UsageError(f"unsupported model family {cls_name}: only timm VisionTransformer/DeiT models are supported")
    distilled = cls_name == "VisionTransformerDistilled"
    if type(model) is not VisionTransformer and not distilled:
        raise UsageError(f"unsupported model family {cls_name}: only timm VisionTransformer/DeiT models are supported")

    def refuse(what: str) -> UsageError:
        return UsageError(f"unsupported {what} in {name or cls_name}")

    if getattr(model, "attn_pool", None) is not None:
        raise refuse("attention pooling (global_pool='map')")
    if getattr(model, "dynamic_img_size", False):
        raise refuse("dynamic image size")
    if model.pos_embed is None:
        raise refuse("model without a learned position embedding")
    if getattr(model, "pool_include_prefix", False):
        raise refuse("pooling that includes prefix tokens")
    if model.global_pool not in ("token", "avg", ""):
        raise refuse(f"global_pool={model.global_pool!r}")
    pe = model.patch_embed
    if type(pe) is not PatchEmbed:
        raise refuse(f"patch embedding {type(pe).__name__} (hybrid CNN stems are not supported)")
    if getattr(pe, "dynamic_img_pad", False):
        raise refuse("dynamic image padding")
    if not isinstance(pe.norm, nn.Identity):
        raise refuse("normalised patch embedding")
    if not isinstance(pe.proj, nn.Conv2d) or pe.proj.bias is None:
        raise refuse("patch embedding without a biased convolution")
    ph, pw = pe.patch_size
    ih, iw = pe.img_size
    if ph != pw or ih != iw:
        raise refuse("non-square image or patch size")

    norm_eps: float | None = None

    def check_norm(mod: nn.Module, where: str) -> None:
        nonlocal norm_eps
        if isinstance(mod, nn.Identity):
            return
        if not isinstance(mod, nn.LayerNorm) or not mod.elementwise_affine or mod.bias is None:
            raise refuse(f"normalisation {type(mod).__name__} at {where}")
        if norm_eps is None:
            norm_eps = mod.eps
        elif abs(norm_eps - mod.eps) > 1e-12:
            raise refuse(f"mixed LayerNorm eps at {where}")

    check_norm(model.norm_pre, "norm_pre")
    check_norm(model.norm, "norm")
    check_norm(model.fc_norm, "fc_norm")

    blocks: list[BlockSpec] = []
    act: str | None = None
    layer_scale: bool | None = None
    qkv_bias = proj_bias = True
    pending_keep: int | None = None
    token_score: str | None = None
    for i, blk in enumerate(model.blocks):
        if isinstance(blk, TokenSelect):
            if token_score is not None and blk.score != token_score:
                raise refuse(f"token-selection modules that rank by different scores (block {i})")
            pending_keep, token_score = blk.num_keep, blk.score
            continue
        if type(blk) is not Block:
            raise refuse(f"block type {type(blk).__name__} (block {i})")
        attn, mlp = blk.attn, blk.mlp
        if type(attn) is not Attention:
            raise refuse(f"attention type {type(attn).__name__} (block {i})")
        if not (isinstance(attn.q_norm, nn.Identity) and isinstance(attn.k_norm, nn.Identity)):
            raise refuse(f"qk-norm (block {i})")
        if not isinstance(getattr(attn, "norm", nn.Identity()), nn.Identity):
            raise refuse(f"attention output norm (block {i})")
        if getattr(attn, "gate", None) is not None:
            raise refuse(f"gated attention (block {i})")
        if type(mlp) is not Mlp:
            raise refuse(f"MLP type {type(mlp).__name__} (SwiGLU/GLU MLPs are not supported; block {i})")
        if not isinstance(mlp.fc1, nn.Linear):
            raise refuse(f"convolutional MLP (block {i})")
        if not isinstance(mlp.norm, nn.Identity):
            raise refuse(f"MLP inner norm (block {i})")
        if not isinstance(mlp.act, nn.GELU):
            raise refuse(f"activation {type(mlp.act).__name__} (block {i})")
        blk_act = "gelu_tanh" if mlp.act.approximate == "tanh" else "gelu"
        blk_ls = not isinstance(blk.ls1, nn.Identity)
        if blk_ls == isinstance(blk.ls2, nn.Identity):
            raise refuse(f"LayerScale on only one branch (block {i})")
        if (mlp.fc1.bias is None) != (attn.proj.bias is None) or (mlp.fc2.bias is None) != (attn.proj.bias is None):
            raise refuse(f"MLP biases that differ from the attention projection's (block {i})")
        if act is None:
            act, layer_scale = blk_act, blk_ls
            qkv_bias, proj_bias = attn.qkv.bias is not None, attn.proj.bias is not None
        elif (act, layer_scale, qkv_bias, proj_bias) != (
            blk_act, blk_ls, attn.qkv.bias is not None, attn.proj.bias is not None
        ):
            raise refuse(f"blocks that differ in activation, LayerScale or biases (block {i})")
        check_norm(blk.norm1, f"block {i}")
        check_norm(blk.norm2, f"block {i}")
        blocks.append(BlockSpec(attn.num_heads, attn.head_dim, mlp.fc1.out_features, pending_keep))
        pending_keep = None
    if not blocks:
        raise refuse("model without transformer blocks")

    cfg = getattr(model, "pretrained_cfg", None) or {}
    in_chans = pe.proj.in_channels
    mean = tuple(float(v) for v in cfg.get("mean", ViTSpec.mean))
    std = tuple(float(v) for v in cfg.get("std", ViTSpec.std))
    if len(mean) != in_chans:
        mean, std = (mean[0],) * in_chans, (std[0],) * in_chans
    head = model.head
    num_classes = head.out_features if isinstance(head, nn.Linear) else 0
    spec = ViTSpec(
        name=name or cfg.get("architecture") or cls_name,
        img_size=ih,
        patch_size=ph,
        embed_dim=model.embed_dim,
        num_classes=num_classes,
        blocks=blocks,
        in_chans=in_chans,
        class_token=model.cls_token is not None,
        distilled=distilled,
        reg_tokens=getattr(model, "num_reg_tokens", 0),
        no_embed_class=model.no_embed_class,
        global_pool=model.global_pool,
        fc_norm=not isinstance(model.fc_norm, nn.Identity),
        pre_norm=not isinstance(model.norm_pre, nn.Identity),
        final_norm=not (isinstance(model.norm, nn.Identity) and isinstance(model.fc_norm, nn.Identity)),
        qkv_bias=qkv_bias,
        proj_bias=proj_bias,
        layer_scale=bool(layer_scale),
        norm_eps=norm_eps if norm_eps is not None else 1e-6,
        act=act or "gelu",
        mean=mean,
        std=std,
        interpolation=str(cfg.get("interpolation", "bicubic")),
        crop_pct=float(cfg.get("crop_pct", 0.875)),
        token_score=token_score or LOGODDS,
    )
    spec.validate()
    return spec


# ------------------------------------------------------------------------------------------------
# spec -> timm model
# ------------------------------------------------------------------------------------------------


def build_model(spec: ViTSpec, init_weights: bool = False) -> nn.Module:
    """Create the timm ``VisionTransformer`` a spec describes (weights random, or skipped if not init)."""
    from timm.layers import LayerNorm, Mlp
    from timm.layers.attention import Attention
    from timm.models.vision_transformer import VisionTransformer

    from vitc.core.token_select import TokenSelect

    spec.validate()
    first = spec.blocks[0]
    # timm needs embed_dim % num_heads == 0 for its default blocks; any block whose heads or head
    # size differ from that default gets its own Attention below (a pruned first block included).
    base_heads = first.heads if spec.embed_dim % first.heads == 0 else 1
    default_attn = (base_heads, spec.embed_dim // base_heads)
    norm_layer = partial(LayerNorm, eps=spec.norm_eps)
    act_layer = _ACTS[spec.act]
    kwargs: dict[str, Any] = dict(
        img_size=spec.img_size,
        patch_size=spec.patch_size,
        in_chans=spec.in_chans,
        num_classes=spec.num_classes,
        global_pool=spec.global_pool,
        embed_dim=spec.embed_dim,
        depth=spec.depth,
        num_heads=base_heads,
        mlp_ratio=first.mlp_hidden / spec.embed_dim,
        qkv_bias=spec.qkv_bias,
        proj_bias=spec.proj_bias,
        init_values=1e-5 if spec.layer_scale else None,
        class_token=spec.class_token,
        no_embed_class=spec.no_embed_class,
        reg_tokens=spec.reg_tokens,
        pre_norm=spec.pre_norm,
        final_norm=spec.final_norm,
        fc_norm=spec.fc_norm,
        weight_init="" if init_weights else "skip",
        norm_layer=norm_layer,
        act_layer=act_layer,
    )
    if spec.distilled:
        from timm.models.deit import VisionTransformerDistilled

        model: nn.Module = VisionTransformerDistilled(**kwargs)
    else:
        model = VisionTransformer(**kwargs)

    modules: list[nn.Module] = []
    blocks: Any = model.blocks
    for blk, bs in zip(blocks, spec.blocks):
        if (bs.heads, bs.head_dim) != default_attn:
            blk.attn = Attention(
                spec.embed_dim, num_heads=bs.heads, attn_head_dim=bs.head_dim,
                qkv_bias=spec.qkv_bias, proj_bias=spec.proj_bias,
            )
        if bs.mlp_hidden != blk.mlp.fc1.out_features:
            blk.mlp = Mlp(spec.embed_dim, hidden_features=bs.mlp_hidden, act_layer=act_layer,  # type: ignore[arg-type]
                          bias=spec.proj_bias)
        if bs.keep_tokens is not None:
            modules.append(TokenSelect(spec.embed_dim, bs.keep_tokens, spec.num_prefix_tokens, spec.token_score))
        modules.append(blk)
    model.blocks = nn.Sequential(*modules)
    model.pretrained_cfg = {  # type: ignore[assignment]
        **getattr(model, "pretrained_cfg", {}),
        "architecture": spec.name,
        "mean": spec.mean,
        "std": spec.std,
        "interpolation": spec.interpolation,
        "crop_pct": spec.crop_pct,
        "input_size": spec.input_shape,
    }
    model.eval()
    return model


__all__ = ["BlockSpec", "ViTSpec", "build_model", "spec_from_model"]
