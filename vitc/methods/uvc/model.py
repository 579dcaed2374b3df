"""UVC's view of a timm ViT: a Gumbel skip gate per block, weight-norm unit ranking, and masks.

The prunable units (Yu et al., ICLR 2022; official code ``uvc_utils.py``) all live in the inputs of
the block's *output* projections, never in Q/K or in the embedding width:

* a whole head h of block l: columns ``[h*d, (h+1)*d)`` of ``attn.proj.weight`` (d = head_dim);
  its importance is the squared norm of that column block;
* one V channel j of head h (``--prune-v``): column ``h*d + j`` of ``attn.proj.weight``;
  importance = squared column norm;
* one MLP hidden neuron j: column j of ``mlp.fc2.weight`` (and row j of ``mlp.fc1.weight``);
  importance = squared fc2 column norm.

*Which* units go is never learned: given a count k, the k units with the smallest importance are
picked (``topk(largest=False)``) every time a mask or a proximal step is needed. Only the counts are
optimisation variables (see ``uvc_train``).

The skip gate wraps the whole block, internal residuals included:
``x <- g_keep * Block(x) + g_skip * x`` with ``(g_skip, g_keep)`` a soft Gumbel-softmax sample
(tau = 0.5) of two logits initialised to (-1, +1). During the gate warm-up both are fixed at 0.5;
with hard gates a block runs only if its keep logit exceeds its skip logit, otherwise it is an
exact identity.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vitc.core.spec import ViTSpec

GATE_INIT = (-1.0, 1.0)  # (skip, keep) logits: softmax keep probability 0.88
GATE_TAU = 0.5
GATE_MODES = ("fixed", "soft", "hard")


def gumbel_softmax(logits: torch.Tensor, tau: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A soft Gumbel-softmax sample over the last dim (``hard=False``), noise drawn on the CPU.

    ``generator`` makes the sample reproducible and identical on every DDP rank (the resource
    model's samples); ``None`` uses the global RNG (the forward pass, like dropout).
    """
    u = torch.rand(logits.shape, generator=generator, dtype=torch.float32)
    noise = -torch.log(-torch.log(u + 1e-10) + 1e-10)
    return ((logits + noise.to(logits.device, logits.dtype)) / tau).softmax(-1)


