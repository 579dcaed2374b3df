"""Land the hand-over state on the budget: give units back until R is in [LAND_LOW·budget, budget].

The search hands over the state whose R is the largest one under the budget, but whole-block skips move R in
steps of ~1/depth, so that state can sit far under it (digits, budget 0.5: R 0.378). Fine-tuning a model that
small costs accuracy nobody asked to give up, so before stage 2 the units the search removed are given back by
UVC's own ranking — in each kept block the most important removed head or MLP neuron first (weight norm, as the
masks chose them), blocks in turn from the least filled — while R stays within the budget. If every kept block is
full and R is still short, the skipped block with the strongest keep logit is brought back, starting from its one
most important head and neuron, and filled the same way. This is vitc's addition (the official code fine-tunes
whatever checkpoint is closest); ``--no-land`` hands over the search's state as it is.
"""

from __future__ import annotations

from typing import Any

import torch

from vitc.core.spec import ViTSpec
from vitc.methods.uvc.model import GATE_INIT, BlockMasks, UVCViT, head_scores, neuron_scores
from vitc.methods.uvc.resource import ResourceModel

LAND_LOW = 0.95  # the landed R is at least this fraction of the budget when units allow it
SLACK = 1e-9


class _Block:
    """One block's masks with its removed units queued most important first."""

    def __init__(self, mask: BlockMasks, block: Any, heads: int, head_dim: int) -> None:
        self.mask, self.d = mask, head_dim
        _, head_imp = head_scores(block, heads, head_dim)
        alive = mask.proj.view(heads, head_dim).sum(1) > 0
        self.heads = [int(h) for h in torch.argsort(head_imp, descending=True) if not alive[h]]
        neuron_imp = neuron_scores(block)
        self.neurons = [int(j) for j in torch.argsort(neuron_imp, descending=True) if mask.mlp[j] == 0]
        self.num_heads, self.hidden = heads, mask.mlp.numel()

    def fill(self) -> float:
        return (self.mask.heads_kept(self.d) / self.num_heads + self.mask.neurons_kept() / self.hidden) / 2

    def restore(self, kind: str, count: int) -> list[int]:
        units = self.heads if kind == "heads" else self.neurons
        taken, rest = units[:count], units[count:]
        if kind == "heads":
            self.heads = rest
            for h in taken:
                self.mask.proj[h * self.d : (h + 1) * self.d] = 1
        else:
            self.neurons = rest
            self.mask.mlp[taken] = 1
        return taken

    def undo(self, kind: str, taken: list[int]) -> None:
        if kind == "heads":
            self.heads = taken + self.heads
            for h in taken:
                self.mask.proj[h * self.d : (h + 1) * self.d] = 0
        else:
            self.neurons = taken + self.neurons
            self.mask.mlp[taken] = 0


@torch.no_grad()
def land(net: UVCViT, spec: ViTSpec, masks: list[BlockMasks], resource: ResourceModel, budget: float,
         low: float = LAND_LOW) -> dict[str, Any]:
    """Give units back (``masks`` edited in place; a revived block's gate logits set to keep) until R is in
    [low·budget, budget] or nothing more fits; return what was done (for metrics.json)."""
    kept = net.kept_blocks()
    before = resource.masked_ratio(masks, kept)
    blocks = [_Block(m, blk, b.heads, b.head_dim) for m, blk, b in zip(masks, net.vit.blocks, spec.blocks)]
    restored = {"heads": 0, "neurons": 0, "blocks": 0}

    def ratio() -> float:
        return resource.masked_ratio(masks, kept)

    r = before
    while r < low * budget:
        r = _fill(blocks, kept, ratio, budget, low, restored, r)
        if r >= low * budget or not _revive(net, blocks, kept, ratio, budget, restored):
            break
        r = ratio()
    return {"resource_before": before, "resource": r, "restored": restored, "low": low * budget, "budget": budget}


def _fill(blocks: list[_Block], kept: list[bool], ratio: Any, budget: float, low: float, restored: dict[str, int],
          r: float) -> float:
    """Restore units in kept blocks, least filled block first, while R stays <= budget."""
    exhausted: set[tuple[int, str]] = set()
    while r < low * budget:
        options = [(blk.fill(), i) for i, blk in enumerate(blocks) if kept[i] and _open(blk, i, exhausted)]
        if not options:
            break
        _, i = min(options)
        blk = blocks[i]
        heads_first = blk.mask.heads_kept(blk.d) / blk.num_heads <= blk.mask.neurons_kept() / blk.hidden
        kinds = ["heads", "neurons"] if heads_first else ["neurons", "heads"]
        kind = next(k for k in kinds if (i, k) not in exhausted and (blk.heads if k == "heads" else blk.neurons))
        step = 1 if kind == "heads" else max(1, blk.hidden // 64)
        while True:
            taken = blk.restore(kind, step)
            new = ratio()
            if new <= budget + SLACK:
                r = new
                restored[kind] += len(taken)
                break
            blk.undo(kind, taken)
            if step == 1:
                exhausted.add((i, kind))
                break
            step = 1
    return r


def _open(blk: _Block, i: int, exhausted: set[tuple[int, str]]) -> bool:
    return bool(((i, "heads") not in exhausted and blk.heads) or ((i, "neurons") not in exhausted and blk.neurons))


def _revive(net: UVCViT, blocks: list[_Block], kept: list[bool], ratio: Any, budget: float, restored: dict[str, int]) -> bool:
    """Bring back the skipped block with the strongest keep logit at one head and one neuron, if that fits."""
    logits = net.gate_logits.detach()
    skipped = [i for i, k in enumerate(kept) if not k]
    if not skipped:
        return False
    i = max(skipped, key=lambda j: float(logits[j, 1] - logits[j, 0]))
    blk = blocks[i]
    old_proj, old_mlp, old_heads, old_neurons = blk.mask.proj.clone(), blk.mask.mlp.clone(), blk.heads, blk.neurons
    order_h = blk.heads + [h for h in range(blk.num_heads) if h not in blk.heads]
    order_n = blk.neurons + [j for j in range(blk.hidden) if j not in blk.neurons]
    _, head_imp = head_scores(net.vit.blocks[i], blk.num_heads, blk.d)
    neuron_imp = neuron_scores(net.vit.blocks[i])
    best_h, best_n = int(head_imp.argmax()), int(neuron_imp.argmax())
    blk.mask.proj.zero_()
    blk.mask.mlp.zero_()
    blk.mask.proj[best_h * blk.d : (best_h + 1) * blk.d] = 1
    blk.mask.mlp[best_n] = 1
    blk.heads = [h for h in sorted(order_h, key=lambda h: -float(head_imp[h])) if h != best_h]
    blk.neurons = [j for j in sorted(order_n, key=lambda j: -float(neuron_imp[j])) if j != best_n]
    kept[i] = True
    if ratio() > budget + SLACK:
        kept[i] = False
        blk.mask.proj.copy_(old_proj)
        blk.mask.mlp.copy_(old_mlp)
        blk.heads, blk.neurons = old_heads, old_neurons
        return False
    net.gate_logits.data[i] = torch.tensor(GATE_INIT, dtype=net.gate_logits.dtype)
    restored["blocks"] += 1
    return True


__all__ = ["LAND_LOW", "land"]
