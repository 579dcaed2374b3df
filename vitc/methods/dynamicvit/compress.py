"""DynamicViT (Rao et al., NeurIPS 2021): learned token sparsification of a timm ViT.

Prediction modules (:class:`vitc.core.token_select.PredictorLG`) sit before the blocks at depth/4, depth/2
and 3·depth/4. Training keeps every token and masks the dropped ones out of attention
(:mod:`vitc.methods.dynamicvit.forward`) with the official loss, CE + 0.5·KL + 0.5·token MSE + 2·ratio loss,
from a frozen teacher; inference keeps ``floor(N·ρ^s)`` patch tokens at stage s with ``topk`` + gather, so
every shape but the batch is static. The recipe, and where it departs from the official one: docs/methods.md.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitc.core.artifacts import PLAIN, Artifact, load_state_dict_strict, save_artifact
from vitc.core.errors import UsageError
from vitc.core.flops import model_macs
from vitc.core.latency import LatencyModel
from vitc.core.progress import log
from vitc.core.settings import validate as validate_settings
from vitc.core.spec import ViTSpec, build_model
from vitc.core.token_select import TokenSelect, default_stages, keep_counts
from vitc.core.validation import check_fraction
from vitc.methods.dynamicvit.forward import Decide, MaskedOutput, masked_forward
from vitc.methods.dynamicvit.settings import DynamicViTSettings
from vitc.train.distill import frozen_teacher
from vitc.train.loop import (
    METRICS_NAME,
    Objective,
    StepContext,
    TrainSettings,
    default_param_groups,
    fit,
    seed_everything,
)

ARTIFACT_NAME = "compressed.safetensors"

_FROZEN = ("cls_token", "dist_token", "reg_token", "pos_embed")


# ------------------------------------------------------------------------------------------------
# spec-level helpers: stages, keep counts, the inference spec
# ------------------------------------------------------------------------------------------------


def check_keep_ratio(keep_ratio: float, option: str = "keep_ratio") -> float:
    return check_fraction(float(keep_ratio), option)


def check_dense(spec: ViTSpec, source: str) -> None:
    """Refuse a model DynamicViT cannot start from (token selection already in, no pooled output)."""
    if any(b.keep_tokens is not None for b in spec.blocks):
        raise UsageError(f"{source} already has token selection (a DynamicViT model); start from the dense model")
    if spec.global_pool == "":
        raise UsageError(f"{source} has no pooled classifier output (global_pool=''); DynamicViT needs 'token' or 'avg'")


def resolve_stages(spec: ViTSpec, stages: list[int] | None) -> list[int]:
    """Validated stage blocks: strictly increasing, each in [1, depth-1]; default depth/4, /2, 3/4."""
    depth = spec.depth
    given = stages is not None
    stages = list(stages) if given else default_stages(depth)  # type: ignore[arg-type]
    what = "--stages" if given else f"default stages {','.join(map(str, stages))} for depth {depth}"
    if not stages:
        if not given:
            raise UsageError(f"{spec.name} has {depth} block{'s' if depth != 1 else ''}: a token-selection stage sits "
                             "between two blocks, so it needs at least 2 (give a deeper model)")
        raise UsageError(f"{what}: at least one stage is needed")
    bad = [s for s in stages if not 1 <= s <= depth - 1]
    if bad:
        raise UsageError(f"{what}: block {bad[0]} is out of range [1, {depth - 1}] for a {depth}-block model")
    if any(b <= a for a, b in zip(stages, stages[1:])):
        raise UsageError(f"{what}: block indices must be strictly increasing, got {','.join(map(str, stages))}")
    return stages


def stage_keep_counts(spec: ViTSpec, keep_ratio: float, num_stages: int) -> list[int]:
    """``floor(N·ρ^s)`` for N = the spec's patch tokens; a stage keeping 0 tokens is an error."""
    check_keep_ratio(keep_ratio)
    counts = keep_counts(spec.num_patches, keep_ratio, num_stages)
    for s, k in enumerate(counts, 1):
        if k < 1:
            raise UsageError(
                f"{spec.name} has {spec.num_patches} patch tokens: at keep ratio {keep_ratio:g} stage {s} would keep 0 "
                "and run without patch tokens; use a larger ratio, fewer stages or a larger input"
            )
    return counts


