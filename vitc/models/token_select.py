"""DynamicViT token selection: the prediction module and the static-K selection placed between blocks.

Shapes: ``x`` is (B, N, C) with the prefix tokens (class, distillation, registers) first. The
predictor sees only the patch tokens. Channel 0 of its output is log p(keep), as in the official
DynamicViT code (the paper's figure uses index 1).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def keep_counts(num_patches: int, keep_ratio: float, num_stages: int) -> list[int]:
    """Patch tokens kept after each stage: ``floor(N * rho**s)``, cumulative over the original N.

    For N=196: rho=0.7 gives [137, 96, 67]; rho=0.5 gives [98, 49, 24]. The small epsilon makes
    the floor robust to float error (0.7**2 * 196 = 96.04 must not become 95.99...).
    """
    counts = []
    for s in range(1, num_stages + 1):
        counts.append(max(1, math.floor(num_patches * keep_ratio**s + 1e-9)))
    return counts


def default_stages(depth: int) -> list[int]:
    """Blocks before which the predictors sit: depth/4, depth/2, 3*depth/4 (3, 6, 9 for 12 blocks)."""
    return [depth // 4, depth // 2, (3 * depth) // 4]


class PredictorLG(nn.Module):
    """Local + masked-global features → MLP → log-softmax over (keep, drop).

    For C=384 (DeiT-S) it has 241,250 parameters.
    """

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.in_conv = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, embed_dim), nn.GELU())
        self.out_conv = nn.Sequential(
            nn.Linear(embed_dim, embed_dim // 2),
            nn.GELU(),
            nn.Linear(embed_dim // 2, embed_dim // 4),
            nn.GELU(),
            nn.Linear(embed_dim // 4, 2),
            nn.LogSoftmax(dim=-1),
        )

    def forward(self, tokens: torch.Tensor, policy: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, N, C) patch tokens; policy (B, N, 1) in {0,1} or None (all kept) → (B, N, 2)."""
        x = self.in_conv(tokens)
        half = x.shape[-1] // 2
        local_x, global_x = x[..., :half], x[..., half:]
        if policy is None:
            global_x = global_x.mean(dim=1, keepdim=True)
        else:
            global_x = (global_x * policy).sum(dim=1, keepdim=True) / policy.sum(dim=1, keepdim=True)
        x = torch.cat([local_x, global_x.expand_as(local_x)], dim=-1)
        return self.out_conv(x)


class TokenSelect(nn.Module):
    """Keep the ``num_keep`` highest-scoring patch tokens (static K: exports as ONNX TopK + Gather).

    Kept tokens stay in descending-score order (as the official code does); the prefix tokens are
    always kept and stay first.
    """

    def __init__(self, embed_dim: int, num_keep: int, num_prefix: int = 1) -> None:
        super().__init__()
        self.num_keep = int(num_keep)
        self.num_prefix = int(num_prefix)
        self.predictor = PredictorLG(embed_dim)

    def extra_repr(self) -> str:
        return f"num_keep={self.num_keep}, num_prefix={self.num_prefix}"

    def keep_scores(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        """log p(keep) per patch token, (B, N)."""
        return self.predictor(patch_tokens)[..., 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prefix, tokens = x[:, : self.num_prefix], x[:, self.num_prefix :]
        idx = self.keep_scores(tokens).topk(self.num_keep, dim=1, sorted=True).indices
        kept = tokens.gather(1, idx.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        return torch.cat([prefix, kept], dim=1)
