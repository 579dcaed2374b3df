from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vitc.cli.common import (
    check_fraction, data_option, emit, json_option, model_options, parse_float_list, train_options,
)
from vitc.compress.uvc_defaults import DEFAULTS as D
from vitc.compress.uvc_defaults import OFFICIAL as O


def _official(key: str) -> str:
    value = O[key]
    return ",".join(f"{v:g}" for v in value) if isinstance(value, tuple) else f"{value:g}"


@click.command()
@click.argument("model")
@data_option()
@click.option("--budget", type=float, required=True,
              help="Target MACs as a fraction of the dense model's, in (0, 1] (e.g. 0.5).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder: compressed.safetensors, metrics.json, search/ and finetune/ checkpoints.")
@model_options
@click.option("--epochs", type=click.IntRange(min=1), default=D["epochs"], show_default=True,
              help="Stage-1 (search) epochs, fixed-gate warm-up included.")
@click.option("--finetune-epochs", type=click.IntRange(min=0), default=D["finetune_epochs"], show_default=True,
              help="Stage-2 epochs: KD fine-tuning with hard gates and masks re-applied every step.")
@click.option("--prune-v", is_flag=True,
              help="Also learn V-channel counts inside heads. timm's Attention needs V as wide as Q/K, so the "
                   "materialized model keeps alive heads' full V and leaves the pruned channels' attn.proj "
                   "columns at zero: it exports, but does not realise the V-channel MACs the budget counted.")
@click.option("--batch-size", type=click.IntRange(min=1), default=D["batch_size"], show_default=True,
              help="Global batch (split across torchrun ranks), both stages.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=D["lr"], show_default=True,
              help="Stage-1 peak AdamW learning rate of the weights (per-step cosine; official 1e-4 for DeiT).")
