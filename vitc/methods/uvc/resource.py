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

With ``--latency`` (:class:`LatencyResource`), R is instead the *predicted latency* of a ``vitc profile`` model
over the dense model's measured latency, in the same continuous counts and gates::

    R = [F + c·Σ_l g_l·(Ta_l(H_l - ceil(s_l0)) + Tm_l(hidden_l - ceil(s_l1)))] / T_dense

with Ta/Tm the profile's piecewise-linear attention and MLP tables at the model's token count, so the
primal–dual search drives it to the budget (1/S for ``--target-speedup S``) exactly as it drives MACs.
V-channel pruning changes no materialized shape, so it does not enter the latency.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from vitc.core.flops import model_macs, per_block_macs
from vitc.core.latency import LatencyModel, load_latency
from vitc.core.spec import ViTSpec
from vitc.methods.uvc.model import BlockMasks


def clamp_inclusive(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``x.clamp(low, high)`` whose gradient also flows *at* the bounds (torch 1.x semantics, which
    the official code relied on: recent torch returns a zero gradient at the upper bound, so at
    s = 0 — kept fraction exactly 1 — the counts would never receive a resource gradient)."""
    return torch.where((x >= low) & (x <= high), x, x.clamp(low, high).detach())


def interp_torch(xs: torch.Tensor, ys: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear ``ys`` over ascending ``xs`` at ``x`` (any shape), differentiable in ``x``; linear
    extrapolation outside the grid, clamped at 0 (as :func:`vitc.core.latency.interp1`)."""
    if xs.numel() == 1:
        return ys.expand_as(x).clamp(min=0)
    i = (torch.searchsorted(xs, x.detach().contiguous(), right=True) - 1).clamp(0, xs.numel() - 2)
    x0, x1, y0, y1 = xs[i], xs[i + 1], ys[i], ys[i + 1]
    return (y0 + (y1 - y0) * (x - x0) / (x1 - x0)).clamp(min=0)


class ResourceModel:
    """Differentiable R for one dense spec; tensors live on ``device``."""

    kind = "macs"

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

    def describe(self) -> dict[str, Any]:
        return {"resource": self.kind}

    @torch.no_grad()
    def floor(self, prune_v: bool = False) -> float:
        """The smallest R the search can reach: the gates keep at least one block and every count at least one
        unit, so the cheapest block kept alone with one head (one V channel of it with ``prune_v``) and one MLP
        neuron, every other block skipped."""
        heads_removed = self.heads - 1
        v_removed = self.heads * self.head_dim - (1 if prune_v else self.head_dim)
        neurons_removed = self.hidden - 1
        ratios = []
        for i in range(self.heads.numel()):
            keep = torch.zeros_like(self.heads)
            keep[i] = 1
            ratios.append(float(self.ratio(heads_removed, v_removed, neurons_removed, keep)))
        return min(ratios)

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


class LatencyResource(ResourceModel):
    """R as the predicted latency fraction of a ``vitc profile`` model (see the module docstring)."""

    kind = "latency"

    def __init__(self, spec: ViTSpec, latency: LatencyModel, device: torch.device | str = "cpu", *,
                 origin: dict[str, Any] | None = None, dense: bool = False) -> None:
        super().__init__(spec, device)
        latency.check_fits(spec, spec.name, origin, dense=dense)
        self.latency = latency
        n = float(spec.num_patches + spec.num_prefix_tokens)

        def vec(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device)

        scale = latency.calibration / latency.dense_ms
        self.const = latency.fixed_ms / latency.dense_ms
        self.head_grid = vec([float(h) for h in latency.heads])
        self.mlp_grid = vec([float(m) for m in latency.mlp])
        self.att_ms = vec([scale * latency.attention_ms(h, n) for h in latency.heads])
        self.mlp_ms = vec([scale * latency.mlp_ms(m, n) for m in latency.mlp])

    def ratio(self, heads_removed: torch.Tensor, v_removed: torch.Tensor, neurons_removed: torch.Tensor,
              keep: torch.Tensor) -> torch.Tensor:
        heads = clamp_inclusive(self.heads - heads_removed, 0.0, float(self.heads.max()))
        neurons = clamp_inclusive(self.hidden - neurons_removed, 0.0, float(self.hidden.max()))
        per_block = interp_torch(self.head_grid, self.att_ms, heads) + interp_torch(self.mlp_grid, self.mlp_ms, neurons)
        return self.const + (keep * per_block).sum()

    def describe(self) -> dict[str, Any]:
        return {"resource": self.kind, "latency": self.latency.source, "latency_target": self.latency.target}


def resource_model(spec: ViTSpec, latency: str | None, device: torch.device | str = "cpu", *,
                   origin: dict[str, Any] | None = None, dense: bool = False) -> ResourceModel:
    """MACs R, or latency R when ``latency`` names a ``vitc profile`` JSON (``origin``/``dense``: what ``spec`` is,
    checked against the profiled model as :meth:`vitc.core.latency.LatencyModel.check_fits` does)."""
    if latency is None:
        return ResourceModel(spec, device)
    return LatencyResource(spec, load_latency(latency), device, origin=origin, dense=dense)


def check_reachable(resource: ResourceModel, spec: ViTSpec, budget: float, target_speedup: float | None, prune_v: bool,
                    label: Any) -> None:
    """Refuse a budget (or speed target) below the smallest R the search can reach (:meth:`ResourceModel.floor`)
    before any work, naming the best reachable value; ``label`` names the settings fields (CLI flag or YAML key)."""
    from vitc.core.errors import UsageError

    floor = resource.floor(prune_v)
    if budget >= floor - 1e-9:
        return
    fastest = (f"the smallest model UVC can make of {spec.name} (one block kept, with one head and one MLP neuron, "
               "every other block skipped)")
    if target_speedup is not None and isinstance(resource, LatencyResource):
        best = math.floor(100 / floor) / 100  # rounded down: a target of the printed value is reachable
        raise UsageError(f"{label('target_speedup')} {target_speedup:g} is out of reach: {fastest} is predicted "
                         f"{best:.2f}x faster than dense by {resource.latency.source or 'the latency profile'}; "
                         f"ask for at most {best:.2f}x (or add token selection: uvc+dynamicvit)")
    what = "predicted latency" if isinstance(resource, LatencyResource) else "MACs"
    least = math.ceil(floor * 1e4) / 1e4
    name = "latency_budget" if isinstance(resource, LatencyResource) else "budget"
    raise UsageError(f"{label(name)} {budget:g} is out of reach: {fastest} keeps {floor:.4f} of the dense {what}; "
                     f"give a budget of at least {least:.4f}")
