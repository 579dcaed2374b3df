from __future__ import annotations

from pathlib import Path

import click

from vitc import train_defaults as D
from vitc.cli.common import data_option, emit, json_option, model_options, train_options


@click.command()
@click.option("--model", "model_name", required=True, help="timm name, vitc config (vit-micro, vit-nano) or artifact.")
@data_option()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@model_options
@click.option("--epochs", type=click.IntRange(min=0), default=D.EPOCHS, show_default=True, help="Passes over the training split.")
@click.option("--batch-size", type=click.IntRange(min=1), default=D.BATCH_SIZE, show_default=True, help="Global batch in images (split evenly across torchrun ranks).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=D.LR, show_default=True, help="Peak AdamW learning rate (from-scratch default; for fine-tuning pretrained weights use ~5e-4 x batch/512).")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=D.WEIGHT_DECAY, show_default=True,
              help="AdamW decoupled weight decay (not applied to biases, norms, tokens, position embeddings).")
@click.option("--warmup-epochs", type=click.FloatRange(min=0), default=D.WARMUP_EPOCHS, show_default=True,
              help="Linear learning-rate warm-up, in epochs (fractions allowed). From scratch, a short one can "
                   "leave the model at chance for many epochs (see vitc/train_defaults.py).")
@click.option("--label-smoothing", type=click.FloatRange(min=0, max=1, max_open=True), default=D.LABEL_SMOOTHING, show_default=True,
              help="Label smoothing of the cross-entropy, in [0, 1).")
@train_options
@json_option
def train(model_name: str, data: str, out: Path, pretrained: bool, checkpoint: Path | None, epochs: int, batch_size: int,
          lr: float, weight_decay: float, warmup_epochs: float, label_smoothing: float, seed: int, deterministic: bool,
          max_grad_norm: float | None, device: str, resume: bool, as_json: bool) -> None:
    """Train (or fine-tune) a ViT: AdamW, cosine with warm-up, label smoothing, AMP on CUDA.

    Writes OUT/model.safetensors (artifact), OUT/metrics.json (per epoch) and OUT/checkpoint.pt
    (every epoch; --resume continues from it). Runs under `torchrun --nproc_per_node N` with DDP.
    """
    from vitc.training import train_classifier

    result = train_classifier(
        model_name, data, out, pretrained=pretrained, checkpoint=checkpoint, epochs=epochs, batch_size=batch_size,
        lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs, label_smoothing=label_smoothing, seed=seed,
        deterministic=deterministic, max_grad_norm=max_grad_norm, device=device, resume=resume,
    )
    if result is not None:
        emit(result, as_json, _human)


def _human(r: dict) -> str:
    top1 = "n/a" if r["val_top1"] is None else f"{r['val_top1']:.2f}%"
    return f"wrote {r['artifact']}  val top-1 {top1}  ({r['seconds']:.1f}s)"
