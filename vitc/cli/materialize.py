from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vitc.cli.common import emit, format_table, human_count, json_option, parse_float_list


@click.command()
@click.argument("compressed", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="UVC: the output .safetensors (or a folder). DynamicViT: a folder, one file per keep ratio.")
@click.option("--keep-ratios", default=None, metavar="R1,R2,...",
              help="DynamicViT only: keep ratios to materialize, each in (0, 1] (default: the trained ratio).")
@json_option
def materialize(compressed: Path, out: Path, keep_ratios: str | None, as_json: bool) -> None:
    """Turn a compressed artifact into a physically smaller timm ViT.

    UVC: removes skipped blocks and slices qkv/proj (heads) and fc1/fc2 (neurons); refuses to write
    unless the sliced model matches the masked one (max abs logit diff <= 1e-4). DynamicViT: fixes
    the per-stage token counts floor(N*rho^s) for each keep ratio.
    """
    from vitc.materialize import materialize as run

    ratios = parse_float_list(keep_ratios, "--keep-ratios") if keep_ratios else None
    emit(run(compressed, out, ratios), as_json, _human)


def _human(r: dict[str, Any]) -> str:
    if r["method"] == "uvc":
        return (
            f"wrote {r['artifact']}\n"
            f"MACs   {human_count(r['macs_before'])} -> {human_count(r['macs_after'])} ({r['macs_after'] / r['macs_before']:.3f}x)\n"
            f"params {human_count(r['params_before'])} -> {human_count(r['params_after'])}\n"
            f"blocks kept {r['blocks_kept']}; sliced vs masked max abs logit diff {r['max_abs_diff']:.2e} (PASS <= 1e-4)"
        )
    rows = [{**v, "macs": human_count(v["macs"]), "ratio": v["macs"] / r["macs_before"],
             "keep_tokens": "/".join(map(str, v["keep_tokens"]))} for v in r["variants"]]
    return (f"dense MACs {human_count(r['macs_before'])}\n" + format_table(
        rows, [("keep_ratio", "keep_ratio"), ("keep_tokens", "tokens kept"), ("macs", "MACs"), ("ratio", "MACs ratio"), ("artifact", "artifact")]))
