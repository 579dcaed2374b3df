from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vitc.cli.common import emit, json_option, out_option
from vitc.core.tables import format_table, human_count
from vitc.core.validation import parse_float_list


@click.command()
@click.argument("compressed", type=click.Path(dir_okay=False, path_type=Path))
@out_option("A .safetensors file (one model) or a folder: materialized.safetensors, or one "
            "materialized-keepR.safetensors per keep ratio for token-selection artifacts.")
@click.option("--keep-ratios", default=None, metavar="R1,R2,...",
              help="Token-selection artifacts only: keep ratios to materialize, each in (0, 1] (default: the trained "
                   "ratio). Each ratio gets its own file; two ratios never share a name.")
@click.option("--target-speedup", type=click.FloatRange(min=1, min_open=True), default=None, metavar="S",
              help="Token-selection artifacts: materialize at the largest keep ratio the --latency profile predicts to "
                   "run S times faster than its dense model (instead of --keep-ratios).")
@click.option("--latency", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="LATENCY.json",
              help="Latency profile from `vitc profile` (the device, backend, precision and batch you deploy at).")
@json_option
def materialize(compressed: Path, out: Path, keep_ratios: str | None, target_speedup: float | None, latency: Path | None,
                as_json: bool) -> None:
    """Turn a compressed artifact into a physically smaller timm ViT.

    UVC: removes skipped blocks and slices qkv/proj (heads) and fc1/fc2 (neurons); refuses to write
    unless the sliced model matches the masked one (max abs logit diff <= 1e-4). DynamicViT: fixes
    the per-stage token counts floor(N*rho^s) for each keep ratio. Each written artifact records its
    parent and the MACs of the original dense model (see `vitc info`).
    """
    from vitc.methods import materialize as run

    ratios = parse_float_list(keep_ratios, "--keep-ratios") if keep_ratios else None
    emit(run(compressed, out, ratios, target_speedup=target_speedup, latency=latency), as_json, _human)


def _human(r: dict[str, Any]) -> str:
    rows = [{**v, "macs": human_count(v["macs"]), "params": human_count(v["params"]),
             "keep_tokens": "/".join(map(str, v["keep_tokens"])) or "-"} for v in r["variants"]]
    head = (f"{r['method']} artifact {r['source']}: MACs {human_count(r['macs_before'])}, "
            f"params {human_count(r['params_before'])} (original dense {r['origin']['name']}: "
            f"{human_count(r['origin']['macs'])} MACs)\n")
    cols = [("keep_ratio", "keep_ratio"), ("keep_tokens", "tokens kept"), ("macs", "MACs"), ("params", "params"),
            ("macs_ratio", "MACs ratio"), ("macs_ratio_origin", "vs dense"), ("artifact", "artifact")]
    if "max_abs_diff" in r:
        cols.insert(-1, ("max_abs_diff", "sliced-masked"))
    return head + format_table(rows, cols)