def stage_blocks(spec: ViTSpec) -> list[int]:
    """Indices of the blocks a token selection precedes."""
    return [i for i, b in enumerate(spec.blocks) if b.keep_tokens is not None]


def stage_blocks_of(model: Any) -> list[TokenSelect]:
    """The ``TokenSelect`` modules of a model, in order."""
    return [m for m in model.blocks if isinstance(m, TokenSelect)]


def with_token_selection(spec: ViTSpec, keep_ratio: float, stages: list[int]) -> ViTSpec:
    """The inference spec: ``keep_tokens = floor(N·ρ^s)`` on the stage blocks, none elsewhere."""
    counts = dict(zip(stages, stage_keep_counts(spec, keep_ratio, len(stages))))
    blocks = [dataclasses.replace(b, keep_tokens=counts.get(i)) for i, b in enumerate(spec.blocks)]
    return spec.replace(blocks=blocks)


# The keep ratio that meets a speedup target on a profiled device (``--target-speedup S --latency LATENCY.json``):
# token selection's cost falls monotonically as rho falls, so the ratio is found by bisection on the latency
# model's prediction — the *largest* rho (the fewest tokens dropped) whose predicted speedup over the profiled
# dense model is at least S, rounded down to 0.001; with floor(N*rho^s) tokens per stage the landed speedup is S
# up to one token's worth of latency above it.
RESOLUTION = 1e-3


def keep_ratio_for_speedup(spec: ViTSpec, stages: list[int], latency: LatencyModel, target: float, name: str,
                           origin: dict[str, Any] | None = None, *, dense: bool = False) -> dict[str, Any]:
    """``{"keep_ratio", "predicted_speedup", "target_speedup"}`` for ``spec``'s backbone with selection before ``stages``.

    ``origin`` (the artifact's record of its original dense model) or ``dense`` (``spec`` is a dense model itself):
    the profile must be of that model (:meth:`~vitc.core.latency.LatencyModel.check_fits`)."""
    base = spec.without_token_selection()
    latency.check_fits(base, name, origin, dense=dense)

    def speedup(ratio: float) -> float:
        return float(latency.predict(with_token_selection(base, ratio, stages), name)["speedup"])

    lowest = (1.0 / base.num_patches) ** (1.0 / len(stages)) * (1 + 1e-9)  # every stage keeps at least one token
    if speedup(1.0) >= target:
        return {"keep_ratio": 1.0, "predicted_speedup": speedup(1.0), "target_speedup": target}
    if speedup(lowest) < target:
        raise UsageError(f"no keep ratio makes {name} {target:g}x faster than {latency.spec.name} on this profile: keeping "
                         f"one token per stage gives {speedup(lowest):.2f}x; prune the structure too (uvc+dynamicvit)")
    lo, hi = lowest, 1.0
    while hi - lo > RESOLUTION / 4:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if speedup(mid) >= target else (lo, mid)
    ratio = max(math.floor(lo / RESOLUTION) * RESOLUTION, lowest)
    return {"keep_ratio": round(ratio, 6), "predicted_speedup": speedup(ratio), "target_speedup": target}



def dense_macs(spec: ViTSpec) -> int:
    """MACs of the same backbone with every token kept and no predictors."""
    return model_macs(spec.without_token_selection())


# ------------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------------


