"""Learned DynamicViT predictors vs keeping the tokens the class token attends to most (no training).

For each keep ratio rho the same static per-stage counts floor(N·rho^s) are kept before the same
blocks by:

* ``dynamicvit``: the trained predictors (``vitc.methods.dynamicvit.compress.materialize_ratio``);
* ``cls_attention_dense``: the dense baseline, keeping the patch tokens with the highest class-token
  attention (head-averaged, in the block before the stage) — training-free;
* ``cls_attention_finetuned``: the same rule on the DynamicViT-trained backbone (predictors unused),
  which separates the selection rule from the backbone fine-tuning.

Prints one JSON object (also written to --out). Example::

    python -m benchmarks.dynamicvit_vs_cls_attention --dense runs/dvt-base/model.safetensors \
        --dynamicvit runs/dvt/compressed.safetensors --data digits --keep-ratios 0.5,0.6,0.7,0.8,0.9
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import click
import torch
from torch import nn

from vitc.checks.environment import environment
from vitc.checks.evaluate import evaluate
from vitc.core.artifacts import load_artifact, load_model
from vitc.core.data import make_loader, parse_data
from vitc.core.errors import UsageError
from vitc.core.fileio import write_json
from vitc.core.flops import model_macs
from vitc.core.token_select import TokenSelect
from vitc.core.validation import parse_float_list
from vitc.methods.dynamicvit import DynamicViT
from vitc.methods.dynamicvit.compress import materialize_ratio, model_from_artifact, stage_blocks, stage_keep_counts
from vitc.methods.dynamicvit.forward import cls_attention_forward


def without_selection(model: nn.Module) -> nn.Module:
    """The same modules with the ``TokenSelect`` entries taken out of ``model.blocks`` (a dense ViT)."""
    import copy

    dense: Any = copy.deepcopy(model)
    dense.blocks = nn.Sequential(*[m for m in dense.blocks if not isinstance(m, TokenSelect)])
    return dense.eval()


def top1(predict: Callable[[torch.Tensor], torch.Tensor], loader: Any, what: str) -> float:
    return float(evaluate(predict, loader, total=len(loader), description=what)["top1"])


def compare(dense_path: str, dynamicvit_path: str, data: str, keep_ratios: list[float], batch_size: int = 128) -> dict[str, Any]:
    art = load_artifact(dynamicvit_path)
    if art.kind != DynamicViT.kind:
        raise UsageError(f"{dynamicvit_path} is not a DynamicViT artifact (kind {art.kind!r})")
    dense, dense_art = load_model(dense_path)
    if dense_art.spec.replace(name="") != art.spec.without_token_selection().replace(name=""):
        raise UsageError(f"{dense_path} is not the dense architecture of {dynamicvit_path}")
    stages = stage_blocks(art.spec)
    finetuned = without_selection(model_from_artifact(art))
    loader = make_loader(parse_data(data).dataset(art.spec, "val"), batch_size, shuffle=False)
    torch.set_grad_enabled(False)

    rows = []
    dense_top1 = top1(dense, loader, "dense")
    for rho in keep_ratios:
        counts = stage_keep_counts(art.spec, rho, len(stages))
        keep_before = dict(zip(stages, counts))
        model, spec = materialize_ratio(art, rho)
        rows.append({
            "keep_ratio": rho,
            "keep_tokens": counts,
            "macs": model_macs(spec),
            "dynamicvit_top1": top1(model, loader, f"dynamicvit {rho:g}"),
            "cls_attention_dense_top1": top1(partial(cls_attention_forward, dense, keep_before=keep_before), loader,
                                             f"cls-attention dense {rho:g}"),
            "cls_attention_finetuned_top1": top1(partial(cls_attention_forward, finetuned, keep_before=keep_before),
                                                 loader, f"cls-attention finetuned {rho:g}"),
        })
    return {
        "benchmark": "dynamicvit_vs_cls_attention",
        "dense": str(dense_path),
        "dynamicvit": str(dynamicvit_path),
        "trained_keep_ratio": art.meta.get("keep_ratio"),
        "stages": stages,
        "data": data,
        "split": "val",
        "images": len(loader.sampler),  # type: ignore[arg-type]
        "dense_top1": dense_top1,
        "dense_macs": model_macs(dense_art.spec),
        "rows": rows,
        "environment": environment(),
    }


@click.command()
@click.option("--dense", required=True, help="The dense baseline artifact the DynamicViT model was trained from.")
@click.option("--dynamicvit", "dynamicvit_path", required=True, help="DIR/compressed.safetensors from `vitc compress dynamicvit`.")
@click.option("--data", default="digits", show_default=True, help="Data spec; its val split is used.")
@click.option("--keep-ratios", default="0.5,0.6,0.7,0.8,0.9", show_default=True, help="Keep ratios rho, each in (0, 1].")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the JSON here.")
def main(dense: str, dynamicvit_path: str, data: str, keep_ratios: str, batch_size: int, out: Path | None) -> None:
    t0 = time.perf_counter()
    try:
        result = compare(dense, dynamicvit_path, data, parse_float_list(keep_ratios, "--keep-ratios"), batch_size)
    except UsageError as e:
        raise click.ClickException(str(e)) from None
    result["seconds"] = round(time.perf_counter() - t0, 2)
    if out is not None:
        write_json(out, result)
    click.echo(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
