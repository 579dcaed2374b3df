from __future__ import annotations

import click

from vitc.cli.common import data_option, emit, json_option, model_options


@click.command("eval")
@click.argument("target")
@data_option()
@click.option("--split", type=click.Choice(["train", "val"]), default="val", show_default=True, help="Data split to score.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Images per forward pass.")
@click.option("--backend", type=click.Choice(["auto", "torch", "onnxruntime", "tensorrt"]), default="auto", show_default=True,
              help="auto: torch for artifacts/names, onnxruntime for .onnx, tensorrt for .engine.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda or auto.")
@model_options
@json_option
def eval_cmd(target: str, data: str, split: str, batch_size: int, backend: str, device: str, pretrained: bool,
             checkpoint: str | None, as_json: bool) -> None:
    """Top-1 and top-5 (percent) of TARGET on a data split, through the backend it ships in.

    TARGET is an artifact (.safetensors), a timm name, an ONNX file or a TensorRT engine.
    """
    from vitc.engines.evaluate import evaluate_target

    result = evaluate_target(target, data, split=split, batch_size=batch_size, backend=backend, device=device,
                             pretrained=pretrained, checkpoint=checkpoint)
    emit(result, as_json, lambda r: f"top-1 {r['top1']:.2f}%  top-5 {r['top5']:.2f}%  images {r['images']}  ({r['backend']})")