def attach_predictors(model: Any, spec: ViTSpec, keep_ratio: float, stages: list[int]) -> tuple[nn.Module, ViTSpec]:
    """Insert a fresh ``TokenSelect`` before each stage block of a dense timm ViT, in place.

    The result has exactly the module tree (and state-dict keys) of ``build_model(new_spec)``; the modules
    rank tokens by ``spec.token_score`` (carried into ``new_spec``).
    """
    check_dense(spec, spec.name)
    new_spec = with_token_selection(spec, keep_ratio, stages)
    blocks = list(model.blocks)
    if any(isinstance(m, TokenSelect) for m in blocks) or len(blocks) != spec.depth:
        raise UsageError(f"{spec.name}: model blocks do not match its spec")
    ref = next(model.parameters())
    modules: list[nn.Module] = []
    for blk, bs in zip(blocks, new_spec.blocks):
        if bs.keep_tokens is not None:
            modules.append(TokenSelect(spec.embed_dim, bs.keep_tokens, spec.num_prefix_tokens, new_spec.token_score)
                           .to(ref.device, ref.dtype))
        modules.append(blk)
    model.blocks = nn.Sequential(*modules)
    return model, new_spec


def model_from_artifact(art: Artifact) -> nn.Module:
    """The inference model of a ``dynamicvit`` artifact, at its trained keep ratio."""
    if not stage_blocks(art.spec):
        raise UsageError(f"{art.path}: a dynamicvit artifact without token selection")
    model = build_model(art.spec)
    load_state_dict_strict(model, art.tensors, str(art.path))
    return model.eval()


def materialize_ratio(art: Artifact, keep_ratio: float) -> tuple[nn.Module, ViTSpec]:
    """Same weights, ``keep_tokens = floor(N·ρ^s)`` per stage: a plain model for another ratio."""
    stages = stage_blocks(art.spec)
    if not stages:
        raise UsageError(f"{art.path}: no token selection to materialize")
    check_keep_ratio(keep_ratio, "--keep-ratios")
    spec = with_token_selection(art.spec, keep_ratio, stages)
    model = build_model(spec)
    load_state_dict_strict(model, art.tensors, str(art.path))
    return model.eval(), spec


class MaskedTrainModel(nn.Module):
    """Thin adapter so DDP wraps the training forward: ``student`` is the inference module tree."""

    student: Any  # a timm VisionTransformer

    def __init__(self, student: nn.Module, decide: Decide = "gumbel") -> None:
        super().__init__()
        self.student = student
        self.decide = decide

    def forward(self, images: torch.Tensor) -> MaskedOutput:
        return masked_forward(self.student, images, decide=self.decide if self.training else "topk")


# ------------------------------------------------------------------------------------------------
# losses and the objective
# ------------------------------------------------------------------------------------------------


def ratio_loss(keep_masks: list[torch.Tensor], keep_ratio: float) -> torch.Tensor:
    """Σ_s mean_b (kept fraction of image b after stage s − ρ^s)² / S; masks (B, n) over all N patches."""
    total = keep_masks[0].new_zeros(())
    for s, mask in enumerate(keep_masks, 1):
        total = total + ((mask.float().mean(dim=1) - keep_ratio**s) ** 2).mean()
    return total / len(keep_masks)