@click.option("--finetune-lr", type=click.FloatRange(min=0, min_open=True), default=D["finetune_lr"],
              show_default=True, help="Stage-2 peak AdamW learning rate.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=D["weight_decay"], show_default=True)
@click.option("--warmup-epochs", type=click.FloatRange(min=0), default=D["warmup_epochs"], show_default=True,
              help="Stage-1 linear lr warm-up, in epochs.")
@click.option("--finetune-warmup-epochs", type=click.FloatRange(min=0), default=D["finetune_warmup_epochs"],
              show_default=True, help="Stage-2 linear lr warm-up, in epochs.")
@click.option("--label-smoothing", type=click.FloatRange(min=0, max=1, max_open=True), default=D["label_smoothing"],
              show_default=True)
@click.option("--kd-alpha", type=click.FloatRange(min=0, max=1), default=D["kd_alpha"], show_default=True,
              help="Weight of the KD term: (1-a)*CE + a*KL(student/T || dense teacher/T)*T^2/numel.")
@click.option("--kd-tau", type=click.FloatRange(min=0, min_open=True), default=D["kd_tau"], show_default=True,
              help="KD temperature T.")
@click.option("--gate-warmup-epochs", type=click.IntRange(min=0), default=D["gate_warmup_epochs"], show_default=True,
              help=f"First search epochs with gates fixed at 0.5/0.5 and no count/dual updates (official {_official('gate_warmup_epochs')} of 30).")
@click.option("--z-lr-schedule", default=",".join(f"{v:g}" for v in D["z_lr_schedule"]), show_default=True,
              metavar="V1,V2,...",
              help=f"Budget-dual step size eta_z per step, one value per equal slice of the search epochs "
                   f"(paper's rising schedule; official {_official('z_lr_schedule')}, scaled x10 here for short epochs).")
@click.option("--count-lr", type=click.FloatRange(min=0), default=D["count_lr"], show_default=True,
              help=f"SGD step of the head/neuron (and V-channel) counts per step, after inf-norm clipping to 1 "
                   f"(official {_official('count_lr')}).")
@click.option("--dual-lr", type=click.FloatRange(min=0), default=D["dual_lr"], show_default=True,
              help=f"Ascent step of the group-sparsity duals y, p per step (official {_official('dual_lr')}).")
@click.option("--gate-lr", type=click.FloatRange(min=0), default=D["gate_lr"], show_default=True,
              help=f"SGD (momentum 0.9) learning rate of the skip-gate logits (official {_official('gate_lr')}).")
@click.option("--gate-interval", type=click.IntRange(min=1), default=D["gate_interval"], show_default=True,
              help=f"Optimizer steps between gate updates (official {_official('gate_interval')} for ~5,000 steps/epoch).")
@click.option("--gate-weight", type=click.FloatRange(min=0), default=D["gate_weight"], show_default=True,
              help=f"Weight of z * dR/dtheta in the gate gradient (official {_official('gate_weight')}).")
@click.option("--z-grad-clip", type=click.FloatRange(min=0), default=D["z_grad_clip"], show_default=True,
              help="R - budget is clipped to +-this before differentiating (no budget gradient beyond it).")
@train_options
@json_option
def uvc(model: str, data: str, budget: float, out: Path, pretrained: bool, checkpoint: Path | None, epochs: int,
        finetune_epochs: int, prune_v: bool, batch_size: int, lr: float, finetune_lr: float, weight_decay: float,
        warmup_epochs: float, finetune_warmup_epochs: float, label_smoothing: float, kd_alpha: float, kd_tau: float,
        gate_warmup_epochs: int, z_lr_schedule: str, count_lr: float, dual_lr: float, gate_lr: float,
        gate_interval: int, gate_weight: float, z_grad_clip: float, seed: int, deterministic: bool,
        max_grad_norm: float | None, device: str, resume: bool, as_json: bool) -> None:
    """UVC: prune heads and MLP neurons and skip whole blocks of MODEL down to a MACs budget.

    MODEL is a timm name (with --pretrained/--checkpoint), a vitc config or a dense artifact. Stage 1
    searches per-block counts (weight-norm ranked), Gumbel skip gates and duals under R <= budget,
    distilling from the dense model; the epoch whose hard-gated MACs ratio meets the budget most
    closely is fine-tuned in stage 2. Writes OUT/compressed.safetensors (`vitc eval` runs it masked;
    `vitc materialize` slices it) and OUT/metrics.json (per epoch: loss terms, R, z, kept
    blocks/heads/neurons, val top-1, stage).
    """
    check_fraction(budget, "--budget")
    from vitc.compress.uvc import compress_uvc

    result = compress_uvc(
        model, data, out, budget=budget, epochs=epochs, finetune_epochs=finetune_epochs, pretrained=pretrained,
        checkpoint=checkpoint, prune_v=prune_v, batch_size=batch_size, lr=lr, seed=seed, deterministic=deterministic,
        max_grad_norm=max_grad_norm, device=device, resume=resume, finetune_lr=finetune_lr, weight_decay=weight_decay,
        warmup_epochs=warmup_epochs, finetune_warmup_epochs=finetune_warmup_epochs, label_smoothing=label_smoothing,
        kd_alpha=kd_alpha, kd_tau=kd_tau, gate_warmup_epochs=gate_warmup_epochs,
        z_lr_schedule=tuple(parse_float_list(z_lr_schedule, "--z-lr-schedule", low=0.0, high=float("inf"))),
        count_lr=count_lr, dual_lr=dual_lr, gate_lr=gate_lr, gate_interval=gate_interval, gate_weight=gate_weight,
        z_grad_clip=z_grad_clip,
    )
    if result is not None:
        emit(result, as_json, _human)


def _human(r: dict[str, Any]) -> str:
    heads = "/".join(str(h) if g else "-" for h, g in zip(r["heads_kept"], r["gates"]))
    top1 = f"{r['val_top1']:.2f}%" if r.get("val_top1") is not None else "-"
    when = f"epoch {r['picked_epoch']}" + (f" step {r['picked_step']}" if r.get("picked_step") else " end")
    return (
        f"wrote {r['artifact']}\n"
        f"MACs {r['macs_compressed'] / r['macs_dense']:.3f}x dense (budget {r['budget']:g}; search state of {when})\n"
        f"blocks kept {r['blocks_kept']}/{len(r['gates'])}  heads per block {heads}  "
        f"neurons kept {sum(n for n, g in zip(r['neurons_kept'], r['gates']) if g)}\n"
        f"val top-1 {top1}  ({r['seconds']:.1f}s)"
    )
