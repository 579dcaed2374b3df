"""Analytic multiply–accumulate counts (MACs) from a spec — what the papers report as "FLOPs".

Counted: patch embedding, qkv, QKᵀ, attention·V, proj, fc1, fc2, DynamicViT predictors and the
classifier head(s). Not counted (as in the papers): LayerNorm, softmax, GELU, additions.
DeiT tiny/small/base at 224 give 1.25 / 4.60 / 17.56 GMACs (1,253,683,200 / 4,598,882,304 /
17,563,828,224 MACs, head included).
"""

from __future__ import annotations

from dataclasses import dataclass

from vitc.core.spec import BlockSpec, ViTSpec


@dataclass(frozen=True)
class BlockMacs:
    """MACs of one block for ``tokens`` tokens (prefix included), split into the paper's six terms."""

    qkv: int
    qk: int
    av: int
    proj: int
    fc1: int
    fc2: int
    predictor: int = 0

    @property
    def total(self) -> int:
        return self.qkv + self.qk + self.av + self.proj + self.fc1 + self.fc2 + self.predictor


def predictor_macs(embed_dim: int, patch_tokens: int) -> int:
    """MACs of one DynamicViT prediction module over ``patch_tokens`` tokens."""
    c = embed_dim
    return patch_tokens * (c * c + c * (c // 2) + (c // 2) * (c // 4) + (c // 4) * 2)


def block_macs(block: BlockSpec, embed_dim: int, tokens: int) -> BlockMacs:
    inner = block.heads * block.head_dim
    n = tokens
    return BlockMacs(
        qkv=n * embed_dim * 3 * inner,
        qk=n * n * inner,
        av=n * n * inner,
        proj=n * inner * embed_dim,
        fc1=n * embed_dim * block.mlp_hidden,
        fc2=n * block.mlp_hidden * embed_dim,
    )


def patch_embed_macs(spec: ViTSpec) -> int:
    return spec.num_patches * spec.in_chans * spec.patch_size**2 * spec.embed_dim


def head_macs(spec: ViTSpec) -> int:
    return spec.embed_dim * spec.num_classes * (2 if spec.distilled else 1)


def per_block_macs(spec: ViTSpec) -> list[BlockMacs]:
    """MACs of each block, including the token predictor placed before it (if any)."""
    rows = []
    prev_patches = spec.num_patches
    for block, patches in zip(spec.blocks, spec.keep_schedule()):
        bm = block_macs(block, spec.embed_dim, patches + spec.num_prefix_tokens)
        if block.keep_tokens is not None:
            bm = BlockMacs(bm.qkv, bm.qk, bm.av, bm.proj, bm.fc1, bm.fc2, predictor_macs(spec.embed_dim, prev_patches))
        rows.append(bm)
        prev_patches = patches
    return rows


def model_macs(spec: ViTSpec) -> int:
    """Total MACs for one image at the spec's input size."""
    return patch_embed_macs(spec) + sum(b.total for b in per_block_macs(spec)) + head_macs(spec)
