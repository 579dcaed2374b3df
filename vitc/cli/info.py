from __future__ import annotations

from typing import Any

import click

from vitc.cli.common import emit, format_table, human_count, json_option


@click.command()
@click.argument("model")
@click.option("--img-size", type=click.IntRange(min=1), default=None, help="Input size in pixels (timm names and configs).")
@json_option
def info(model: str, img_size: int | None, as_json: bool) -> None:
    """Parameters, MACs and per-block shape of MODEL (timm name, vitc config or artifact).

    MACs are multiply–accumulates counted analytically from the architecture (what the papers
    call FLOPs): DeiT-S at 224 is 4.60 G. Per block: heads, head_dim, MLP hidden width, tokens
    entering the block (prefix tokens included) and its MACs.
    """
    from vitc.artifacts import read_header
    from vitc.errors import UsageError
    from vitc.models.registry import is_artifact_path, resolve_spec
    from vitc.models.summary import summarize

    if is_artifact_path(model):
        if img_size is not None:
            raise UsageError("--img-size does not apply to an artifact (its input size is fixed)")
        spec, kind, _ = read_header(model)
    else:
        spec = resolve_spec(model, img_size=img_size)
        kind = "model"
    result = summarize(spec)
    result["kind"] = kind
    emit(result, as_json, _human)


def _human(r: dict[str, Any]) -> str:
    head = (
        f"{r['name']} ({r['kind']}): {r['img_size']}px, patch {r['patch_size']}, dim {r['embed_dim']}, "
        f"{r['depth']} blocks, {r['prefix_tokens']} prefix + {r['patch_tokens']} patch tokens, {r['num_classes']} classes\n"
        f"params: {human_count(r['params'])} ({r['params']:,})\n"
        f"MACs:   {human_count(r['macs'])} ({r['macs']:,})\n"
    )
    cols = [("index", "block"), ("heads", "heads"), ("head_dim", "head_dim"), ("mlp_hidden", "mlp_hidden"),
            ("tokens", "tokens"), ("macs", "MACs")]
    rows = [{**b, "macs": human_count(b["macs"])} for b in r["blocks"]]
    return head + format_table(rows, cols)
