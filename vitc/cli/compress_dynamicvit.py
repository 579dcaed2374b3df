from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vitc.cli.common import data_option, emit, json_option, model_options, parse_int_list, train_options
from vitc.compress import dynamicvit_defaults as D


@click.command()
@click.argument("model")
@data_option()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder: compressed.safetensors, metrics.json, checkpoint.pt.")
@click.option("--keep-ratio", type=float, default=D.KEEP_RATIO, show_default=True,
              help="rho in (0, 1]: stage s keeps floor(N*rho^s) of the N patch tokens.")
@click.option("--stages", default=None, metavar="I,J,K",
              help="Dense block indices the predictors precede, strictly increasing in [1, depth-1] "
                   "(default: depth/4, depth/2, 3*depth/4, i.e. 3,6,9 for 12 blocks).")
@model_options
@click.option("--epochs", type=click.IntRange(min=0), default=D.EPOCHS, show_default=True,
              help="Training epochs (passes over the train split).")
@click.option("--freeze-epochs", type=click.IntRange(min=0), default=D.FREEZE_EPOCHS, show_default=True,
              help="Epochs with backbone learning rate 0 (then --backbone-lr-scale x the predictor's).")
@click.option("--backbone-lr-scale", type=click.FloatRange(min=0), default=D.BACKBONE_LR_SCALE, show_default=True,
              help="Backbone learning rate as a fraction of the predictors' after the frozen epochs "
                   "(official 0.01 for ~37k ImageNet steps; 0.1 here for short small-data runs).")
@click.option("--batch-size", type=click.IntRange(min=1), default=D.BATCH_SIZE, show_default=True,
              help="Global batch (split across torchrun ranks).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=D.LR, show_default=True,
              help="Peak AdamW learning rate of the predictors (per-step cosine).")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.05, show_default=True,
              help="AdamW weight decay (none on biases, norms and tokens).")
@click.option("--warmup-epochs", type=click.FloatRange(min=0), default=D.WARMUP_EPOCHS, show_default=True,
              help="Linear learning-rate warm-up, in epochs (official NeurIPS recipe: none).")
@click.option("--ratio-weight", type=click.FloatRange(min=0), default=D.RATIO_WEIGHT, show_default=True,
              help="Weight of the keep-ratio loss (paper: 2; DeiT-B recipe: 5).")
@train_options(max_grad_norm=D.MAX_GRAD_NORM)
@json_option
def dynamicvit(model: str, data: str, out: Path, keep_ratio: float, stages: str | None, pretrained: bool,
               checkpoint: Path | None, epochs: int, freeze_epochs: int, backbone_lr_scale: float, batch_size: int,
               lr: float, weight_decay: float, warmup_epochs: float, ratio_weight: float, seed: int,
               deterministic: bool, max_grad_norm: float | None, device: str, resume: bool, as_json: bool) -> None:
    """DynamicViT: train token-keep predictors on MODEL (timm name, vitc config or dense artifact).

    Loss CE + 0.5 KL(teacher||student) + 0.5 token distillation + ratio loss against rho^s; the
    teacher is the frozen dense model. Writes OUT/compressed.safetensors (`vitc eval` runs it at the
    trained ratio; `vitc materialize --keep-ratios` fixes other ratios) and OUT/metrics.json (per
    epoch: each loss term, kept fraction per stage, val top-1 of the inference path).
    """
    from vitc.compress.dynamicvit import compress_dynamicvit

    result = compress_dynamicvit(
        model, data, out, keep_ratio=keep_ratio, epochs=epochs,
        stages=parse_int_list(stages, "--stages", minimum=0) if stages else None,
        pretrained=pretrained, checkpoint=checkpoint, batch_size=batch_size, lr=lr, seed=seed,
        deterministic=deterministic, max_grad_norm=max_grad_norm, device=device, resume=resume,
        freeze_epochs=freeze_epochs, backbone_lr_scale=backbone_lr_scale, weight_decay=weight_decay,
        warmup_epochs=warmup_epochs, ratio_weight=ratio_weight,
    )
    if result is not None:
        emit(result, as_json, _human)


def _human(r: dict[str, Any]) -> str:
    kept = "/".join(f"{f:.3f}" if f is not None else "-" for f in r["kept_fraction"])
    top1 = f"{r['val_top1']:.2f}%" if r["val_top1"] is not None else "-"
    return (f"wrote {r['artifact']}  keep ratio {r['keep_ratio']:g}: tokens {'/'.join(map(str, r['keep_tokens']))} "
            f"before blocks {','.join(map(str, r['stages']))}\n"
            f"val top-1 {top1}  kept fraction (train) {kept}  "
            f"MACs {r['macs'] / r['dense_macs']:.3f}x dense  ({r['seconds']:.1f}s)")
