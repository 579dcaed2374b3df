"""``vitc materialize``: a compressed artifact → physically smaller timm models, checked and written.

* UVC (``kind == "uvc"``): skipped blocks removed, heads and MLP neurons sliced; the sliced model
  must match the masked one (max abs logit diff ≤ 1e-4) or nothing is written.
* DynamicViT (``kind == "dynamicvit"``): one artifact per keep ratio, with static per-stage token
  counts ``floor(N·ρ^s)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitc.artifacts import load_artifact, save_model
from vitc.errors import UsageError
from vitc.models.flops import model_macs
from vitc.models.summary import count_params

SLICE_ATOL = 1e-4


def ratio_filename(keep_ratio: float) -> str:
    """``materialized-keep0.70.safetensors`` for ρ = 0.7."""
    return f"materialized-keep{keep_ratio:.2f}.safetensors"


def materialize(path: str | Path, out: str | Path, keep_ratios: list[float] | None = None) -> dict[str, Any]:
    """Materialize the compressed artifact at ``path``; return a summary for ``--json``."""
    art = load_artifact(path)
    before_macs, before_params = model_macs(art.spec), count_params(art.spec)
    out = Path(out)
    if art.kind == "uvc":
        if keep_ratios:
            raise UsageError("--keep-ratios applies to DynamicViT artifacts; this is a UVC artifact")
        from vitc.compress.uvc import materialize_uvc

        if out.is_dir() or str(out).endswith("/"):
            out = out / "materialized.safetensors"
        model, spec, check = materialize_uvc(art, atol=SLICE_ATOL)
        save_model(out, model, spec, meta={"method": "uvc", "source": str(art.path), **art.meta})
        return {
            "method": "uvc",
            "artifact": str(out),
            "macs_before": before_macs,
            "macs_after": model_macs(spec),
            "params_before": before_params,
            "params_after": sum(p.numel() for p in model.parameters()),
            "max_abs_diff": check["max_abs_diff"],
            "blocks_kept": spec.depth,
        }
    if art.kind == "dynamicvit":
        from vitc.compress.dynamicvit import dense_macs, materialize_ratio

        if not keep_ratios:
            keep_ratios = [float(art.meta.get("keep_ratio", 0.7))]
        if out.suffix == ".safetensors":
            if len(keep_ratios) > 1:
                raise UsageError("--out must be a folder when several --keep-ratios are given")
            targets = [out]
        else:
            targets = [out / ratio_filename(r) for r in keep_ratios]
        variants = []
        for ratio, target in zip(keep_ratios, targets):
            model, spec = materialize_ratio(art, ratio)
            save_model(target, model, spec, meta={"method": "dynamicvit", "keep_ratio": ratio, "source": str(art.path)})
            variants.append({
                "keep_ratio": ratio,
                "artifact": str(target),
                "keep_tokens": [b.keep_tokens for b in spec.blocks if b.keep_tokens is not None],
                "macs": model_macs(spec),
                "params": sum(p.numel() for p in model.parameters()),
            })
        return {
            "method": "dynamicvit",
            "macs_before": dense_macs(art.spec),
            "params_before": before_params,
            "variants": variants,
        }
    raise UsageError(f"{path} is a plain model artifact (kind {art.kind!r}); nothing to materialize")
