"""DynamicViT's training forward: every token kept, dropped ones masked out of attention.

The student is a plain timm ``VisionTransformer`` whose ``model.blocks`` holds ``TokenSelect``
modules before the stage blocks (the inference tree of :func:`vitc.core.spec.build_model`). Nothing is
patched: :func:`masked_forward` walks ``model.blocks`` and applies each timm ``Block``'s own
submodules (norm1, attn.qkv, attn.proj, ls1, drop_path1, norm2, mlp, ls2, drop_path2) with the
policy-masked softmax of the official ``Attention.softmax_with_policy``, and each ``TokenSelect``'s
predictor for the keep decisions.

Shapes: B images, N tokens (P prefix tokens first, then n = N - P patch tokens), C channels, H heads.
A *policy* is (B, N, 1) in {0, 1} (prefix tokens always 1); a *keep mask* is (B, n), cumulative
over stages (a dropped token stays dropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F

from vitc.core.token_select import TokenSelect, gather_tokens, keep_topk, rank_scores

POLICY_EPS = 1e-6

Decide = Literal["gumbel", "topk"]


class MaskedOutput(NamedTuple):
    """What the training forward returns.

    logits (B, classes); tokens (B, n, C) patch tokens after the final norm; keep_masks: one (B, n)
    cumulative hard mask per stage (with straight-through gradients in ``gumbel`` mode).
    """

    logits: torch.Tensor
    tokens: torch.Tensor
    keep_masks: list[torch.Tensor]


def softmax_with_policy(logits: torch.Tensor, policy: torch.Tensor | None, eps: float = POLICY_EPS) -> torch.Tensor:
    """Attention probabilities over kept keys only, every query keeping a self-loop.

    logits (B, H, N, N) = QKᵀ·scale; policy (B, N, 1) or None (plain softmax). With
    G_ij = 1 if i == j else p_j and E = exp(P - max_j P)·G (fp32), returns
    (E + eps/N) / (Σ_j E + eps) in the input dtype. Only keys (columns) are masked: a dropped token
    still attends to the kept ones and itself, but no kept token attends to it. Rows sum to 1.
    This equals attention over the kept keys up to eps relative to Σ_j E, i.e. unless a dropped
    key's logit exceeds every kept one in the row by more than ~10 (then eps flattens the row).
    """
    if policy is None:
        return logits.softmax(dim=-1)
    b, _, n, _ = logits.shape
    key_policy = policy.reshape(b, 1, 1, n).to(torch.float32)
    eye = torch.eye(n, dtype=torch.float32, device=logits.device).view(1, 1, n, n)
    gate = key_policy + (1.0 - key_policy) * eye
    # fp32 "for stable training" (official comment), max over *all* keys, masked or not, as the
    # official code. Besides stability this bounds the straight-through gradient of a gate: it is
    # E_j / (Σ_k E_k + eps) with E_j <= 1, so at most 1/eps. (Shifting by the max over kept keys
    # instead makes the forward exact for rows whose largest logit is a dropped key, but turns that
    # gradient into exp(P_ij - max_kept) — 1e12 and more on a trained vit-micro — which swamps Adam.)
    p = logits.to(torch.float32)
    e = (p - p.amax(dim=-1, keepdim=True)).exp() * gate
    probs = (e + eps / n) / (e.sum(dim=-1, keepdim=True) + eps)
    return probs.to(logits.dtype)


def attention_forward(attn: Any, x: torch.Tensor, policy: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """timm ``Attention`` computed explicitly with :func:`softmax_with_policy`.

    x (B, N, C) → (output (B, N, C), attention probabilities (B, H, N, N)).
    """
    b, n, _ = x.shape
    heads, head_dim = attn.num_heads, attn.head_dim
    qkv = attn.qkv(x).reshape(b, n, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    probs = softmax_with_policy((q * attn.scale) @ k.transpose(-2, -1), policy)
    out = (attn.attn_drop(probs) @ v).transpose(1, 2).reshape(b, n, heads * head_dim)
    norm = getattr(attn, "norm", None)  # timm >= 1.0.x scale_norm; spec_from_model refuses non-identity
    if norm is not None:
        out = norm(out)
    return attn.proj_drop(attn.proj(out)), probs


def block_forward(blk: Any, x: torch.Tensor, policy: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One timm ``Block`` (pre-norm) with policy-masked attention → (x, attention probabilities)."""
    y, probs = attention_forward(blk.attn, blk.norm1(x), policy)
    x = x + blk.drop_path1(blk.ls1(y))
    x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
    return x, probs


def embed(model: Any, images: torch.Tensor) -> torch.Tensor:
    """Patch embedding, prefix tokens and position embedding, as timm's ``forward_features`` does."""
    x = model._pos_embed(model.patch_embed(images))
    return model.norm_pre(model.patch_drop(x))


