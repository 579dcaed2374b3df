"""What ``vitc info`` reports: parameters, MACs, and per block heads/head_dim/mlp_hidden/tokens/MACs."""

from __future__ import annotations

from typing import Any

from vitc.core.flops import model_macs, per_block_macs
from vitc.core.spec import ViTSpec, build_model, describe_blocks


def count_params(spec: ViTSpec) -> int:
    """Parameters of the model ``spec`` describes (built on the meta device: no memory, no init)."""
    import torch

    with torch.device("meta"):
        return sum(p.numel() for p in build_model(spec).parameters())


def summarize(spec: ViTSpec) -> dict[str, Any]:
    blocks = describe_blocks(spec)
    for row, macs in zip(blocks, per_block_macs(spec)):
        row["macs"] = macs.total
        if macs.predictor:
            row["predictor_macs"] = macs.predictor
    selection = {"token_score": spec.token_score} if any(b.keep_tokens is not None for b in spec.blocks) else {}
    return {
        "name": spec.name,
        "img_size": spec.img_size,
        "patch_size": spec.patch_size,
        "embed_dim": spec.embed_dim,
        "num_classes": spec.num_classes,
        "prefix_tokens": spec.num_prefix_tokens,
        "patch_tokens": spec.num_patches,
        "depth": spec.depth,
        "params": count_params(spec),
        "macs": model_macs(spec),
        "blocks": blocks,
        **selection,  # the key token selection ranks by (logodds: vitc's; keep: the official log p(keep))
    }
