"""``vitc compress KIND``: one subcommand per method of the registry, its options derived from the method's settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vitc.cli.common import data_option, emit, json_option, model_options, out_option, resume_option
from vitc.cli.guard import guard_inputs
from vitc.cli.options import collect, settings_options
from vitc.core.fileio import check_output_dir
from vitc.methods import METHODS
from vitc.methods.base import Method


def compress_command(method: Method) -> click.Command:
    """The ``vitc compress KIND`` command of ``method``."""

    @click.command(name=method.kind, help=f"{method.title}: {method.summary}.\n\n{method.input_help}\n\n"
                                          f"{(method.__doc__ or '').strip()}")
    @click.argument("model")
    @data_option()
    @out_option("Output folder: compressed.safetensors, metrics.json and resumable checkpoints.", folder=True)
    @model_options
    @settings_options(method.settings)
    @resume_option
    @json_option
    @click.pass_context
    def command(ctx: click.Context, model: str, data: str, out: Path, pretrained: bool, checkpoint: Path | None,
                resume: bool, as_json: bool, **params: Any) -> None:
        settings = collect(method.settings, params, ctx)
        check_output_dir(out)  # before any training: the folder can be written
        result = method.compress(model, data, out, settings, pretrained=pretrained,
                                 checkpoint=str(checkpoint) if checkpoint else None, resume=resume)
        if result is not None:
            emit(result, as_json, method.describe)

    command.vitc_writes = ("compressed.safetensors", "metrics.json", "checkpoint.pt")  # type: ignore[attr-defined]
    return guard_inputs(command)


class MethodGroup(click.Group):
    """Subcommands are the methods of :data:`vitc.methods.METHODS`, built when asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(METHODS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        method = METHODS.get(cmd_name)
        return compress_command(method) if method is not None else None


@click.group(cls=MethodGroup)
def compress() -> None:
    """Compress a ViT with one of the methods below.

    Each method writes DIR/compressed.safetensors (evaluable with `vitc eval`) and
    DIR/metrics.json; `vitc materialize` turns it into a physically smaller timm model.
    """
