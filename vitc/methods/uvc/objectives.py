"""UVC's two training stages as :class:`vitc.train.loop.Objective` hooks on the shared loop.

:class:`UVCSearch` (stage 1) is Algorithm 1 as the official code runs it: after every AdamW step on the KD
loss, a proximal shrink of the selected groups, an SGD step on the counts, a gate step every
``gate_interval`` steps and dual ascent on y, p, z, with R the MACs fraction or, with ``--latency``, the
predicted latency fraction (:mod:`vitc.methods.uvc.resource`). :class:`UVCFinetune` (stage 2) fine-tunes the
handed-over state with KD, hard gates and the masks re-applied after every step. Each step, the presets'
quirks and where vitc departs from the released code: docs/methods.md ("UVC").
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitc.core.spec import ViTSpec
from vitc.methods.uvc.model import (
    GATE_TAU,
    BlockMasks,
    apply_masks,
    gumbel_softmax,
    hard_masked_copy,
    head_scores,
    least,
    masks_from_counts,
    neuron_scores,
    num_removed,
)
from vitc.methods.uvc.resource import clamp_inclusive, resource_model
from vitc.methods.uvc.settings import UVCSettings
from vitc.train.loop import Objective, StepContext, TrainSettings, default_param_groups

DUAL_INIT = 1e-3  # y, p and z all start here (official UVC_CP_MiniMax)
GATE_MOMENTUM = 0.9
GATE_WEIGHT_DECAY = 1e-4
BUDGET_SLACK = 1e-9  # float tolerance when comparing R with the budget

def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, alpha: float,
                      tau: float, label_smoothing: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DeiT's soft distillation as UVC uses it: ``(1-α)·CE + α·KL(s/T || t/T)·T²/numel``.

    ``numel`` = batch × classes, as in DeiT's ``DistillationLoss`` (so the KD term is small).
    """
    ce = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
    kd = F.kl_div(F.log_softmax(logits / tau, dim=1), F.log_softmax(teacher_logits / tau, dim=1),
                  reduction="sum", log_target=True) * (tau * tau) / logits.numel()
    return (1 - alpha) * ce + alpha * kd, {"ce": ce, "kd": kd}


