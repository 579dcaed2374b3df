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
    the floor robust to float error (100 * 0.7**2 = 48.999... must give 49, as the paper's
    floor(N rho^s) does). A count can be 0 for few patches or a small ratio; callers refuse that.
    """
    return [math.floor(num_patches * keep_ratio**s + 1e-9) for s in range(1, num_stages + 1)]


def default_stages(depth: int) -> list[int]:
    """Blocks before which the predictors sit: depth/4, depth/2, 3*depth/4 (3, 6, 9 for 12 blocks)."""
    return [depth // 4, depth // 2, (3 * depth) // 4]


class PredictorLG(nn.Module):
    """Local + masked-global features → MLP → log-softmax over (keep, drop).

    For C=384 (DeiT-S) it has 241,250 parameters. Linear layers start from timm's ViT init
    (truncated normal, std 0.02, zero bias), as the official model's ``_init_weights`` does, so
    p(keep) starts near 0.5.
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
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, tokens: torch.Tensor, policy: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, N, C) patch tokens; policy (B, N, 1) in {0,1} or None (all kept) → (B, N, 2).

        The global half is the policy-weighted mean of the tokens still kept. The official code
        divides by ``policy.sum()`` unguarded, which is NaN when an image has dropped every token
        (possible with few patches); the denominator is clamped so that case gives 0 instead.
        """
        x = self.in_conv(tokens)
        half = x.shape[-1] // 2
        local_x, global_x = x[..., :half], x[..., half:]
        if policy is None:
            global_x = global_x.mean(dim=1, keepdim=True)
        else:
            policy = policy.to(global_x.dtype)
            global_x = (global_x * policy).sum(dim=1, keepdim=True) / policy.sum(dim=1, keepdim=True).clamp_min(1e-6)
        x = torch.cat([local_x, global_x.expand_as(local_x)], dim=-1)
        return self.out_conv(x)


def keep_topk(x: torch.Tensor, scores: torch.Tensor, num_keep: int, num_prefix: int) -> torch.Tensor:
    """Prefix tokens, then the ``num_keep`` patch tokens with the highest ``scores`` (B, N_patch).

    ``topk`` with a Python-int K exports as ONNX TopK with a constant K, and the gather keeps
    every token dimension static. Kept tokens are in descending-score order, not spatial order
    (as the official code; re-sorting would export as another, shape-dependent TopK).
    """
    return gather_tokens(x, topk_indices(scores, num_keep), num_prefix)


def topk_indices(scores: torch.Tensor, num_keep: int) -> torch.Tensor:
    """(B, num_keep) indices of the highest ``scores`` (B, N), best first: the exported TopK."""
    return scores.topk(num_keep, dim=1, sorted=True).indices


def gather_tokens(x: torch.Tensor, idx: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """Prefix tokens, then the patch tokens at ``idx`` (B, K) (positions among x's patch tokens)."""
    prefix, tokens = x[:, :num_prefix], x[:, num_prefix:]
    kept = tokens.gather(1, idx.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
    return torch.cat([prefix, kept], dim=1)


class TokenSelect(nn.Module):
    """Keep the ``num_keep`` highest-scoring patch tokens (static K: exports as ONNX TopK + Gather).

    The prefix tokens are always kept and stay first. At inference the predictor's global feature
    is the plain mean over the tokens that reached it (every one of them is kept so far).
    """

    def __init__(self, embed_dim: int, num_keep: int, num_prefix: int = 1) -> None:
        super().__init__()
        self.num_keep = int(num_keep)
        self.num_prefix = int(num_prefix)
        self.predictor = PredictorLG(embed_dim)

    def extra_repr(self) -> str:
        return f"num_keep={self.num_keep}, num_prefix={self.num_prefix}"

    def keep_scores(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        """Ranking score per patch token, (B, N): log p(keep) − log p(drop).

        It orders tokens exactly as log p(keep) does (the official code's key; both are monotone in
        p(keep)), but log p(keep) saturates to 0.0 in float32 for confident keeps, which ties many
        tokens at the K-th place — then PyTorch, ONNX Runtime and TensorRT break the tie differently
        and keep different tokens. The log-odds keeps full resolution there.
        """
        log_probs = self.predictor(patch_tokens)
        return log_probs[..., 0] - log_probs[..., 1]

    def keep_indices(self, x: torch.Tensor) -> torch.Tensor:
        """(B, num_keep) positions among x's patch tokens of the kept ones, best first (the ONNX TopK's indices)."""
        return topk_indices(self.keep_scores(x[:, self.num_prefix :]), self.num_keep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gather_tokens(x, self.keep_indices(x), self.num_prefix)
