"""UVC (Yu et al., ICLR 2022, "Unified Visual Transformer Compression") for timm ViTs.

``compress_uvc`` runs the two stages on the shared training loop and writes
``OUT/compressed.safetensors`` (artifact kind ``"uvc"``: the dense spec, the masked weights, the
masks and the gate logits) and ``OUT/metrics.json`` (one record per epoch of both stages); both record
the ``--preset`` and every effective setting.
``model_from_artifact`` rebuilds the masked, hard-gated model (what ``vitc eval`` measures);
``materialize_uvc`` slices it into a plain, smaller timm ViT and checks it against the masked one.

Layout of the work folder: ``OUT/search/`` and ``OUT/finetune/`` hold each stage's resumable
``checkpoint.pt`` and its own ``metrics.json``; ``--resume`` continues whichever stage was running.

Modules: ``uvc_model`` (gates, unit ranking, masks), ``uvc_resource`` (R), ``uvc_train`` (the two
objectives, official constants and the step-scaling note), ``uvc_slice`` (materialization).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from vitc.core.artifacts import Artifact, load_state_dict_strict, read_header, save_artifact
from vitc.core.data import make_loader, parse_data
from vitc.core.errors import CheckFailed, UsageError
from vitc.core.fileio import write_json
from vitc.core.flops import model_macs
from vitc.core.models import is_artifact_path, resolve_model
from vitc.core.progress import log
from vitc.core.provenance import origin, provenance
from vitc.core.settings import cli_label, to_dict
from vitc.core.settings import validate as validate_settings
from vitc.core.spec import ViTSpec, build_model
from vitc.methods.uvc.landing import land
from vitc.methods.uvc.model import BlockMasks, UVCViT, apply_masks
from vitc.methods.uvc.objectives import (
    UVCFinetune,
    UVCSearch,
    block_report,
    ceil_counts,
    freeze_for_finetune,
)
from vitc.methods.uvc.resource import check_reachable, resource_model
from vitc.methods.uvc.settings import UVCSettings
from vitc.methods.uvc.slice import max_logit_diff, sliced_spec, sliced_state
from vitc.train.distill import frozen_teacher
from vitc.train.distributed import shutdown
from vitc.train.loop import CHECKPOINT_NAME, METRICS_NAME, TrainSettings, fit, validate

ARTIFACT_NAME = "compressed.safetensors"
SEARCH_DIR = "search"
FINETUNE_DIR = "finetune"
GATES_KEY = "uvc.gate_logits"
PROJ_MASK_KEY = "uvc.proj_mask.{}"
MLP_MASK_KEY = "uvc.mlp_mask.{}"

def compress_uvc(
    model: str,
    data: str,
    out: str | os.PathLike[str],
    settings: UVCSettings,
    *,
    pretrained: bool = False,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
) -> dict[str, Any] | None:
    """Search (stage 1) then fine-tune (stage 2); write the artifact and metrics; return a summary.

    ``settings``: :class:`~vitc.methods.uvc.settings.UVCSettings` (validated here). Returns None on
    non-zero DDP ranks.
    """
    validate_settings(settings)
    budget, epochs, finetune_epochs, seed = settings.resource_budget, settings.epochs, settings.finetune_epochs, settings.seed
    search_cfg, tune_cfg = settings.search_loop(), settings.finetune_loop()
    batch_size = settings.batch_size

    source = parse_data(data)
    dense, spec = load_gateable(model, source.head_classes(), pretrained=pretrained, checkpoint=checkpoint)
    # a latency profile of another model, or a budget no model UVC can make meets, fails here, before any work
    root = _parent_meta(model).get("origin")
    resource = resource_model(spec, settings.latency, origin=root if isinstance(root, dict) else None,
                              dense=not isinstance(root, dict))
    check_reachable(resource, spec, budget, settings.target_speedup, settings.optimizes_v, cli_label(UVCSettings))
    train_set = source.dataset(spec, "train", train_transforms=True)
    val_set = source.dataset(spec, "val")
    out = Path(out)
    t0 = time.perf_counter()

    teacher = frozen_teacher(dense)
    net = UVCViT(dense)
    search = UVCSearch(spec, teacher, settings, search_cfg.label_smoothing, epochs, seed)
    net, search_history = fit(net, search, train_set, val_set, search_cfg, out / SEARCH_DIR, resume=resume,
                              description="uvc search")
    pick = search.pick
    if pick is None:
        lowest = min(search_history, key=lambda rec: rec["R"])
        raise CheckFailed(
            f"UVC did not reach --budget {budget:g} in {epochs} search epochs (lowest {resource.kind} ratio {lowest['R']:.3f} "
            f"at epoch {lowest['epoch']}); raise --epochs or the --z-lr-schedule (stage-1 checkpoint kept in {out / SEARCH_DIR})"
        )

    net.load_state_dict(pick["model"])
    masks = [BlockMasks(proj.clone(), mlp.clone()) for proj, mlp in pick["masks"]]
    landing = land(net, spec, masks, resource, budget) if settings.land else None  # deterministic: resume gets the same
    reached = landing["resource"] if landing else pick["R"]
    if landing and landing["resource"] != landing["resource_before"]:
        r = landing["restored"]
        log(f"landed on the budget: {resource.kind} ratio {landing['resource_before']:.3f} -> {reached:.3f} of {budget:.3f} "
            f"(gave back {r['heads']} heads, {r['neurons']} MLP neurons, {r['blocks']} skipped blocks)")
    tune_resume = resume and (out / FINETUNE_DIR / CHECKPOINT_NAME).is_file()
    net, tune_history = finetune(net, spec, teacher, settings, masks, reached, tune_cfg, train_set, val_set,
                                 out / FINETUNE_DIR, resume=tune_resume)

    if int(os.environ.get("RANK", "0")) != 0:
        shutdown()
        return None
    net = net.cpu()
    kept = net.kept_blocks()
    compressed = sliced_spec(spec, masks, kept)
    if tune_history:
        final_top1 = tune_history[-1].get("val_top1")
    else:  # no fine-tuning: validate the picked state itself (it may come from mid-epoch)
        loader = make_loader(val_set, batch_size, shuffle=False)
        final_top1 = validate(net, loader, torch.device("cpu"))["val_top1"]
    report = block_report(spec, masks, kept)
    budget_record: dict[str, Any] = {
        "resource": reached,  # R of the handed-over (landed) state: what the model costs, as a fraction of dense
        "resource_kind": resource.kind,
        "resource_search": pick["R"],
        "budget_asked": budget,
        "budget_reached": reached,
        "landing": landing,
        **({"target_speedup": settings.target_speedup, "predicted_speedup": 1 / reached,
            **resource.describe()} if resource.kind == "latency" else {}),
    }
    summary: dict[str, Any] = {
        "artifact": str(out / ARTIFACT_NAME),
        "metrics": str(out / METRICS_NAME),
        "budget": budget,
        "preset": settings.preset,
        **budget_record,
        "macs_dense": model_macs(spec),
        "macs_compressed": model_macs(compressed),
        "picked_epoch": pick["epoch"],
        "picked_step": pick["step"],
        **report,
        "val_top1": final_top1,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    meta = {
        "method": "uvc",
        "source_model": str(model),
        "data": str(source),
        "budget": budget,
        "preset": settings.preset,
        "settings": to_dict(settings),
        "origin": origin(spec, _parent_meta(model)),
        "provenance": provenance("compress uvc", settings, data=str(source), parent=model),
        "search_epochs": epochs,
        "finetune_epochs": finetune_epochs,
        "picked_epoch": pick["epoch"],
        "picked_step": pick["step"],
        **budget_record,
        "removed_heads_neurons": ceil_counts(pick["s"]),
        **({"removed_v_channels": ceil_counts(pick["r"])} if settings.prune_v else {}),
        "val_top1": summary["val_top1"],
        "seconds": summary["seconds"],
    }
    save_uvc(out / ARTIFACT_NAME, net, spec, masks, meta)
    write_json(out / METRICS_NAME, {
        "method": "uvc",
        "budget": budget,
        "preset": settings.preset,
        "settings": to_dict(settings),  # every effective value: the preset's, the defaults' and those given
        "picked_epoch": pick["epoch"],
        "picked_step": pick["step"],
        **budget_record,
        "epochs": search_history + tune_history,
        "final": summary,
    })
    shutdown()
    return summary


def _parent_meta(name: str) -> dict[str, Any]:
    return read_header(name, verify=False)[2] if is_artifact_path(name) and Path(name).is_file() else {}


def load_gateable(name: str, num_classes: int | None, *, pretrained: bool = False,
                  checkpoint: str | os.PathLike[str] | None = None) -> tuple[nn.Module, ViTSpec]:
    """Resolve MODEL for UVC; refuse what UVC cannot gate with one line."""
    artifact = is_artifact_path(name)
    if artifact and Path(name).is_file():
        _, kind, _ = read_header(name, verify=False)
        if kind != "model":
            raise UsageError(f"{name} is a {kind} artifact: UVC gates plain ViTs only (give the dense model it came from)")
    vit, spec = resolve_model(name, pretrained=pretrained, checkpoint=checkpoint,
                              num_classes=num_classes)
    if any(b.keep_tokens is not None for b in spec.blocks):
        raise UsageError(f"{name} has DynamicViT token-selection modules between its blocks; UVC cannot gate it")
    return vit, spec


def finetune(net: UVCViT, spec: ViTSpec, teacher: nn.Module, settings: UVCSettings, masks: list[BlockMasks],
             ratio: float, cfg: TrainSettings, train_set: Dataset, val_set: Dataset | None, out_dir: Path,
             resume: bool = False) -> tuple[UVCViT, list[dict[str, Any]]]:
    """Stage 2 on ``net`` in place: hard frozen gates, fixed ``masks``, KD from ``teacher``.

    ``ratio`` is the MACs ratio the masks and gates give (recorded per epoch). Also used by the
    magnitude-pruning benchmark, so both methods share one fine-tuning recipe.
    """
    freeze_for_finetune(net)
    objective = UVCFinetune(spec, teacher, settings, cfg.label_smoothing, masks, ratio)
    net, history = fit(net, objective, train_set, val_set, cfg, out_dir, resume=resume, description="uvc finetune")
    return net, history


def save_uvc(path: str | os.PathLike[str], net: UVCViT, spec: ViTSpec, masks: list[BlockMasks],
             meta: dict[str, Any]) -> Path:
    """Write a ``kind="uvc"`` artifact: the dense spec, the timm weights (masked), the gate logits
    (``uvc.gate_logits``, (depth, 2) = skip, keep) and per block ``uvc.proj_mask.i`` (heads·head_dim,)
    and ``uvc.mlp_mask.i`` (hidden,), 1 = kept."""
    tensors = dict(net.vit.state_dict())
    tensors[GATES_KEY] = net.gate_logits.detach()
    for i, m in enumerate(masks):
        tensors[PROJ_MASK_KEY.format(i)] = m.proj.detach().cpu()
        tensors[MLP_MASK_KEY.format(i)] = m.mlp.detach().cpu()
    return save_artifact(path, spec, tensors, kind="uvc", meta=meta)


def gates_and_masks(art: Artifact) -> tuple[torch.Tensor, list[BlockMasks]]:
    spec, t = art.spec, art.tensors
    gates = t.get(GATES_KEY)
    if gates is None or tuple(gates.shape) != (spec.depth, 2):
        raise UsageError(f"{art.path}: UVC artifact without valid gate logits ({GATES_KEY})")
    masks = []
    for i, b in enumerate(spec.blocks):
        proj, mlp = t.get(PROJ_MASK_KEY.format(i)), t.get(MLP_MASK_KEY.format(i))
        if proj is None or mlp is None or proj.numel() != b.heads * b.head_dim or mlp.numel() != b.mlp_hidden:
            raise UsageError(f"{art.path}: UVC artifact with missing or mis-shaped masks for block {i}")
        masks.append(BlockMasks(proj.float(), mlp.float()))
    return gates.float(), masks


def model_from_artifact(art: Artifact) -> nn.Module:
    """The masked model with hard gates (skipped blocks are identities) — what stage 2 trained."""
    return _masked_model(art)[0]


def materialize_uvc(art: Artifact, atol: float = 1e-4) -> tuple[nn.Module, ViTSpec, dict[str, float]]:
    """Slice a UVC artifact into a plain timm ViT; raise ``CheckFailed`` if it differs from the masked
    model by more than ``atol`` (max abs logit difference on a seeded random batch)."""
    masked, masks = _masked_model(art)
    kept = masked.kept_blocks()
    spec = sliced_spec(art.spec, masks, kept)
    model = build_model(spec)
    load_state_dict_strict(model, sliced_state(masked.vit.state_dict(), art.spec, masks, kept), str(art.path))
    diff = max_logit_diff(masked, model, spec)
    if not diff <= atol:
        raise CheckFailed(f"sliced model differs from the masked model by {diff:.3g} > {atol:g} (max abs logit); not written")
    return model.eval(), spec, {"max_abs_diff": diff}


def _masked_model(art: Artifact) -> tuple[UVCViT, list[BlockMasks]]:
    gates, masks = gates_and_masks(art)
    vit = build_model(art.spec)
    load_state_dict_strict(vit, {k: v for k, v in art.tensors.items() if not k.startswith("uvc.")}, str(art.path))
    apply_masks(vit, masks)
    return UVCViT(vit, gates, gate_mode="hard").eval(), masks


__all__ = [
    "ARTIFACT_NAME",
    "compress_uvc",
    "finetune",
    "load_gateable",
    "materialize_uvc",
    "model_from_artifact",
    "save_uvc",
]
