from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vitc.checks.settings import EvalSettings
from vitc.cli.common import data_option, emit, json_option, model_options
from vitc.cli.options import collect, settings_options


@click.command("eval")
@click.argument("target")
@data_option()
@settings_options(EvalSettings)
@model_options
@json_option
@click.pass_context
def eval_cmd(ctx: click.Context, target: str, data: str, pretrained: bool, checkpoint: Path | None, as_json: bool,
             **params: Any) -> None:
    """Top-1 and top-5 (percent) of TARGET on a data split, through the backend it ships in.

    TARGET is an artifact (.safetensors, any kind), a timm name, an ONNX file or a TensorRT engine.
    """
    s = collect(EvalSettings, params, ctx)
    from vitc.checks.evaluate import evaluate_target

    result = evaluate_target(target, data, split=s.split, batch_size=s.batch_size, backend=s.backend, device=s.device,
                             pretrained=pretrained, checkpoint=str(checkpoint) if checkpoint else None)
    emit(result.to_dict(), as_json, lambda _: result.to_text())
