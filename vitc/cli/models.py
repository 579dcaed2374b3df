from __future__ import annotations

from typing import Any

import click

from vitc.cli.common import emit, json_option
from vitc.core.tables import format_table, human_count


@click.command()
@click.argument("filter", required=False, default="")
@json_option
def models(filter: str, as_json: bool) -> None:
    """Model names vitc accepts: its small configs and the timm ViT/DeiT names that fit its spec.

    FILTER is a substring or a shell pattern (deit*, *patch16_224). A name is listed when timm builds
    it as a VisionTransformer vitc can describe (no rotary/relative position, SwiGLU, attention
    pooling...); each row gives its input size, depth, width, parameters, MACs and how many pretrained
    weight tags timm has for it (--pretrained needs one). The first full listing checks ~180 timm
    architectures (~30 s); the result is cached per timm version.
    """
    from vitc.core.models import list_models

    rows = list_models(filter)
    emit({"filter": filter, "models": rows}, as_json, _human)


def _human(r: dict[str, Any]) -> str:
    rows = [{**m, "params": human_count(m["params"]), "macs": human_count(m["macs"])} for m in r["models"]]
    cols = [("name", "name"), ("source", "source"), ("img_size", "img"), ("depth", "depth"), ("embed_dim", "dim"),
            ("params", "params"), ("macs", "MACs"), ("pretrained_tags", "pretrained tags")]
    return format_table(rows, cols) if rows else f"no accepted model matches {r['filter']!r}"
