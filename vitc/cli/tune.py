"""``vitc tune``: the fastest file this device runs within an accuracy tolerance, chosen by measurement."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vitc.cli.common import data_option, emit, json_option, model_options, out_option, resume_option
from vitc.cli.options import collect, settings_options
from vitc.tune.settings import TuneSettings


@click.command()
@click.argument("model")
@data_option()
@out_option("Output folder: the tuned file (tuned.*), report.md/.json, pareto.png, every try, tune.json.", folder=True)
@settings_options(TuneSettings)
@model_options
@resume_option
@click.option("--force", is_flag=True, help="Start over in an --out folder that holds an earlier tune.")
@json_option
@click.pass_context
def tune(ctx: click.Context, model: str, data: str, out: Path, pretrained: bool, checkpoint: Path | None, resume: bool,
         force: bool, as_json: bool, **params: Any) -> None:
    """Find the fastest file this device runs at --target-speedup over the reference, by measurement.

    \b
    vitc tune runs/base/model.safetensors --data fashion-mnist --target-speedup 3 --max-drop 1 \\
        --batch-size 32 --threads 2 -o runs/tune

    MODEL is the trained dense model. On every backend x precision that runs here (or --backends x
    --precisions), the dense model is profiled (`vitc profile`) and benched paired against the
    reference (--reference, the dense model on ONNX Runtime fp32): what the device gives before any
    compression. On the largest gain, each way to the remaining speedup — UVC alone, DynamicViT alone,
    and UVC+DynamicViT at each --splits share — is trained briefly (--epochs, --finetune-epochs) at
    its speed target and scored on held-out train images (--holdout; never trained on, never the val
    images the report's accuracy is taken on). An INT8 pick keeps a block float where INT8 does not
    pay here or costs more than --block-drop points. The pick is deployed and measured; off S by more
    than --tolerance, the latency model is recalibrated with the measured point and the pick
    re-landed, at most --rounds times. Every candidate is then benched round-robin with the
    reference and evaluated through its own backend; the most accurate on the held-out images among
    those that meet S (within --max-drop) wins and is copied to OUT/tuned.*. A target nothing meets
    exits 1 naming the closest. A killed tune continues with --resume.
    """
    settings = collect(TuneSettings, params, ctx)
    from vitc.core.errors import CheckFailed
    from vitc.tune import tune as run

    result = run(model, data, out, settings, pretrained=pretrained, checkpoint=str(checkpoint) if checkpoint else None,
                 resume=resume, force=force)
    emit(result.to_dict(), as_json, lambda _: result.to_text())
    if not result.met:
        raise CheckFailed(result.why)
