"""The DeiT-S shapes the speed benchmarks measure: the dense model, a UVC architecture (from the short
synthetic-data search, or a hand-built stand-in of the same MACs), and token selection (DynamicViT ρ, alone
or on the UVC architecture).

Throughput depends on shapes (blocks, heads, MLP widths, token counts), not on weights, so every shape here
comes from a short run on synthetic data or from the spec; accuracy is not measured with them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vitc.core.spec import ViTSpec
    from vitc.methods.uvc.settings import UVCSettings

DENSE_MODEL = "deit_small_patch16_224"
SHORT_SEARCH_DATA = "synthetic:64"
# The short DeiT-S UVC search: a few epochs reach the 0.5 budget (4 epochs on synthetic:64 at batch 4 give
# 5 of 12 blocks, MACs ratio 0.424, on the CPU): no warm-up, a steep z-lr and a fast gate.
SHORT_SEARCH: dict[str, Any] = {"budget": 0.5, "epochs": 4, "finetune_epochs": 0, "batch_size": 4, "gate_warmup_epochs": 0,
                                "z_lr_schedule": (2000.0,), "gate_lr": 5.0, "gate_interval": 1}


def short_search_settings(device: str = "cpu", **changes: Any) -> UVCSettings:
    """The short DeiT-S UVC search's settings (``changes`` replace some, e.g. fewer epochs for a smoke run)."""
    from vitc.methods.uvc.settings import UVCSettings

    settings: UVCSettings = UVCSettings.with_options(**{**SHORT_SEARCH, "device": device, **changes})
    return settings


def short_search_command(out: str = "runs/deits/uvc", data: str = SHORT_SEARCH_DATA) -> str:
    """The same search as a ``vitc compress uvc`` command line (flags derived from the settings' own fields)."""
    import dataclasses

    from vitc.core.settings import flag_of, spec_of
    from vitc.methods.uvc.settings import UVCSettings

    by_name = {f.name: f for f in dataclasses.fields(UVCSettings)}
    words = ["vitc compress uvc", DENSE_MODEL, "--data", data]
    for name, value in SHORT_SEARCH.items():
        text = ",".join(f"{v:g}" for v in value) if isinstance(value, tuple) else f"{value:g}"
        words += [flag_of(name, spec_of(by_name[name])), text]
    return " ".join([*words, "-o", out])


def dense_artifact(model: str, out: Path) -> Path:
    """The dense model as a vitc artifact (seeded random init unless ``model`` is already an artifact)."""
    import torch

    from vitc.core.artifacts import save_model
    from vitc.core.models import is_artifact_path, resolve_model

    if is_artifact_path(model):
        return Path(model)
    torch.manual_seed(0)
    net, spec = resolve_model(model)
    return save_model(out / "dense.safetensors", net, spec)


def uvc_architecture(dense: Path, out: Path, *, given: Path | None = None, data: str = SHORT_SEARCH_DATA,
                     settings: UVCSettings | None = None) -> Path:
    """A materialized UVC model: ``given`` (compressed or already materialized), or the short search of
    ``dense`` on ``data`` (``settings`` default :func:`short_search_settings`) materialized under ``out/uvc``."""
    from vitc.core.artifacts import read_header
    from vitc.core.errors import UsageError
    from vitc.methods import METHODS, materialize

    if given is None:
        summary = METHODS["uvc"].compress(str(dense), data, out / "uvc", settings or short_search_settings())
        assert summary is not None  # single process
        given = Path(summary["artifact"])
    _, kind, _ = read_header(given)
    if kind == "model":
        return given
    if kind != "uvc":
        raise UsageError(f"--uvc {given} is a {kind} artifact, not a UVC one")
    return Path(materialize(given, out / "uvc" / "materialized.safetensors")["artifact"])


def hand_built_uvc_like(spec: ViTSpec, budget: float) -> ViTSpec:
    """A spec shaped like a UVC result at ``budget`` (MACs fraction): ``spec`` with one late block skipped and
    heads/MLP widths shrinking with depth (MLP widths multiples of 8), scaled until its MACs are ``budget``
    of the dense model's. A stand-in for a searched architecture of the same MACs ratio."""
    from vitc.core.errors import UsageError
    from vitc.core.flops import model_macs
    from vitc.core.spec import BlockSpec

    depth, dense = spec.depth, model_macs(spec)
    skip = round(0.8 * (depth - 1))  # one late block skipped, as UVC's gates tend to do
    keep = [i for i in range(depth) if i != skip]

    def shaped(c: float) -> ViTSpec:
        blocks = []
        for i in keep:
            taper = 1.0 - 0.6 * i / (depth - 1)
            b = spec.blocks[i]
            heads = max(1, round(b.heads * taper))
            mlp = max(8, int(round(b.mlp_hidden * taper * c / 8)) * 8)
            blocks.append(BlockSpec(heads, b.head_dim, min(mlp, b.mlp_hidden)))
        return spec.replace(name=f"{spec.name}-handbuilt-uvc{budget:g}", blocks=blocks)

    lo, hi = 0.02, 1.6
    if model_macs(shaped(lo)) / dense > budget:
        raise UsageError(f"--budget {budget} is below what the hand-built shape can reach")
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if model_macs(shaped(mid)) / dense < budget else (lo, mid)
    return shaped(lo)


def with_tokens(spec: ViTSpec, keep_ratio: float) -> tuple[ViTSpec, list[int]]:
    """``spec`` with token selection keeping floor(N·ρ^s) patch tokens before the blocks at 1/4, 1/2 and 3/4 of
    its depth, where DynamicViT (and UVC+DynamicViT, on a UVC architecture) place their predictors; and those
    block indices."""
    from vitc.methods.dynamicvit.compress import resolve_stages, with_token_selection

    stages = resolve_stages(spec, None)
    return with_token_selection(spec, keep_ratio, stages), stages


def save_shape(spec: ViTSpec, path: Path, **meta: Any) -> Path:
    """A seeded random-init model of ``spec`` saved as an artifact at ``path`` (``meta`` in its header)."""
    import torch

    from vitc.core.artifacts import save_model
    from vitc.core.spec import build_model

    torch.manual_seed(0)
    return save_model(path, build_model(spec, init_weights=True), spec, meta=meta or None)


__all__ = ["DENSE_MODEL", "SHORT_SEARCH", "SHORT_SEARCH_DATA", "dense_artifact", "hand_built_uvc_like", "save_shape",
           "short_search_command", "short_search_settings", "uvc_architecture", "with_tokens"]
