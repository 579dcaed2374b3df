"""``vitc info``: prints the record :func:`vitc.checks.inspect.describe_target` assembles."""

from __future__ import annotations

from typing import Any

import click

from vitc.cli.common import emit, json_option
from vitc.core.tables import format_table, human_count


@click.command()
@click.argument("model")
@click.option("--img-size", type=click.IntRange(min=1), default=None, help="Input size in pixels (timm names and configs).")
@json_option
def info(model: str, img_size: int | None, as_json: bool) -> None:
    """Parameters, MACs and per-block shape of MODEL (timm name, vitc config, artifact, .onnx or engine).

    MACs are multiply–accumulates counted analytically from the architecture (what the papers
    call FLOPs): DeiT-S at 224 is 4.60 G. Per block: heads, head_dim, MLP hidden width, tokens
    entering the block (prefix tokens included) and its MACs. For a compressed or materialized
    artifact, also its MACs and parameters against the original dense model and what made it
    (vitc version, command, settings, seed, data, parent artifact and its digest).
    """
    from vitc.checks.inspect import describe_target

    emit(describe_target(model, img_size=img_size), as_json, _human)


def _human(r: dict[str, Any]) -> str:
    head = (
        f"{r['name']} ({r['kind']}): {r['img_size']}px, patch {r['patch_size']}, dim {r['embed_dim']}, "
        f"{r['depth']} blocks, {r['prefix_tokens']} prefix + {r['patch_tokens']} patch tokens, {r['num_classes']} classes\n"
        f"params: {human_count(r['params'])} ({r['params']:,})\n"
        f"MACs:   {human_count(r['macs'])} ({r['macs']:,})\n"
    )
    if r.get("token_score"):
        head += f"token selection ranks by: {r['token_score']}\n"
    origin = r.get("origin")
    if origin:
        head += (f"vs the original dense {origin['name']}: MACs {r['macs_vs_origin']:.3f}x "
                 f"({human_count(origin['macs'])}), params {r['params_vs_origin']:.3f}x "
                 f"({human_count(origin['params'])})\n")
    budget = r.get("budget")
    if budget:
        if budget.get("asked") is not None:
            head += f"budget ({budget['kind']} fraction of dense): asked {budget['asked']:.3f}, reached {budget['reached']:.3f}\n"
        if budget.get("predicted_speedup") is not None:
            head += (f"speedup target {budget['target_speedup']:g}x: predicted {budget['predicted_speedup']:.2f}x on the "
                     "profiled device\n" if budget.get("target_speedup") else
                     f"predicted speedup {budget['predicted_speedup']:.2f}x on the profiled device\n")
    prov = r.get("provenance")
    if prov:
        parent = prov.get("parent") or {}
        made = f"made by vitc {prov.get('vitc')} ({prov.get('step')}): {prov.get('command')}"
        if parent:
            made += f"\nparent: {parent.get('path') or parent.get('name')}"
            if parent.get("sha256"):
                made += f" ({parent.get('kind')}, sha256 {str(parent['sha256'])[:12]}...)"
        if prov.get("data"):
            made += f"\ndata: {prov['data']}" + (f", seed {prov['seed']}" if "seed" in prov else "")
        head += made + "\n"
    cols = [("index", "block"), ("heads", "heads"), ("head_dim", "head_dim"), ("mlp_hidden", "mlp_hidden"),
            ("tokens", "tokens"), ("macs", "MACs")]
    rows = [{**b, "macs": human_count(b["macs"])} for b in r["blocks"]]
    return head + format_table(rows, cols)