def z_lr_at(schedule: tuple[float, ...], epoch: int, epochs: int) -> float:
    """η_z for 0-based ``epoch``: value i from 1-based epoch i·(epochs // len) on (paper's intent)."""
    gap = max(1, epochs // len(schedule))
    return float(schedule[min(len(schedule) - 1, (epoch + 1) // gap)])


def ste_ceil(x: torch.Tensor) -> torch.Tensor:
    """ceil(x) forward, identity backward (official ``SteCeil``)."""
    return x + (x.ceil() - x).detach()


def _next_least(scores: torch.Tensor, k: int) -> float:
    """The (k+1)-th smallest score, or the largest when k covers them all (``LeastSsum.backward``)."""
    if k + 1 <= scores.numel():
        return float(torch.topk(scores, k + 1, largest=False, sorted=True).values[-1])
    return float(scores.max())


def _least_sum(scores: torch.Tensor, k: int) -> float:
    """Sum of the k smallest scores (``LeastSsum.forward``)."""
    return float(scores[least(scores, k)].sum()) if k > 0 else 0.0


def _count_step(x: torch.Tensor, grad: torch.Tensor, upper: torch.Tensor, lr: float, pin: bool = False) -> None:
    """One projected SGD step on a count tensor, in place (official s/r update).

    ``pin`` reproduces the released code's projection, which resets every entry that was at its upper
    bound before the step back to it, so such a count can never decrease again.
    """
    x_max = (upper - 1 - 1e-8).clamp(min=0.0)
    grad = grad.clone()
    over, under = x >= x_max, x <= 0
    grad[over] = grad[over].clamp(min=0.0)
    grad[under] = grad[under].clamp(max=0.0)
    grad.mul_(min(1.0, 1.0 / (float(grad.abs().max()) + 1e-6)))  # clip_grad_norm_(…, 1.0, inf)
    x.sub_(lr * grad)
    x.copy_(torch.minimum(x.clamp(min=0.0), x_max))
    if pin:
        x[over] = x_max[over]


class _Distilled(Objective):
    """KD from the frozen dense teacher (DeiT soft distillation, T = ``kd_tau``)."""

    def __init__(self, teacher: nn.Module, settings: UVCSettings, label_smoothing: float) -> None:
        super().__init__(label_smoothing)
        self.teacher = teacher
        self.settings = settings
        self.latency_profile = None  # the profile's path and content digest: a resume must read the same profile
        if settings.latency is not None:
            from vitc.core.fileio import file_sha256

            self.latency_profile = f"{settings.latency} (sha256 {file_sha256(settings.latency)[:16]})"

    def settings_record(self) -> dict[str, Any]:
        """The settings, and with ``--latency`` the profile's content digest, so that ``--resume`` refuses a profile
        changed in place since the checkpoint (the run would mix two resource models)."""
        record = super().settings_record()
        if self.latency_profile is not None:
            record["latency_profile"] = self.latency_profile
        return record

    def setup(self, model: Any, device: torch.device) -> None:
        self.teacher.to(device)

    def loss(self, model: Any, images: torch.Tensor, targets: torch.Tensor,
             ctx: StepContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = model(images)
        with torch.no_grad():
            teacher_logits = self.teacher(images)
        return distillation_loss(logits, teacher_logits, targets, self.settings.kd_alpha, self.settings.kd_tau,
                                 self.label_smoothing)


def block_report(spec: ViTSpec, masks: list[BlockMasks], kept: list[bool]) -> dict[str, Any]:
    """Kept blocks, and per block the heads and MLP neurons the masks keep (for metrics.json)."""
    return {
        "blocks_kept": int(sum(kept)),
        "gates": [int(k) for k in kept],
        "heads_kept": [m.heads_kept(b.head_dim) for m, b in zip(masks, spec.blocks)],
        "neurons_kept": [m.neurons_kept() for m in masks],
    }


class UVCSearch(_Distilled):
    """Stage 1: the primal–dual search over counts s, r, gates θ and duals y, p, z.

    State (all in :meth:`state_dict`, so ``--resume`` is exact at epoch boundaries): s (depth, 2) =
    heads and neurons removed per block; r (depth, max_heads) = V channels removed per head; y, p,
    z; the gate optimiser; the current η_z; and ``pick``, the state handed to stage 2.

    **Picking the state at the target.** The official code saves a checkpoint every epoch and the
    authors fine-tune the one whose FLOPs hit the target. Here the candidate is the post-warm-up
    state whose hard-gated, masked MACs ratio is the largest one <= budget (later states win ties
    at epoch ends). Besides every epoch end it is checked after every step: with ~20 steps per
    epoch instead of ~5,000, several gates can flip within one epoch, and epoch-end snapshots alone
    would jump over the target (e.g. 0.62 → 0.32 for a 0.5 budget).
    """

    name = "uvc-search"
    find_unused_parameters = True  # θ is unused in the fixed-gate warm-up

    def __init__(self, spec: ViTSpec, teacher: nn.Module, settings: UVCSettings, label_smoothing: float,
                 epochs: int, seed: int) -> None:
        super().__init__(teacher, settings, label_smoothing)
        self.spec, self.epochs, self.seed = spec, epochs, seed
        depth, hmax = spec.depth, max(b.heads for b in spec.blocks)
        self.s = torch.zeros(depth, 2)
        self.s_ub = torch.tensor([[b.heads, b.mlp_hidden] for b in spec.blocks], dtype=torch.float32)
        self.r = torch.zeros(depth, hmax)
        self.r_ub = torch.tensor([[b.head_dim if h < b.heads else 0 for h in range(hmax)] for b in spec.blocks],
                                 dtype=torch.float32)
        self.head_dim = torch.tensor([b.head_dim for b in spec.blocks], dtype=torch.float32)
        self.y = torch.full((depth, 2), DUAL_INIT)
        self.p = torch.full((depth, hmax), DUAL_INIT)
        self.z = torch.tensor(DUAL_INIT)
        self.z_lr = float(settings.z_lr_schedule[0])
        self.resource = resource_model(spec, settings.latency)
        self.gate_opt: torch.optim.SGD | None = None
        self.gate_grads: list[torch.Tensor] = []
        self.pick: dict[str, Any] | None = None
        self._masks: list[BlockMasks] | None = None

    # ---- set-up ---------------------------------------------------------------------------------
    def setup(self, model: Any, device: torch.device) -> None:
        super().setup(model, device)
        for name in ("s", "s_ub", "r", "r_ub", "head_dim", "y", "p", "z"):
            setattr(self, name, getattr(self, name).to(device))
        self.resource = resource_model(self.spec, self.settings.latency, device)
        self.gate_opt = torch.optim.SGD([model.gate_logits], lr=self.settings.gate_lr, momentum=GATE_MOMENTUM,
                                        weight_decay=GATE_WEIGHT_DECAY)

    def param_groups(self, model: Any, cfg: TrainSettings) -> list[dict[str, Any]]:
        groups = default_param_groups(model, cfg.weight_decay, skip={"gate_logits"},
                                      decay_all=self.settings.decay_all_params)
        return groups + [{"params": [model.gate_logits], "weight_decay": cfg.weight_decay, "name": "uvc_gates"}]

    def lr_scale(self, group: dict[str, Any], epoch: int) -> float:
        if group.get("name") == "uvc_gates" and self.in_warmup(epoch):
            return 0.0  # gates frozen during the warm-up
        return super().lr_scale(group, epoch)

    def in_warmup(self, epoch: int) -> bool:
        return epoch < self.settings.gate_warmup_epochs

    # ---- epoch hooks ----------------------------------------------------------------------------
    def on_epoch_start(self, model: Any, epoch: int) -> None:
        model.gate_mode = "fixed" if self.in_warmup(epoch) else "soft"
        self.gate_grads = []
        schedule = self.settings.z_lr_schedule
        self.z_lr = z_lr_at(schedule, epoch, self.epochs) if self.settings.z_lr_dynamic else float(schedule[0])

    def on_epoch_end(self, model: Any, epoch: int) -> dict[str, Any]:
        masks = self.masks(model)
        kept = model.kept_blocks()
        ratio = self.resource.masked_ratio(masks, kept)
        self._masks = masks
        self._consider(model, ratio, epoch, step=None, masks=masks)
        with torch.no_grad():
            expected = float(self._ratio(model, self.s, self.r, model.gate_logits.softmax(-1)[:, 1]))
        return {
            "stage": "warmup" if self.in_warmup(epoch) else "search",
            "R": ratio,
            "R_expected": expected,
            "z": float(self.z),
            "z_lr": self.z_lr,
            **block_report(self.spec, masks, kept),
            "s": [[round(v, 4) for v in row] for row in self.s.tolist()],
            **({"r": [[round(v, 4) for v in row] for row in self.r.tolist()]} if self.settings.prune_v else {}),
            "picked_epoch": self.pick["epoch"] if self.pick else None,
            "picked_step": self.pick["step"] if self.pick else None,
        }

    def _consider(self, model: Any, ratio: float, epoch: int, step: int | None,
                  masks: list[BlockMasks] | None = None) -> None:
        """Keep this state as the hand-over candidate if its hard MACs ratio meets the budget more
        closely than the current one (ties: the later state, at epoch ends)."""
        if ratio > self.settings.resource_budget + BUDGET_SLACK or self.in_warmup(epoch):
            return
        if self.pick is not None and not (ratio > self.pick["R"] or (step is None and ratio >= self.pick["R"])):
            return
        masks = masks if masks is not None else self.masks(model)
        self.pick = {
            "epoch": epoch + 1,
            "step": step,
            "R": ratio,
            "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "masks": [[m.proj.cpu(), m.mlp.cpu()] for m in masks],
            "s": self.s.cpu().clone(),
            "r": self.r.cpu().clone(),
        }

    def eval_model(self, model: Any) -> nn.Module:
        return hard_masked_copy(model, self._masks if self._masks is not None else self.masks(model))

    def masks(self, model: Any) -> list[BlockMasks]:
        return masks_from_counts(model.vit, self.spec, self.s, self.r if self.settings.prune_v else None)

    # ---- the per-step primal-dual update --------------------------------------------------------
    def after_step(self, model: Any, ctx: StepContext) -> None:
        st = self.settings
        self._prox(model, ctx.lr)
        if self.in_warmup(ctx.epoch):
            return
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + ctx.step)
        scores = self._scores(model)

        # counts: y·v_{k+1} (+ p·v_{k+1} for r) and the clipped resource gradient
        s = self.s.clone().requires_grad_(True)
        r = self.r.clone().requires_grad_(st.prune_v)
        theta = model.gate_logits.detach().clone().requires_grad_(True)
        keep = gumbel_softmax(theta, GATE_TAU, gen)[:, 1]
        excess = clamp_inclusive(self._ratio(model, s, r, keep, scores) - st.resource_budget, -st.z_grad_clip, st.z_grad_clip)
        wrt = [s, theta] + ([r] if st.prune_v else [])
        grads = torch.autograd.grad(excess, wrt, allow_unused=True)
        g_s, g_theta = (g if g is not None else torch.zeros_like(x) for g, x in zip(grads[:2], wrt[:2]))
        z = float(self.z)

        sparse_s = torch.zeros_like(self.s)
        for l, (_, heads, neurons) in enumerate(scores):
            sparse_s[l, 0] = self.y[l, 0] * _next_least(heads, num_removed(self.s[l, 0]))
            sparse_s[l, 1] = self.y[l, 1] * _next_least(neurons, num_removed(self.s[l, 1]))
        s_grad = sparse_s + z * g_s
        r_grad = None
        if st.prune_v:
            g_r = grads[2] if grads[2] is not None else torch.zeros_like(self.r)
            sparse_r = torch.zeros_like(self.r)
            for l, (cols, _, _) in enumerate(scores):
                for h in range(cols.shape[0]):
                    sparse_r[l, h] = self.p[l, h] * _next_least(cols[h], num_removed(self.r[l, h]))
            r_grad = sparse_r + z * g_r

        # gates: task gradient + weighted resource gradient, accumulated, stepped every interval
        task = model.gate_logits.grad  # None in a step without gates; inf when AMP skipped the step
        usable = task is not None and bool(torch.isfinite(task).all())
        g_grad = (task.detach().clone() if usable else torch.zeros_like(theta)) + z * st.gate_weight * g_theta
        t = ctx.step + 1  # the official global_step (1-based) at this point
        # The official weight (global_step mod interval) is 0 on every step when the interval is 1,
        # which would freeze the gates; there every step gets weight 1 (the intent: step each time).
        self.gate_grads.append(g_grad * (t % st.gate_interval if st.gate_interval > 1 else 1))
        if (t + 1) % st.gate_interval == 0 and self.gate_opt is not None:
            model.gate_logits.grad = torch.stack(self.gate_grads).mean(0)
            self.gate_opt.step()
            model.gate_logits.grad = None
            self.gate_grads = []

        with torch.no_grad():
            _count_step(self.s, s_grad, self.s_ub, st.count_lr, st.pin_at_upper_bound)
            if r_grad is not None:
                _count_step(self.r, r_grad, self.r_ub, st.count_lr, st.pin_at_upper_bound)
            self._dual_step(model, scores, gen)
            hard = torch.tensor(model.kept_blocks(), dtype=torch.float32, device=self.s.device)
            self._consider(model, float(self._ratio(model, self.s, self.r, hard, scores)), ctx.epoch,
                           step=ctx.step_in_epoch + 1)

    @torch.no_grad()
    def _dual_step(self, model: Any, scores: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                   gen: torch.Generator) -> None:
        st = self.settings
        for l, (cols, heads, neurons) in enumerate(scores):
            self.y[l, 0] += st.dual_lr * _least_sum(heads, num_removed(self.s[l, 0]))
            self.y[l, 1] += st.dual_lr * _least_sum(neurons, num_removed(self.s[l, 1]))
            if st.prune_v:
                for h in range(cols.shape[0]):
                    self.p[l, h] += st.dual_lr * _least_sum(cols[h], num_removed(self.r[l, h]))
        keep = gumbel_softmax(model.gate_logits.detach(), GATE_TAU, gen)[:, 1]
        self.z += self.z_lr * (self._ratio(model, self.s, self.r, keep, scores) - st.resource_budget)
        for dual in (self.y, self.p, self.z):
            dual.clamp_(min=0.0)

    def _scores(self, model: Any) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per block: (V-channel scores (H, d), head scores (H,), neuron scores (hidden,))."""
        return [(*head_scores(blk, b.heads, b.head_dim), neuron_scores(blk))
                for blk, b in zip(model.vit.blocks, self.spec.blocks)]

    def _ratio(self, model: Any, s: torch.Tensor, r: torch.Tensor, keep: torch.Tensor,
               scores: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
        """R(s, r, g) with straight-through ceils; heads alive = all but the ceil(s_l0) weakest."""
        scores = scores if scores is not None else self._scores(model)
        s_c = ste_ceil(s)
        v_removed = self.head_dim * s_c[:, 0]
        if self.settings.prune_v:
            alive = torch.zeros_like(self.r)
            for l, (_, heads, _) in enumerate(scores):
                alive[l, : heads.numel()] = 1.0
                alive[l, least(heads, num_removed(s[l, 0].detach()))] = 0.0
            v_removed = v_removed + (ste_ceil(r) * alive).sum(1)
        return self.resource.ratio(s_c[:, 0], v_removed, s_c[:, 1], keep)

    @torch.no_grad()
    def _prox(self, model: Any, lr: float) -> None:
        """Official ``prox_w``: shrink the currently selected weakest groups by 1/(1 + 2·lr·dual)."""
        for l, (blk, b) in enumerate(zip(model.vit.blocks, self.spec.blocks)):
            cols, heads = head_scores(blk, b.heads, b.head_dim)
            w, d = blk.attn.proj.weight, b.head_dim
            if self.settings.prune_v:
                for h in range(b.heads):
                    idx = least(cols[h], num_removed(self.r[l, h]))
                    w[:, idx + h * d] /= 1.0 + 2.0 * lr * float(self.p[l, h])
            for h in least(heads, num_removed(self.s[l, 0])).tolist():
                w[:, h * d : (h + 1) * d] /= 1.0 + 2.0 * lr * float(self.y[l, 0])
            idx = least(neuron_scores(blk), num_removed(self.s[l, 1]))
            blk.mlp.fc2.weight[:, idx] /= 1.0 + 2.0 * lr * float(self.y[l, 1])

    # ---- resume ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "s": self.s.cpu(), "r": self.r.cpu(), "y": self.y.cpu(), "p": self.p.cpu(), "z": self.z.cpu(),
            "z_lr": self.z_lr,
            "gate_opt": self.gate_opt.state_dict() if self.gate_opt is not None else {},
            "pick": self.pick,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        for name in ("s", "r", "y", "p", "z"):
            getattr(self, name).copy_(state[name])
        self.z_lr = float(state["z_lr"])
        if self.gate_opt is not None and state.get("gate_opt"):
            self.gate_opt.load_state_dict(state["gate_opt"])
        self.pick = state.get("pick")


class UVCFinetune(_Distilled):
    """Stage 2: KD fine-tuning with hard, frozen gates; ``weight *= mask`` after every step.

    The caller freezes θ and the skipped blocks (``requires_grad=False``) before :func:`fit`, so
    the optimiser only sees the blocks that run.
    """

    name = "uvc-finetune"

    def __init__(self, spec: ViTSpec, teacher: nn.Module, settings: UVCSettings, label_smoothing: float,
                 masks: list[BlockMasks], ratio: float) -> None:
        super().__init__(teacher, settings, label_smoothing)
        self.spec, self.masks, self.ratio = spec, masks, ratio

    def param_groups(self, model: Any, cfg: TrainSettings) -> list[dict[str, Any]]:
        # timm's rule under every preset: the official post_train.py builds its AdamW with timm's
        # create_optimizer, which exempts 1-d parameters and the tokens (decay_all_params is stage 1's quirk)
        return default_param_groups(model, cfg.weight_decay)

    def setup(self, model: Any, device: torch.device) -> None:
        super().setup(model, device)
        self.masks = [BlockMasks(m.proj.to(device), m.mlp.to(device)) for m in self.masks]
        model.gate_mode = "hard"
        apply_masks(model.vit, self.masks)

    def after_step(self, model: Any, ctx: StepContext) -> None:
        apply_masks(model.vit, self.masks)

    def on_epoch_end(self, model: Any, epoch: int) -> dict[str, Any]:
        return {"stage": "finetune", "R": self.ratio, **block_report(self.spec, self.masks, model.kept_blocks())}


def freeze_for_finetune(model: Any) -> None:
    """Hard gates, θ frozen, skipped blocks frozen (they never run again)."""
    model.gate_mode = "hard"
    model.gate_logits.requires_grad_(False)
    for blk, keep in zip(model.vit.blocks, model.kept_blocks()):
        if not keep:
            blk.requires_grad_(False)


def ceil_counts(x: torch.Tensor) -> list[list[int]]:
    """Integer counts ceil(x) as nested lists (for metadata)."""
    return [[num_removed(v) for v in row] for row in x.tolist()]


__all__ = [
    "UVCFinetune",
    "UVCSearch",
    "UVCSettings",
    "block_report",
    "ceil_counts",
    "distillation_loss",
    "freeze_for_finetune",
    "z_lr_at",
]
