from __future__ import annotations

import click

from vitc.cli import LazyGroup


@click.group(cls=LazyGroup, lazy_subcommands={
    "uvc": "vitc.cli.compress_uvc:uvc",
    "dynamicvit": "vitc.cli.compress_dynamicvit:dynamicvit",
})
def compress() -> None:
    """Compress a ViT: UVC structured pruning or DynamicViT token sparsification.

    Each method writes DIR/compressed.safetensors (evaluable with `vitc eval`) and
    DIR/metrics.json; `vitc materialize` turns it into a physically smaller timm model.
    """
