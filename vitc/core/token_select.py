"""DynamicViT token selection: the prediction module and the static-K selection placed between blocks.

Shapes: ``x`` is (B, N, C) with the prefix tokens (class, distillation, registers) first. The predictor
sees only the patch tokens; channel 0 of its output is log p(keep), as in the official code (the paper's
figure uses index 1).

Ranking key (:data:`TOKEN_SCORES`, recorded per model as ``ViTSpec.token_score``): ``"logodds"`` (vitc's
default), log p(keep) - log p(drop), or ``"keep"`` (the official key), log p(keep). Both keep the same
tokens in exact arithmetic; in float32 log p(keep) rounds to 0.0 for a confident predictor, and the ties
leave the choice to each backend's TopK tie-breaking. Why vitc defaults to the log-odds: docs/methods.md.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LOGODDS = "logodds"  # log p(keep) - log p(drop): vitc's default
KEEP = "keep"  # log p(keep): the official DynamicViT code's key
TOKEN_SCORES = (LOGODDS, KEEP)


def rank_scores(log_probs: torch.Tensor, key: str = LOGODDS) -> torch.Tensor:
    """The ranking score of each token from the predictor's (..., 2) log-probabilities (channel 0 = keep).

    ``key``: ``"logodds"`` → log p(keep) − log p(drop); ``"keep"`` → log p(keep) (see the module docstring).
    """
    if key == LOGODDS:
        return log_probs[..., 0] - log_probs[..., 1]
    if key == KEEP:
        return log_probs[..., 0]
    raise ValueError(f"unknown token score {key!r} (expected one of {', '.join(TOKEN_SCORES)})")


def keep_counts(num_patches: int, keep_ratio: float, num_stages: int) -> list[int]:
    """Patch tokens kept after each stage: ``floor(N * rho**s)``, cumulative over the original N.

    For N=196: rho=0.7 gives [137, 96, 67]; rho=0.5 gives [98, 49, 24]. The small epsilon makes
    the floor robust to float error (100 * 0.7**2 = 48.999... must give 49, as the paper's
    floor(N rho^s) does). A count can be 0 for few patches or a small ratio; callers refuse that.
    """
    return [math.floor(num_patches * keep_ratio**s + 1e-9) for s in range(1, num_stages + 1)]


def default_stages(depth: int) -> list[int]:
    """Blocks before which the predictors sit: depth/4, depth/2, 3*depth/4 (3, 6, 9 for 12 blocks).

    Shallower models (a UVC model can keep 2 or 3 blocks) get the distinct ones of those sites moved
    into [1, depth-1] — fewer stages, each still between two blocks; a 1-block model has none.
    """
    sites = [depth // 4, depth // 2, (3 * depth) // 4]
    return sorted({min(max(s, 1), depth - 1) for s in sites}) if depth >= 2 else []


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
    ``score`` is the ranking key (:data:`TOKEN_SCORES`; the spec's ``token_score``).
    """

    def __init__(self, embed_dim: int, num_keep: int, num_prefix: int = 1, score: str = LOGODDS) -> None:
        super().__init__()
        if score not in TOKEN_SCORES:
            raise ValueError(f"unknown token score {score!r} (expected one of {', '.join(TOKEN_SCORES)})")
        self.num_keep = int(num_keep)
        self.num_prefix = int(num_prefix)
        self.score = score
        self.predictor = PredictorLG(embed_dim)

    def extra_repr(self) -> str:
        return f"num_keep={self.num_keep}, num_prefix={self.num_prefix}, score={self.score!r}"

    def keep_scores(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        """Ranking score per patch token, (B, N), by this module's key (:func:`rank_scores`).

        ``logodds`` (vitc's default) orders tokens as log p(keep) (the official key, ``keep``) does
        wherever log p(keep) is not rounded: in float32 log p(keep) saturates to 0.0 for confident
        keeps and ties many tokens, so the keys keep different tokens where such a tie straddles the
        K-th place, and under ``keep`` PyTorch, ONNX Runtime and TensorRT may break the tie differently.
        """
        return rank_scores(self.predictor(patch_tokens), self.score)

    def keep_indices(self, x: torch.Tensor) -> torch.Tensor:
        """(B, num_keep) positions among x's patch tokens of the kept ones, best first (the ONNX TopK's indices)."""
        return topk_indices(self.keep_scores(x[:, self.num_prefix :]), self.num_keep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gather_tokens(x, self.keep_indices(x), self.num_prefix)
