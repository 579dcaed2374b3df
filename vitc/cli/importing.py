"""``vitc import KIND``: turn a model trained by other code into a vitc artifact (one subcommand per importer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vitc.cli.common import emit, json_option, out_option
from vitc.cli.options import collect, settings_options
from vitc.methods.dynamicvit import DynamicViT
from vitc.methods.dynamicvit.settings import OfficialImportSettings


@click.group(name="import")
def import_group() -> None:
    """Import a model trained by the authors' code as a vitc artifact.

    The artifact then materializes, exports, verifies and evaluates like one vitc trained.
    """


@import_group.command(name=DynamicViT.kind)
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@settings_options(OfficialImportSettings)
@out_option("The DynamicViT artifact to write (.safetensors).")
@json_option
@click.pass_context
def import_dynamicvit(ctx: click.Context, checkpoint: Path, out: Path, as_json: bool, **params: Any) -> None:
    """A DeiT-style checkpoint of the official DynamicViT code (github.com/raoyongming/DynamicViT).

    CHECKPOINT is the state dict the official code saves (bare or under 'model'; backbone blocks
    under blocks.i.*, the predictors under score_predictor.k.*). It is read with
    torch.load(weights_only=True): never code. A checkpoint whose keys or shapes do not fit --model
    is refused, naming the first mismatch. The imported model ranks tokens by log p(keep) as the
    official code does (--token-score keep), so it reproduces the official outputs.

    \b
    vitc import dynamicvit dynamicvit_deit_s_0.7.pth --model deit_small_patch16_224 \\
        --keep-ratio 0.7 --out runs/dvt/official.safetensors
    vitc eval runs/dvt/official.safetensors --data imagefolder:/data/imagenet
    """
    from vitc.methods.dynamicvit.official import describe, import_official

    settings = collect(OfficialImportSettings, params, ctx)
    emit(import_official(checkpoint, out, settings), as_json, describe)
