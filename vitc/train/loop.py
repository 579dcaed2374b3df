"""The training loop shared by ``vitc train``, ``vitc compress uvc`` and ``vitc compress dynamicvit``.

AdamW with per-step cosine schedule and linear warm-up, label smoothing, mixed precision on CUDA,
DDP under torchrun (NCCL on GPU, gloo on CPU; same global batch at any world size), a progress bar,
a NaN/Inf guard that names the epoch, step and loss term, and a resumable checkpoint every epoch.

A method plugs in through an :class:`Objective`: its parameter groups, its loss, what it does after
each optimizer step (UVC's primal–dual updates) and at epoch boundaries, and its own state for
resume. Resuming is exact: every epoch re-seeds the RNGs (Python, NumPy, torch) from
(seed, epoch, rank) and the data order from (seed, epoch); the learning rate is a function of the
global step, and the checkpoint holds the model, the AdamW moments and step counts, the AMP scaler
and the objective's state. A run killed mid-epoch and resumed from the last checkpoint therefore
reproduces the uninterrupted run (bit for bit on CPU with ``deterministic``).

Under torchrun every rank gets an equal number of whole batches (the epoch's permutation is cut to a
multiple of the global batch), so DDP never waits on a rank that ran out of data, and the global
batch at each step holds the same images as in a one-process run.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from vitc.core.device import pick_device
from vitc.core.errors import CheckFailed, UsageError
from vitc.core.fileio import atomic_path, write_json
from vitc.core.metrics import topk_correct
from vitc.core.progress import log, progress
from vitc.core.settings import validate as validate_settings
from vitc.train.distributed import DistInfo, all_reduce_sum, barrier, guard_collectives, init_distributed
from vitc.train.settings import TrainSettings

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.json"

#: Settings a ``--resume`` may change. ``epochs`` (and UVC's ``finetune_epochs``) extend or shorten the
#: schedule — the log says the run then differs from an uninterrupted one; ``device``, ``amp`` and
#: ``deterministic`` change how, not what, is computed; ``preset`` only names defaults (the values it
#: fills are compared themselves). Every other setting — the method's (budget, keep ratio, stages,
#: teacher, loss weights...) and the loop's (lr, batch size, seed, warm-up...) — shapes the result, is
#: recorded in every checkpoint, and a change is refused in one line naming the old and the new value.
RESUMABLE_CHANGES = frozenset({"epochs", "finetune_epochs", "device", "amp", "deterministic", "preset"})


@dataclass
class StepContext:
    epoch: int
    step: int  # global optimizer step, from 0
    step_in_epoch: int
    steps_per_epoch: int
    total_steps: int
    lr: float  # current base learning rate (before per-group scales)
    device: torch.device
    dist: DistInfo


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def default_param_groups(model: nn.Module, weight_decay: float, skip: set[str] | None = None,
                         decay_all: bool = False) -> list[dict[str, Any]]:
    """timm's rule: no weight decay on biases, norms (1-d), tokens and position embeddings
    (``decay_all``: decay every parameter, as some official training scripts do)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or (skip and name in skip):
            continue
        if not decay_all and (p.ndim <= 1 or name.endswith(("cls_token", "dist_token", "reg_token", "pos_embed"))):
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]


