"""UVC materialization: masks and hard gates → a physically smaller timm ``VisionTransformer``.

* Skipped blocks (keep logit <= skip logit) are removed, norms and LayerScale included.
* Heads: head h is alive if any of its ``attn.proj`` input columns is unmasked. For alive heads
  all Q, K and V rows of ``attn.qkv`` are kept (timm orders them [q | k | v], each heads×head_dim,
  so row = part·H·d + h·d + j) and the matching ``attn.proj`` columns. The head size — and thus
  the attention scale head_dim^-0.5 — never changes (timm ``Attention(attn_head_dim=d)``).
* MLP: the unmasked hidden neurons keep their fc1 rows (+ bias) and fc2 columns.
* V channels (``--prune-v``): timm's ``Attention`` needs V as wide as Q/K, so alive heads keep
  their full V; the pruned channels' ``attn.proj`` columns stay zero (brief option (c) with zeros).
  The exported model therefore does not realise the V-channel MACs that R counted.
"""

from __future__ import annotations

import torch
from torch import nn

from vitc.core.errors import CheckFailed
from vitc.core.spec import BlockSpec, ViTSpec
from vitc.methods.uvc.model import BlockMasks

CHECK_BATCH = 4


def alive_heads(mask: BlockMasks, head_dim: int) -> torch.Tensor:
    """Indices of heads with at least one unmasked proj column."""
    return torch.nonzero(mask.proj.view(-1, head_dim).sum(1) > 0).flatten()


def sliced_spec(spec: ViTSpec, masks: list[BlockMasks], kept: list[bool]) -> ViTSpec:
    """The dense spec minus skipped blocks, with each kept block's alive heads and neurons."""
    blocks = [
        BlockSpec(heads=int(alive_heads(m, b.head_dim).numel()), head_dim=b.head_dim, mlp_hidden=m.neurons_kept())
        for b, m, keep in zip(spec.blocks, masks, kept) if keep
    ]
    if not blocks:
        raise CheckFailed("the UVC gates skip every block; there is no network left to materialize")
    return spec.replace(blocks=blocks)


def sliced_state(state: dict[str, torch.Tensor], spec: ViTSpec, masks: list[BlockMasks],
                 kept: list[bool]) -> dict[str, torch.Tensor]:
    """Slice a dense timm ViT state dict (masked weights) to :func:`sliced_spec`'s shapes."""
    out = {k: v.clone() for k, v in state.items() if not k.startswith("blocks.")}
    j = 0
    for i, (b, m, keep) in enumerate(zip(spec.blocks, masks, kept)):
        if not keep:
            continue
        d, inner = b.head_dim, b.heads * b.head_dim
        cols = (alive_heads(m, d)[:, None] * d + torch.arange(d)).flatten()
        rows = torch.cat([part * inner + cols for part in range(3)])
        neurons = torch.nonzero(m.mlp > 0).flatten()
        take: dict[str, tuple[int, torch.Tensor]] = {  # parameter → (axis, kept indices)
            "attn.qkv.weight": (0, rows), "attn.qkv.bias": (0, rows), "attn.proj.weight": (1, cols),
            "mlp.fc1.weight": (0, neurons), "mlp.fc1.bias": (0, neurons), "mlp.fc2.weight": (1, neurons),
        }
        prefix = f"blocks.{i}."
        for key, value in state.items():
            if key.startswith(prefix):
                name = key[len(prefix):]
                axis, index = take.get(name, (-1, torch.empty(0)))
                out[f"blocks.{j}.{name}"] = (value.index_select(axis, index) if axis >= 0 else value).clone()
        j += 1
    return out


@torch.no_grad()
def max_logit_diff(a: nn.Module, b: nn.Module, spec: ViTSpec, seed: int = 0) -> float:
    """Max |a(x) - b(x)| over a seeded batch of N(0, 1) images of the spec's input shape."""
    x = torch.randn(CHECK_BATCH, *spec.input_shape, generator=torch.Generator().manual_seed(seed))
    return float((a.eval()(x) - b.eval()(x)).abs().max())