def token_distill_loss(student: torch.Tensor, teacher: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Per-element MSE over the patch tokens kept after the last stage (0 when none is kept).

    student/teacher (B, n, C) after the final norm; keep (B, n) in {0, 1}. Mean over kept tokens × C,
    as the official DeiT loss (``pow(2).mean()`` on the selected rows).
    """
    w = (keep > 0.5).to(student.dtype).unsqueeze(-1)
    sq = (student.float() - teacher.float()).pow(2) * w
    return sq.sum() / (w.sum() * student.shape[-1]).clamp_min(1.0)


def kl_to_teacher(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(teacher ‖ student) at temperature 1, ``batchmean``."""
    return F.kl_div(F.log_softmax(student_logits.float(), dim=-1), F.log_softmax(teacher_logits.float(), dim=-1),
                    reduction="batchmean", log_target=True)


class DynamicViTObjective(Objective):
    """CE + KL + token distillation + ratio loss; backbone frozen, then at ``backbone_lr_scale``× the predictor lr."""

    name = "dynamicvit"

    def __init__(self, dense: nn.Module, cfg: DynamicViTSettings, label_smoothing: float = 0.1,
                 teacher: nn.Module | None = None) -> None:
        super().__init__(label_smoothing)
        # copied now: the dense model becomes the student
        self.teacher: Any = frozen_teacher(teacher if teacher is not None else dense)
        self.cfg = cfg

    def setup(self, model: nn.Module, device: torch.device) -> None:
        self.teacher.to(device).eval()

    def param_groups(self, model: nn.Module, cfg: TrainSettings) -> list[dict[str, Any]]:
        predictor = {id(p) for m in model.modules() if isinstance(m, TokenSelect) for p in m.parameters()}
        names = {"predictor": set(), "backbone": set()}  # type: dict[str, set[str]]
        for n, p in model.named_parameters():
            names["predictor" if id(p) in predictor else "backbone"].add(n)
        groups = []
        for role, other in (("predictor", "backbone"), ("backbone", "predictor")):
            for g in default_param_groups(model, cfg.weight_decay, skip=names[other]):
                if g["params"]:
                    groups.append({**g, "name": f"{role}_{g['name']}", "role": role})
        return groups

    def lr_scale(self, group: dict[str, Any], epoch: int) -> float:
        if group.get("role") != "backbone":
            return 1.0
        return 0.0 if epoch < self.cfg.freeze_epochs else self.cfg.backbone_lr_scale

    def loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
             ctx: StepContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out: MaskedOutput = model(images)
        with torch.no_grad():
            t_feats = self.teacher.forward_features(images)
            t_logits = self.teacher.forward_head(t_feats)
        prefix = t_feats.shape[1] - out.tokens.shape[1]
        ce = F.cross_entropy(out.logits.float(), targets, label_smoothing=self.label_smoothing)
        kl = kl_to_teacher(out.logits, t_logits)
        token = token_distill_loss(out.tokens, t_feats[:, prefix:], out.keep_masks[-1])
        ratio = ratio_loss(out.keep_masks, self.cfg.rho)
        c = self.cfg
        loss = ce + c.kl_weight * kl + c.token_weight * token + c.ratio_weight * ratio
        terms = {"ce": ce, "kl": kl, "token": token, "ratio": ratio}
        for s, mask in enumerate(out.keep_masks, 1):
            terms[f"kept_stage{s}"] = mask.detach().float().mean()
        return loss, terms

    def eval_model(self, model: nn.Module) -> nn.Module:
        assert isinstance(model, MaskedTrainModel)
        return model.student

    def on_epoch_end(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        n = len(stage_blocks_of(self.eval_model(model)))
        return {
            "kept_target": [self.cfg.rho**s for s in range(1, n + 1)],
            "backbone_lr_scale": 0.0 if epoch < self.cfg.freeze_epochs else self.cfg.backbone_lr_scale,
        }


# ------------------------------------------------------------------------------------------------
# the command
# ------------------------------------------------------------------------------------------------


def compress_dynamicvit(
    model: str,
    data: str,
    out: str | Path,
    settings: DynamicViTSettings,
    *,
    pretrained: bool = False,
    checkpoint: str | Path | None = None,
    resume: bool = False,
) -> dict[str, Any] | None:
    """Train DynamicViT predictors on ``model`` and write ``out/compressed.safetensors`` + metrics.json.

    Args:
        model: a timm name, a vitc config or a dense vitc artifact (a compressed one is refused with the
            command that applies to it).
        data: a data spec (``digits``, ``fashion-mnist[:PATH]``, ``imagefolder:PATH``, ``synthetic[:N]``).
        out: the work folder: the artifact, ``metrics.json`` and the per-epoch checkpoint.
        settings: keep ratio ρ in (0, 1], stages (default depth/4, depth/2, 3·depth/4), the schedule and the
            loss weights; validated here.
        pretrained, checkpoint: weights for a timm name, as ``--pretrained`` / ``--checkpoint``.
        resume: continue from the checkpoint in ``out``.

    Returns:
        A summary on rank 0, None on other ranks.

    Defaults (:mod:`vitc.methods.dynamicvit.defaults`: 30 epochs, 5 frozen, batch 16, lr 2e-3, backbone
    0.1×) follow the official schedule; the learning rate is above ImageNet's 5e-4·B/512 because a small
    model on a small data set sees ~2,700 steps in total, not ~37k.
    """
    from vitc.core.artifacts import read_header
    from vitc.core.data import parse_data
    from vitc.core.models import is_artifact_path, resolve_model

    validate_settings(settings)
    is_file = is_artifact_path(model)
    parent_meta: dict[str, Any] = {}
    if is_file:
        header_spec, kind, parent_meta = read_header(model, verify=False)
        if any(b.keep_tokens is not None for b in header_spec.blocks):
            raise UsageError(f"{model} already has token selection (a {kind} artifact); start from the dense model")
        if kind != PLAIN:  # the methods that compress a kind further say so in `vitc compress --help`
            raise UsageError(f"{model} is a {kind} artifact; run `vitc materialize` on it first, or use the method that "
                             f"adds token selection to {kind} models (`vitc compress --help`)")
    source = parse_data(data)
    seed_everything(settings.seed)  # initial weights of a model created by name, and the predictors
    dense, spec = resolve_model(model, pretrained=pretrained, checkpoint=checkpoint,
                                num_classes=source.head_classes())
    return train_token_selection(dense, spec, source, out, settings, source_name=model, parent_meta=parent_meta,
                                 resume=resume)


def resolve_run(settings: DynamicViTSettings, spec: ViTSpec, name: str,
                origin: dict[str, Any] | None = None) -> tuple[DynamicViTSettings, dict[str, Any]]:
    """The concrete settings a run trains with — its stages placed on ``spec``, its keep ratio the one its speed target
    asks for on its latency profile — as a copy (the caller's settings keep asking what they ask), and the choice
    made (``{"keep_ratio", "predicted_speedup", "target_speedup", "latency"}``; empty without a target)."""
    stages = resolve_stages(spec, settings.stages)
    if settings.target_speedup is None:
        return dataclasses.replace(settings, stages=stages), {}
    from vitc.core.latency import load_latency

    choice = keep_ratio_for_speedup(spec, stages, load_latency(str(settings.latency)), settings.target_speedup, name,
                                    origin, dense=origin is None)
    concrete = dataclasses.replace(settings, stages=stages, keep_ratio=choice["keep_ratio"], target_speedup=None,
                                   latency=None)
    return concrete, {**choice, "latency": str(settings.latency)}


def token_selection_student(dense: nn.Module, spec: ViTSpec, dcfg: DynamicViTSettings, label_smoothing: float,
                            teacher: nn.Module | None = None) -> tuple[MaskedTrainModel, DynamicViTObjective, ViTSpec]:
    """What the loop trains: ``dense`` (modified in place) with predictors before ``dcfg.stages`` and its
    class/position tokens frozen, wrapped for masked training; the objective (its teacher copied from
    ``dense`` first unless given); the new spec."""
    objective = DynamicViTObjective(dense, dcfg, label_smoothing, teacher=teacher)
    student, new_spec = attach_predictors(dense, spec.replace(token_score=dcfg.token_score), dcfg.rho,
                                          resolve_stages(spec, dcfg.stages))
    for name, p in student.named_parameters():
        if name in _FROZEN:
            p.requires_grad_(False)
    return MaskedTrainModel(student), objective, new_spec


def train_token_selection(dense: nn.Module, spec: ViTSpec, source: Any, out: str | Path, settings: DynamicViTSettings, *,
                          source_name: str, teacher: nn.Module | None = None, kind: str = "dynamicvit",
                          parent_meta: dict[str, Any] | None = None, extra_meta: dict[str, Any] | None = None,
                          resume: bool = False) -> dict[str, Any] | None:
    """DynamicViT training on an already resolved model ``dense`` (modified in place: it becomes the
    student); writes an artifact of ``kind``. ``teacher``: the frozen distillation teacher (default: a
    copy of ``dense``); it must share the student's embedding width and token grid. Shared by
    ``vitc compress dynamicvit`` and the methods that add token selection to another method's model.
    """
    from vitc.train.distributed import shutdown

    cfg = settings.loop()
    check_dense(spec, source_name)
    root = (parent_meta or {}).get("origin")
    dcfg, choice = resolve_run(settings, spec, source_name, root if isinstance(root, dict) else None)
    if choice:
        log(f"keep ratio {choice['keep_ratio']:g} meets --target-speedup {settings.target_speedup:g} (predicted "
            f"{choice['predicted_speedup']:.3f}x over the profiled dense model)")
        extra_meta = {**(extra_meta or {}), **choice}
    stages = list(dcfg.stages or [])
    stage_keep_counts(spec, dcfg.rho, len(stages))  # refuse 0-token stages before any work

    wrapper, objective, new_spec = token_selection_student(dense, spec, dcfg, cfg.label_smoothing, teacher)
    train_set = source.dataset(spec, "train", train_transforms=True)
    val_set = source.dataset(spec, "val")
    out = Path(out)
    t0 = time.perf_counter()
    try:
        _, history = fit(wrapper, objective, train_set, val_set, cfg, out, resume=resume, description=kind)
        if int(os.environ.get("RANK", "0")) != 0:
            return None
        return _write_result(wrapper.student.cpu().eval(), new_spec, dcfg, cfg, history, out, source_name, str(source), t0,
                             kind=kind, parent_meta=parent_meta or {}, extra_meta=extra_meta or {})
    finally:
        shutdown()


def _write_result(student: nn.Module, spec: ViTSpec, dcfg: DynamicViTSettings, cfg: TrainSettings,
                  history: list[dict[str, Any]], out: Path, model: str, source: str, t0: float, *, kind: str,
                  parent_meta: dict[str, Any], extra_meta: dict[str, Any]) -> dict[str, Any]:
    """Write ``out/compressed.safetensors`` and the final ``out/metrics.json``; return the summary."""
    from vitc.core.fileio import write_json
    from vitc.core.provenance import origin, provenance

    keep_tokens = [b.keep_tokens for b in spec.blocks if b.keep_tokens is not None]
    final = history[-1] if history else {}
    meta = {
        "method": kind,
        "keep_ratio": dcfg.keep_ratio,
        "stages": dcfg.stages,
        "keep_tokens": keep_tokens,
        "token_score": spec.token_score,
        "source": model,
        "trained_on": source,
        "epochs": cfg.epochs,
        "freeze_epochs": dcfg.freeze_epochs,
        "loss_weights": {"ce": 1.0, "kl": dcfg.kl_weight, "token": dcfg.token_weight, "ratio": dcfg.ratio_weight},
        "val_top1": final.get("val_top1"),
        **extra_meta,
        "origin": origin(spec, parent_meta),
        "provenance": provenance(f"compress {kind}", dcfg, data=source, parent=model),
    }
    artifact = save_artifact(out / ARTIFACT_NAME, spec, student.state_dict(), kind=kind, meta=meta)
    result = {
        "artifact": str(artifact),
        "keep_ratio": dcfg.keep_ratio,
        "stages": dcfg.stages,
        "keep_tokens": keep_tokens,
        "val_top1": final.get("val_top1"),  # None (JSON null) when no epoch ran
        "val_top5": final.get("val_top5"),
        "kept_fraction": [final.get(f"kept_stage{s}") for s in range(1, len(keep_tokens) + 1)],
        "macs": model_macs(spec),
        "dense_macs": dense_macs(spec),
        "epochs": cfg.epochs,
        **{str(k): extra_meta[k] for k in ("target_speedup", "predicted_speedup") if k in extra_meta},
        "seconds": round(time.perf_counter() - t0, 3),
    }
    summary = {k: v for k, v in meta.items() if k not in ("method", "epochs", "provenance")}
    write_json(out / METRICS_NAME, {"method": kind, **summary, "epochs": history, "final": result})
    return result
