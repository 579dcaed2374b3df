from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vitc.cli.common import data_option, emit, json_option, model_options, out_option, resume_option
from vitc.cli.options import collect, settings_options
from vitc.train.settings import TrainSettings


@click.command()
@click.option("--model", "model_name", required=True, help="timm name, vitc config (vit-micro, vit-nano) or artifact.")
@data_option()
@out_option("Output folder: model.safetensors, metrics.json, checkpoint.pt.", folder=True)
@model_options
@settings_options(TrainSettings)
@resume_option
@json_option
@click.pass_context
def train(ctx: click.Context, model_name: str, data: str, out: Path, pretrained: bool, checkpoint: Path | None,
          resume: bool, as_json: bool, **params: Any) -> None:
    """Train (or fine-tune) a ViT: AdamW, cosine with warm-up, label smoothing, AMP on CUDA.

    Writes OUT/model.safetensors (artifact), OUT/metrics.json (per epoch) and OUT/checkpoint.pt
    (every epoch; --resume continues from it). Runs under `torchrun --nproc_per_node N` with DDP.
    """
    settings = collect(TrainSettings, params, ctx)
    from vitc.train.classifier import train_classifier

    result = train_classifier(model_name, data, out, settings, pretrained=pretrained, checkpoint=checkpoint, resume=resume)
    if result is not None:
        emit(result, as_json, _human)


train.vitc_writes = ("model.safetensors", "metrics.json", "checkpoint.pt")  # type: ignore[attr-defined]


def _human(r: dict[str, Any]) -> str:
    top1 = "n/a" if r["val_top1"] is None else f"{r['val_top1']:.2f}%"
    return f"wrote {r['artifact']}  val top-1 {top1}  ({r['seconds']:.1f}s)"
