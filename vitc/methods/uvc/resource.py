"""UVC's resource model R(s, r, g): the MACs a gated, pruned ViT keeps, as a fraction of the dense model.

Per block l, with the analytic MAC terms of ``vitc.core.flops`` (Q = qkv, A = QKᵀ, V = attn·V,
P = proj, F1/F2 = fc1/fc2; MACs, not 2×MACs, as the paper reports):

    a_l = 1 - ceil(s_l0) / H_l                                     fraction of heads kept
    b_l = 1 - (d_l·ceil(s_l0) + Σ_{h alive} ceil(r_lh)) / (H_l·d_l)   fraction of V channels kept
    c_l = 1 - ceil(s_l1) / hidden_l                                fraction of MLP neurons kept
    R   = [E + Σ_l g_l·(a_l(Q_l + A_l) + b_l(V_l + P_l) + c_l(F1_l + F2_l))] / dense MACs

(official ``calc_flops`` with ``--flops_with_mhsa 1``). The qkv cost scales with the head fraction
only — V-channel savings inside qkv are not counted, as in the official code. E is the patch
embedding; we also put the classifier head(s) into the constant (the official code ignores them,
0.02 % of DeiT-T), so that with hard gates and no V pruning R is *exactly* the analytic MACs of the
materialized model over those of the dense one.
"""

from __future__ import annotations

import torch

from vitc.core.flops import model_macs, per_block_macs
from vitc.core.spec import ViTSpec
from vitc.methods.uvc.model import BlockMasks


def clamp_inclusive(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``x.clamp(low, high)`` whose gradient also flows *at* the bounds (torch 1.x semantics, which
    the official code relied on: recent torch returns a zero gradient at the upper bound, so at
    s = 0 — kept fraction exactly 1 — the counts would never receive a resource gradient)."""
    return torch.where((x >= low) & (x <= high), x, x.clamp(low, high).detach())


class ResourceModel:
    """Differentiable R for one dense spec; tensors live on ``device``."""

    def __init__(self, spec: ViTSpec, device: torch.device | str = "cpu") -> None:
        rows = per_block_macs(spec)
        total = model_macs(spec)
        self.dense_macs = total
        self.const = (total - sum(b.total for b in rows)) / total  # patch embedding + classifier head(s)

        def vec(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device)

        self.qk = vec([(b.qkv + b.qk) / total for b in rows])
        self.vp = vec([(b.av + b.proj) / total for b in rows])
        self.mlp = vec([(b.fc1 + b.fc2) / total for b in rows])
        self.heads = vec([b.heads for b in spec.blocks])
        self.head_dim = vec([b.head_dim for b in spec.blocks])
        self.hidden = vec([b.mlp_hidden for b in spec.blocks])

    def ratio(self, heads_removed: torch.Tensor, v_removed: torch.Tensor, neurons_removed: torch.Tensor,
              keep: torch.Tensor) -> torch.Tensor:
        """R (a 0-d tensor) from per-block (depth,) removed heads, removed V channels (whole pruned
        heads included), removed neurons and block keep weights g in [0, 1]."""
        a = clamp_inclusive(1 - heads_removed / self.heads, 0.0, 1.0)
        b = clamp_inclusive(1 - v_removed / (self.heads * self.head_dim), 0.0, 1.0)
        c = clamp_inclusive(1 - neurons_removed / self.hidden, 0.0, 1.0)
        return self.const + (keep * (a * self.qk + b * self.vp + c * self.mlp)).sum()

    @torch.no_grad()
    def masked_ratio(self, masks: list[BlockMasks], kept: list[bool]) -> float:
        """R of the masked model with hard gates (what the masks and argmax gates really remove)."""
        dev = self.heads.device
        heads_kept = torch.tensor([m.heads_kept(int(d)) for m, d in zip(masks, self.head_dim.tolist())], device=dev)
        v_kept = torch.tensor([m.v_channels_kept() for m in masks], device=dev, dtype=torch.float32)
        neurons_kept = torch.tensor([m.neurons_kept() for m in masks], device=dev, dtype=torch.float32)
        keep = torch.tensor(kept, device=dev, dtype=torch.float32)
        return float(self.ratio(self.heads - heads_kept, self.heads * self.head_dim - v_kept,
                                self.hidden - neurons_kept, keep))