def head(model: Any, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """Classifier on final-normed tokens x (B, N, C); average pooling counts kept patch tokens only."""
    if model.global_pool != "avg" or keep is None:
        return model.forward_head(x)
    w = keep.to(x.dtype).unsqueeze(-1)
    pooled = (x[:, model.num_prefix_tokens :] * w).sum(1) / w.sum(1).clamp_min(1e-6)
    return model.head(model.head_drop(model.fc_norm(pooled)))


def masked_forward(
    model: Any,
    images: torch.Tensor,
    decide: Decide = "gumbel",
    decisions: Sequence[torch.Tensor] | None = None,
    tau: float = 1.0,
) -> MaskedOutput:
    """The DynamicViT training forward over all tokens.

    At each ``TokenSelect`` the predictor scores the patch tokens (global feature = mean over the
    tokens still kept) and a decision D (B, n) is taken:

    * ``gumbel``: ``F.gumbel_softmax(log_probs, tau, hard=True)[..., 0]`` on the log-softmax
      output (channel 0 = keep), one-hot forward with straight-through gradients;
    * ``topk``: the ``num_keep`` best-scoring tokens among those still kept, ranked by the
      module's own key (``TokenSelect.score``, the spec's ``token_score``) — the tokens the gathered
      inference path keeps, so the output matches ``model(images)``;
    * ``decisions`` (one (B, n) 0/1 tensor per stage) overrides both.

    The keep mask is cumulative: D_s = D ⊙ D_{s-1}. Every block uses the masked softmax, the
    blocks before the first stage with an all-ones policy (as the official training forward).
    """
    x = embed(model, images)
    num_prefix: int = model.num_prefix_tokens
    b, n_tokens = x.shape[:2]
    keep = torch.ones(b, n_tokens - num_prefix, device=x.device, dtype=x.dtype)
    prefix_policy = torch.ones(b, num_prefix, device=x.device, dtype=x.dtype)
    masks: list[torch.Tensor] = []
    for module in model.blocks:
        if isinstance(module, TokenSelect):
            log_probs = module.predictor(x[:, num_prefix:], keep.unsqueeze(-1))
            stage = len(masks)
            if decisions is not None:
                if stage >= len(decisions):
                    raise ValueError(f"{len(decisions)} decisions given for a model with more stages")
                d = decisions[stage].to(x.dtype)
            elif decide == "gumbel":
                d = F.gumbel_softmax(log_probs, tau=tau, hard=True)[..., 0].to(x.dtype)
            elif decide == "topk":
                scores = rank_scores(log_probs, module.score).masked_fill(keep <= 0, float("-inf"))  # = TokenSelect.keep_scores
                idx = scores.topk(module.num_keep, dim=1).indices
                d = torch.zeros_like(keep).scatter(1, idx, 1.0)
            else:
                raise ValueError(f"unknown decision mode {decide!r}")
            keep = d * keep
            masks.append(keep)
        else:
            policy = torch.cat([prefix_policy, keep], dim=1).unsqueeze(-1)
            x, _ = block_forward(module, x, policy)
    x = model.norm(x)
    return MaskedOutput(head(model, x, keep if masks else None), x[:, num_prefix:], masks)


def gathered_forward(model: Any, images: torch.Tensor,
                     indices: Sequence[torch.Tensor] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The inference forward (kept tokens gathered), also returning each stage's TopK indices.

    Returns (logits, [idx_s (B, K_s)]), idx_s pointing into the token list stage s-1 kept (in its
    descending-score order), exactly what the exported TopK outputs. ``indices`` forces the kept
    tokens instead of ranking them: the fp32 model run on another backend's decisions.
    """
    x = embed(model, images)
    chosen: list[torch.Tensor] = []
    for module in model.blocks:
        if isinstance(module, TokenSelect):
            idx = module.keep_indices(x) if indices is None else indices[len(chosen)].to(x.device)
            x = gather_tokens(x, idx, module.num_prefix)
            chosen.append(idx)
        else:
            x = module(x)
    return model.forward_head(model.norm(x)), chosen


def cls_attention_forward(model: Any, images: torch.Tensor, keep_before: dict[int, int]) -> torch.Tensor:
    """Training-free baseline: keep the patch tokens the class token attends to most.

    ``model`` is a dense ViT with a class token (no ``TokenSelect``); ``keep_before`` maps a block
    index to the number of patch tokens kept before it. The score of a patch token is the class
    token's attention to it in the block just before the stage, averaged over heads; the tokens are
    then gathered with the same static-K ``keep_topk`` as the learned path. Returns logits.
    """
    if model.cls_token is None:
        raise ValueError("class-token attention needs a model with a class token")
    num_prefix = model.num_prefix_tokens
    x = embed(model, images)
    probs: torch.Tensor | None = None
    for i, blk in enumerate(model.blocks):
        if isinstance(blk, TokenSelect):
            raise ValueError("cls_attention_forward takes a dense model without token selection")
        if i in keep_before:
            if probs is None:
                raise ValueError("class-token attention needs at least one block before the first stage")
            scores = probs[:, :, 0, num_prefix:].mean(dim=1)  # (B, n): class-token query, patch keys
            x = keep_topk(x, scores, keep_before[i], num_prefix)
        x, probs = block_forward(blk, x)
    return model.forward_head(model.norm(x))