class UVCViT(nn.Module):
    """A timm ``VisionTransformer`` (``.vit``) run block by block under UVC's skip gates.

    ``gate_mode``: ``"fixed"`` (0.5/0.5 mixing, the warm-up), ``"soft"`` (a fresh Gumbel sample
    each forward, stage 1), ``"hard"`` (argmax; skipped blocks are identities — stage 2, eval).
    Input (B, C, H, W) images, output (B, num_classes) logits, as the wrapped model.
    """

    def __init__(self, vit: Any, gate_logits: torch.Tensor | None = None, gate_mode: str = "soft") -> None:
        super().__init__()
        self.vit: Any = vit
        depth = len(vit.blocks)
        if gate_logits is None:
            gate_logits = torch.tensor([GATE_INIT] * depth)
        self.gate_logits = nn.Parameter(gate_logits.detach().clone().float())
        self.gate_mode = gate_mode

    @property
    def gate_mode(self) -> str:
        return self._gate_mode

    @gate_mode.setter
    def gate_mode(self, mode: str) -> None:
        if mode not in GATE_MODES:
            raise ValueError(f"gate_mode must be one of {GATE_MODES}, got {mode!r}")
        self._gate_mode = mode

    def kept_blocks(self) -> list[bool]:
        """Hard decisions: block l runs iff its keep logit > its skip logit."""
        return (self.gate_logits[:, 1] > self.gate_logits[:, 0]).tolist()

    def gate_weights(self) -> torch.Tensor:
        """(depth, 2) mixing weights (skip, keep) for the fixed and soft modes."""
        if self.gate_mode == "fixed":
            return torch.full_like(self.gate_logits, 0.5)
        return gumbel_softmax(self.gate_logits, GATE_TAU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vit = self.vit
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
        if self.gate_mode == "hard":
            for blk, keep in zip(vit.blocks, self.kept_blocks()):
                if keep:
                    x = blk(x)
        else:
            g = self.gate_weights()
            for i, blk in enumerate(vit.blocks):
                x = g[i, 1] * blk(x) + g[i, 0] * x
        return vit.forward_head(vit.norm(x))


# ------------------------------------------------------------------------------------------------
# unit importance and least-k selection
# ------------------------------------------------------------------------------------------------


@torch.no_grad()
def head_scores(block: Any, heads: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared norms of ``attn.proj`` input columns: per V channel (heads, head_dim) and per head (heads,)."""
    cols = block.attn.proj.weight.detach().float().pow(2).sum(0).view(heads, head_dim)
    return cols, cols.sum(1)


@torch.no_grad()
def neuron_scores(block: Any) -> torch.Tensor:
    """Squared norms of ``mlp.fc2`` input columns, one per hidden neuron (hidden,)."""
    return block.mlp.fc2.weight.detach().float().pow(2).sum(0)


def num_removed(count: float | torch.Tensor) -> int:
    """The integer count a continuous count stands for: ``ceil(s)`` (never negative)."""
    return max(0, int(math.ceil(float(count))))


def least(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` smallest entries of a 1-d tensor (k clipped to its length)."""
    k = min(max(k, 0), scores.numel())
    return torch.topk(scores, k, largest=False, sorted=False).indices


# ------------------------------------------------------------------------------------------------
# masks
# ------------------------------------------------------------------------------------------------


@dataclass
class BlockMasks:
    """Keep masks of one block (1 = kept): ``proj`` over attn.proj input columns (heads*head_dim,),
    ``mlp`` over hidden neurons (hidden,)."""

    proj: torch.Tensor
    mlp: torch.Tensor

    def heads_kept(self, head_dim: int) -> int:
        return int((self.proj.view(-1, head_dim).sum(1) > 0).sum())

    def neurons_kept(self) -> int:
        return int((self.mlp > 0).sum())

    def v_channels_kept(self) -> int:
        return int((self.proj > 0).sum())


@torch.no_grad()
def masks_from_counts(vit: Any, spec: ViTSpec, s: torch.Tensor, r: torch.Tensor | None) -> list[BlockMasks]:
    """The official ``prune_w_mask``: zero the ceil(r[l,h]) weakest V channels of every head, the
    ceil(s[l,0]) weakest heads and the ceil(s[l,1]) weakest neurons of every block.

    ``s`` (depth, 2) = (heads removed, neurons removed); ``r`` (depth, max_heads) V channels removed
    per head, or None when V channels are not pruned.
    """
    masks = []
    for l, (blk, bs) in enumerate(zip(vit.blocks, spec.blocks)):
        cols, heads = head_scores(blk, bs.heads, bs.head_dim)
        proj = torch.ones(bs.heads, bs.head_dim, device=cols.device)
        if r is not None:
            for h in range(bs.heads):
                proj[h, least(cols[h], num_removed(r[l, h]))] = 0
        proj[least(heads, num_removed(s[l, 0]))] = 0
        mlp = torch.ones(bs.mlp_hidden, device=cols.device)
        mlp[least(neuron_scores(blk), num_removed(s[l, 1]))] = 0
        masks.append(BlockMasks(proj.reshape(-1), mlp))
    return masks


@torch.no_grad()
def apply_masks(vit: Any, masks: list[BlockMasks]) -> None:
    """``weight *= mask`` in place: proj input columns, fc2 input columns and fc1 rows (biases untouched:
    a pruned fc1 bias only feeds a zeroed fc2 column)."""
    for blk, m in zip(vit.blocks, masks):
        proj = m.proj.to(blk.attn.proj.weight)
        mlp = m.mlp.to(blk.mlp.fc2.weight)
        blk.attn.proj.weight.mul_(proj.unsqueeze(0))
        blk.mlp.fc2.weight.mul_(mlp.unsqueeze(0))
        blk.mlp.fc1.weight.mul_(mlp.unsqueeze(1))


def hard_masked_copy(model: UVCViT, masks: list[BlockMasks]) -> UVCViT:
    """A copy of ``model`` with masks applied and hard gates: the network stage 1 would hand over now."""
    clone = copy.deepcopy(model)
    apply_masks(clone.vit, masks)
    clone.gate_mode = "hard"
    return clone.eval()