class Objective:
    """Plain supervised classification; compression methods subclass and override hooks."""

    name = "train"
    find_unused_parameters = False

    def __init__(self, label_smoothing: float = 0.1) -> None:
        self.label_smoothing = label_smoothing

    def setup(self, model: nn.Module, device: torch.device) -> None:
        """Move method state (teacher, duals) to ``device``."""

    def param_groups(self, model: nn.Module, cfg: TrainSettings) -> list[dict[str, Any]]:
        return default_param_groups(model, cfg.weight_decay)

    def lr_scale(self, group: dict[str, Any], epoch: int) -> float:
        return float(group.get("lr_scale", 1.0))

    def loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
             ctx: StepContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = model(images)
        ce = F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        return ce, {"ce": ce}

    def after_step(self, model: nn.Module, ctx: StepContext) -> None:
        """Called after every optimizer step (UVC: proximal shrink, counts, gates, duals)."""

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        pass

    def on_epoch_end(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        """Extra per-epoch metrics for metrics.json."""
        return {}

    def eval_model(self, model: nn.Module) -> nn.Module:
        """The module validated each epoch (e.g. UVC with hard gates)."""
        return model

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def settings_record(self) -> dict[str, Any]:
        """The method's settings, recorded in every checkpoint so that ``--resume`` refuses a run that asks for
        other ones: by default the settings dataclass the objective keeps as ``settings`` (or ``cfg``)."""
        from vitc.core.settings import to_dict

        for attr in ("settings", "cfg"):
            value = getattr(self, attr, None)
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                return to_dict(value)
        return {}


def cosine_lr(step: int, total: int, warmup: int, base: float, minimum: float) -> float:
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    if total <= warmup:
        return base
    t = (step - warmup) / max(1, total - warmup)
    return minimum + (base - minimum) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs (timm augmentations draw from all three)."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of ``rank``'s RNGs in ``epoch``: distinct across the ranks of an epoch and across the
    epochs of a rank. (With more than 7 ranks two (epoch, rank) pairs can share one; they draw
    different data shards, and the formula is kept so that runs stay reproducible across versions.)"""
    return seed * 1000 + epoch * 7 + rank


M = TypeVar("M", bound=nn.Module)


def fit(
    model: M,
    objective: Objective,
    train_set: torch.utils.data.Dataset,
    val_set: torch.utils.data.Dataset | None,
    cfg: TrainSettings,
    out_dir: str | Path,
    resume: bool = False,
    description: str = "train",
) -> tuple[M, list[dict[str, Any]]]:
    """Train ``model`` in place; checkpoint to ``out_dir`` every epoch; return (model, history)."""
    validate_settings(cfg)
    device = pick_device(cfg.device)
    dist_info = init_distributed(device)
    if cfg.batch_size % dist_info.world:
        raise UsageError(f"--batch-size {cfg.batch_size} is not divisible by the {dist_info.world} processes")
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        _, history = _fit(model, objective, train_set, val_set, cfg, Path(out_dir), resume, description, device, dist_info)
        return model, history  # trained in place (DDP wraps the same module)
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def _fit(model: nn.Module, objective: Objective, train_set: torch.utils.data.Dataset,
         val_set: torch.utils.data.Dataset | None, cfg: TrainSettings, out_dir: Path, resume: bool, description: str,
         device: torch.device, dist_info: DistInfo) -> tuple[nn.Module, list[dict[str, Any]]]:
    from vitc.core.artifacts import load_state_dict_strict
    from vitc.core.data import make_loader

    per_rank = cfg.batch_size // dist_info.world
    if len(train_set) < cfg.batch_size:  # type: ignore[arg-type]
        raise UsageError(f"the training split has {len(train_set)} images, fewer than one batch of {cfg.batch_size}")  # type: ignore[arg-type]

    seed_everything(cfg.seed)
    model.to(device)
    objective.setup(model, device)
    groups = objective.param_groups(model, cfg)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    train_loader = make_loader(train_set, per_rank, shuffle=True, seed=cfg.seed, rank=dist_info.rank,
                               world=dist_info.world, drop_last=True)
    val_loader = (make_loader(val_set, max(per_rank, 64), shuffle=False, rank=dist_info.rank, world=dist_info.world)
                  if val_set is not None else None)
    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))

    history: list[dict[str, Any]] = []
    start_epoch = 0
    ckpt_path = out_dir / CHECKPOINT_NAME
    if resume:
        if not ckpt_path.is_file():
            raise UsageError(f"--resume: no checkpoint at {ckpt_path}")
        state = load_checkpoint(ckpt_path)
        check_same_run(ckpt_path, state, objective, cfg, _split_sizes(train_set, val_set))
        load_state_dict_strict(unwrap(model), state["model"], str(ckpt_path))
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, TypeError) as e:
            raise UsageError(f"{ckpt_path}: optimizer state does not match this run ({e})") from None
        if use_amp and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        objective.load_state_dict(state.get("objective", {}))
        history = list(state.get("history", []))
        start_epoch = int(state["epoch"])
        changed = _changed_settings(state.get("config", {}), cfg)
        log(f"resuming {description} from {ckpt_path} after epoch {start_epoch}/{cfg.epochs}"
            + (f" (settings changed since the checkpoint: {changed}; the run will differ from an uninterrupted one)"
               if changed else ""))

    # after a resumed checkpoint is accepted, so a refused one stays a one-line error
    if start_epoch < cfg.epochs and 0 < total_steps <= warmup_steps and cfg.lr > cfg.min_lr:
        log(f"warning: {description}: the {cfg.warmup_epochs:g}-epoch learning-rate warm-up covers all {cfg.epochs} "
            f"epoch(s), so the rate only rises and never decays; shorten the warm-up or train longer")

    train_model: nn.Module = model
    if dist_info.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=objective.find_unused_parameters,
        )

    with guard_collectives(dist_info, "training (a collective: gradient all-reduce or metrics)"):
        for epoch in range(start_epoch, cfg.epochs):
            seed_everything(epoch_seed(cfg.seed, epoch, dist_info.rank))
            train_loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
            objective.on_epoch_start(unwrap(train_model), epoch)
            train_model.train()
            sums: dict[str, float] = {}
            seen = 0
            t0 = time.perf_counter()
            with progress(f"{description} epoch {epoch + 1}/{cfg.epochs}", steps_per_epoch) as bar:
                for i, (images, targets) in enumerate(train_loader):
                    step = epoch * steps_per_epoch + i
                    lr = cosine_lr(step, total_steps, warmup_steps, cfg.lr, cfg.min_lr)
                    ctx = StepContext(epoch, step, i, steps_per_epoch, total_steps, lr, device, dist_info)
                    images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
                    logged = train_step(train_model, objective, optimizer, scaler, images, targets, ctx,
                                        cfg.max_grad_norm, ckpt_path)
                    n = len(targets)
                    seen += n
                    for k, v in logged.items():
                        sums[k] = sums.get(k, 0.0) + v * n
                    bar.advance(description=f"{description} epoch {epoch + 1}/{cfg.epochs} loss {logged['loss']:.4f}")
            keys = sorted(sums)
            reduced = all_reduce_sum([sums[k] for k in keys] + [float(seen)], device)
            record: dict[str, Any] = {"epoch": epoch + 1, "lr": lr}
            record.update({k: reduced[j] / max(reduced[-1], 1.0) for j, k in enumerate(keys)})
            record.update(objective.on_epoch_end(unwrap(train_model), epoch))
            if val_loader is not None:
                record.update(validate(objective.eval_model(unwrap(train_model)), val_loader, device))
            record["seconds"] = round(time.perf_counter() - t0, 3)
            history.append(record)
            if dist_info.is_main:
                save_checkpoint(ckpt_path, {
                    "epoch": epoch + 1,
                    "model": unwrap(train_model).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict() if use_amp else {},
                    "objective": objective.state_dict(),
                    "history": history,
                    "config": dataclasses.asdict(cfg),
                    "settings": objective.settings_record(),
                    "images": _split_sizes(train_set, val_set),
                })
                write_json(out_dir / METRICS_NAME, {"method": objective.name, "epochs": history})
                summary = " ".join(f"{k}={v:.4g}" for k, v in record.items() if isinstance(v, float) and k not in ("lr", "seconds"))
                log(f"{description} epoch {epoch + 1}/{cfg.epochs}: {summary} ({record['seconds']:.1f}s)")
            barrier()
    return unwrap(train_model), history


def train_step(model: nn.Module, objective: Objective, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               images: torch.Tensor, targets: torch.Tensor, ctx: StepContext, max_grad_norm: float | None,
               checkpoint: Path) -> dict[str, float]:
    """One optimizer step of the loop on a batch already on the device: the per-group learning rates from
    ``ctx.lr``, the objective's loss under autocast (fp16 when ``scaler`` is enabled), the NaN/Inf guard,
    backward through the scaler, gradient clipping, the optimizer step and ``after_step``.

    Returns the loss and every term as floats (read on the host at every step, as the progress bar and the
    epoch means need). ``checkpoint`` is named in the error when the guard stops the run.
    """
    use_amp = scaler.is_enabled()
    for g in optimizer.param_groups:
        g["lr"] = ctx.lr * objective.lr_scale(g, ctx.epoch)
    with torch.autocast(device_type=ctx.device.type, dtype=torch.float16, enabled=use_amp):
        loss, terms = objective.loss(model, images, targets, ctx)
    _check_finite(loss, terms, ctx.epoch, ctx.step_in_epoch, checkpoint, ctx.device, ctx.dist)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if max_grad_norm is not None:
        scaler.unscale_(optimizer)
        norm = nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        if not use_amp and not bool(torch.isfinite(norm)):  # AMP skips such steps by design
            raise CheckFailed(f"non-finite gradient norm at epoch {ctx.epoch + 1}, step {ctx.step_in_epoch + 1}: {float(norm)}"
                              + _last_good(checkpoint))
    scaler.step(optimizer)
    scaler.update()
    objective.after_step(unwrap(model), ctx)
    return {k: float(v.detach()) for k, v in {"loss": loss, **terms}.items()}


@torch.inference_mode()
def validate(model: nn.Module, loader: torch.utils.data.DataLoader, device: torch.device) -> dict[str, float]:
    was_training = model.training
    model.eval()
    counts = [0.0, 0.0, 0.0]  # top-1 hits, top-5 hits, images
    for images, targets in loader:
        logits = model(images.to(device))
        a, b = topk_correct(logits.float(), targets.to(device))
        counts = [counts[0] + a, counts[1] + b, counts[2] + len(targets)]
    c1, c5, n = all_reduce_sum(counts, device)
    model.train(was_training)
    return {"val_top1": 100.0 * c1 / max(n, 1), "val_top5": 100.0 * c5 / max(n, 1)}


def _check_finite(loss: torch.Tensor, terms: dict[str, torch.Tensor], epoch: int, step: int, ckpt: Path,
                  device: torch.device, dist_info: DistInfo) -> None:
    """Stop every rank at the same step when any rank's loss is NaN/Inf; name the epoch, step and term.

    Raised before ``backward``, so the weights and the last checkpoint stay those of the last good step.
    """
    finite = bool(torch.isfinite(loss.detach()).all())
    if dist_info.enabled:  # one flag per rank, so every rank stops and names the rank that failed
        flags = [0.0] * dist_info.world
        flags[dist_info.rank] = 0.0 if finite else 1.0
        bad_ranks = [r for r, f in enumerate(all_reduce_sum(flags, device)) if f]
    else:
        bad_ranks = [] if finite else [0]
    if not bad_ranks:
        return
    where = f"at epoch {epoch + 1}, step {step + 1}"
    if finite:
        raise CheckFailed(f"non-finite loss on rank {bad_ranks[0]} {where}{_last_good(ckpt)}")
    bad = [k for k, v in terms.items() if not bool(torch.isfinite(torch.as_tensor(v).detach()).all())]
    term = bad[0] if bad else "loss"
    value = float(torch.as_tensor(terms[term]).detach().float().sum()) if bad else float(loss.detach().float().sum())
    raise CheckFailed(f"non-finite loss {where}: {term}={value}{_last_good(ckpt)}")


def _last_good(ckpt: Path) -> str:
    return f"; last good checkpoint: {ckpt}" if ckpt.is_file() else "; no checkpoint was written"


def _split_sizes(train_set: Any, val_set: Any) -> dict[str, int | None]:
    return {"train": len(train_set), "val": len(val_set) if val_set is not None else None}


def check_same_run(path: Path, state: dict[str, Any], objective: Objective, cfg: TrainSettings,
                   images: dict[str, int | None] | None = None) -> None:
    """Refuse to resume ``state`` (read from ``path``) into a run whose settings differ from those it was made
    with, except :data:`RESUMABLE_CHANGES`: one line naming each old and new value. The method's settings
    are compared first (their names are the user's: ``budget``, ``keep_ratio``, ``finetune_lr``), then the
    loop's (a checkpoint older than the method record has only those), then the size of each data split
    (another --data)."""
    from vitc.core.settings import to_dict

    saved_images = state.get("images")
    if images is not None and isinstance(saved_images, dict):
        for split, n in images.items():
            if split in saved_images and saved_images[split] != n:
                raise UsageError(f"{path} was made with {saved_images[split]} {split} images; this run has {n} (another "
                                 "--data? start afresh without --resume, or give the same data)")
    for saved, now in ((state.get("settings"), objective.settings_record()), (state.get("config"), to_dict(cfg))):
        if not isinstance(saved, dict) or not now:
            continue
        changed = [k for k in now if k not in RESUMABLE_CHANGES and k in saved and _plain(saved[k]) != _plain(now[k])]
        if not changed:
            continue
        old = " and ".join(f"{k} {_show(saved[k])}" for k in changed)
        new = " and ".join(f"{k} {_show(now[k])}" for k in changed)
        keep = _show(saved[changed[0]]) if len(changed) == 1 else "those"
        raise UsageError(f"{path} was made with {old}; this run asks {new} (start afresh without --resume, or keep {keep})")


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_show(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def _changed_settings(saved: dict[str, Any], cfg: TrainSettings) -> str:
    """``epochs 3 -> 5, lr ...`` for settings that change the trajectory (device and AMP excluded)."""
    now = dataclasses.asdict(cfg)
    keys = [k for k in now if k not in ("device", "amp") and k in saved and saved[k] != now[k]]
    return ", ".join(f"{k} {saved[k]} -> {now[k]}" for k in keys)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a training checkpoint with ``weights_only=True`` (never runs pickled code)."""
    from vitc.core.models import load_torch_file

    state = load_torch_file(path)
    if not isinstance(state.get("epoch"), int) or not isinstance(state.get("model"), dict) \
            or not isinstance(state.get("optimizer"), dict):
        raise UsageError(f"{path} is not a vitc training checkpoint (needs epoch, model and optimizer)")
    return state
