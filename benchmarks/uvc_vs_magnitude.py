"""UVC against one-shot magnitude pruning of heads and MLP neurons, at the same MACs budget.

* ``uvc``: ``vitc compress uvc`` (search + ``--finetune-epochs`` of KD fine-tuning), or an existing
  run passed with ``--uvc DIR/compressed.safetensors``.
* ``magnitude``: what a user tries first — keep the same fraction of heads and of MLP neurons in
  every block, the largest fraction whose MACs fit the budget, chosen by the same weight norms UVC
  ranks with (squared attn.proj column-block norm per head, squared fc2 column norm per neuron);
  no block is skipped. It is then fine-tuned with UVC's own stage-2 recipe
  (``vitc.methods.uvc.compress.finetune``: same epochs, lr, KD from the dense model, masks re-applied
  every step), so the two differ only in *what* was pruned.

Both results are materialized (``vitc materialize``: sliced, checked against the masked model) and
evaluated through the deployed artifact. Prints one JSON object (also written to --out). Example::

    python -m benchmarks.uvc_vs_magnitude --model runs/uvc-base/model.safetensors --data digits \
        --budget 0.5 --uvc runs/uvc/compressed.safetensors --work runs/uvc-bench \
        --reuse --out runs/uvc-bench/result.json
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
import torch

from vitc.checks.environment import environment
from vitc.checks.evaluate import evaluate_target
from vitc.cli.common import emit
from vitc.core.artifacts import load_artifact
from vitc.core.data import parse_data
from vitc.core.errors import UsageError, VitcError
from vitc.core.fileio import write_json
from vitc.core.flops import model_macs
from vitc.core.spec import ViTSpec
from vitc.core.validation import check_fraction
from vitc.methods import METHODS, materialize
from vitc.methods.uvc.compress import finetune, load_gateable, save_uvc
from vitc.methods.uvc.defaults import DEFAULTS
from vitc.methods.uvc.model import BlockMasks, UVCViT, masks_from_counts
from vitc.methods.uvc.settings import UVCSettings
from vitc.methods.uvc.slice import sliced_spec
from vitc.train.distill import frozen_teacher


def uniform_counts(spec: ViTSpec, fraction: float) -> torch.Tensor:
    """Counts *removed* per block, (depth, 2) = (heads, neurons), keeping ``fraction`` of each (>= 1)."""
    return torch.tensor([[b.heads - max(1, round(fraction * b.heads)),
                          b.mlp_hidden - max(1, round(fraction * b.mlp_hidden))] for b in spec.blocks],
                        dtype=torch.float32)


def magnitude_masks(vit: torch.nn.Module, spec: ViTSpec, budget: float) -> tuple[list[BlockMasks], float, float]:
    """The largest uniform keep fraction (0.001 steps) whose MACs ratio is <= budget; its masks."""
    dense = model_macs(spec)
    kept = [True] * spec.depth
    for step in range(1000, 0, -1):
        fraction = step / 1000
        masks = masks_from_counts(vit, spec, uniform_counts(spec, fraction), None)
        ratio = model_macs(sliced_spec(spec, masks, kept)) / dense
        if ratio <= budget:
            return masks, fraction, ratio
    raise UsageError(f"no uniform head/neuron fraction fits --budget {budget:g} without skipping blocks")


def run_magnitude(model: str, data: str, budget: float, work: Path, finetune_epochs: int,
                  options: dict[str, Any], reuse: bool = False) -> dict[str, Any]:
    """Prune, fine-tune and write ``work/compressed.safetensors`` (``reuse``: keep an existing one
    made for the same budget and epochs)."""
    done = work / "compressed.safetensors"
    if reuse and done.is_file():
        meta = load_artifact(done).meta
        if meta.get("budget") == budget and meta.get("finetune_epochs") == finetune_epochs:
            return {"artifact": str(done), **{k: meta[k] for k in ("keep_fraction", "top1_before_finetune", "train_seconds")}}
    source = parse_data(data)
    dense, spec = load_gateable(model, source.head_classes())
    t0 = time.perf_counter()
    masks, fraction, ratio = magnitude_masks(dense, spec, budget)
    teacher = frozen_teacher(dense)
    net = UVCViT(dense, gate_mode="hard")  # initial logits (-1, +1): every block kept
    # the fine-tuning recipe of `vitc compress uvc` (its settings' stage 2), so both methods train alike
    settings = UVCSettings(budget=budget, finetune_epochs=finetune_epochs, seed=options["seed"])
    cfg = settings.finetune_loop()
    oneshot = save_uvc(work / "oneshot.safetensors", net, spec, masks, {"method": "magnitude", "fraction": fraction})
    train_set = source.dataset(spec, "train", train_transforms=True)
    net, _ = finetune(net, spec, teacher, settings, masks, ratio, cfg, train_set, source.dataset(spec, "val"),
                      work / "finetune")
    row = {
        "keep_fraction": fraction,
        "top1_before_finetune": evaluate_target(str(oneshot), data).top1,
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    save_uvc(done, net.cpu(), spec, masks, {"method": "magnitude", "budget": budget, "finetune_epochs": finetune_epochs,
                                            **row})
    return {"artifact": str(done), **row}


def evaluate_materialized(artifact: str, data: str, work: Path) -> dict[str, Any]:
    m = materialize(artifact, work / "materialized.safetensors")
    top1 = evaluate_target(m["artifact"], data).top1
    return {"macs_ratio": m["macs_after"] / m["macs_before"], "macs": m["macs_after"], "params": m["params_after"],
            "blocks_kept": m["blocks_kept"], "max_abs_diff": m["max_abs_diff"], "top1": top1,
            "materialized": m["artifact"]}


def compare(model: str, data: str, budget: float, uvc_artifact: str | None, epochs: int, finetune_epochs: int | None,
            seed: int, reuse: bool, work: Path) -> dict[str, Any]:
    """Both methods at ``budget``: compress (or reuse ``uvc_artifact``), materialize and evaluate each."""
    check_fraction(budget, "--budget")
    t0 = time.perf_counter()
    options: dict[str, Any] = {"seed": seed}
    if uvc_artifact is None:
        ft = DEFAULTS["finetune_epochs"] if finetune_epochs is None else finetune_epochs
        summary = METHODS["uvc"].compress(model, data, work / "uvc",
                                          UVCSettings(budget=budget, epochs=epochs, finetune_epochs=ft, seed=seed))
        assert summary is not None
        uvc_artifact, uvc_seconds = summary["artifact"], summary["seconds"]
    else:
        meta = load_artifact(uvc_artifact).meta
        if abs(float(meta.get("settings", {}).get("budget", budget)) - budget) > 1e-9:
            raise UsageError(f"{uvc_artifact} was compressed for budget {meta['settings']['budget']}, not {budget}")
        ft = int(meta["finetune_epochs"]) if finetune_epochs is None else finetune_epochs
        uvc_seconds = meta.get("seconds")
    uvc_row = {"artifact": uvc_artifact, "train_seconds": uvc_seconds,
               **evaluate_materialized(uvc_artifact, data, work / "uvc-eval")}
    mag = run_magnitude(model, data, budget, work / "magnitude", ft, options, reuse=reuse)
    mag_row = {**mag, **evaluate_materialized(mag["artifact"], data, work / "magnitude")}
    dense_top1 = evaluate_target(model, data).top1
    result = {
        "benchmark": "uvc_vs_magnitude",
        "model": model,
        "data": data,
        "budget": budget,
        "finetune_epochs": ft,
        "dense_top1": dense_top1,
        "uvc": uvc_row,
        "magnitude": mag_row,
        "winner": "uvc" if uvc_row["top1"] > mag_row["top1"] else ("magnitude" if mag_row["top1"] > uvc_row["top1"] else "tie"),
        "environment": environment(),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return result


@click.command()
@click.option("--model", required=True, help="Dense baseline: artifact or timm name (the UVC teacher too).")
@click.option("--data", default="digits", show_default=True, help="Data spec (digits | imagefolder:PATH).")
@click.option("--budget", type=float, default=0.5, show_default=True, help="MACs budget as a fraction of the dense model's.")
@click.option("--uvc", "uvc_artifact", default=None, help="Existing UVC compressed.safetensors (otherwise UVC runs here).")
@click.option("--epochs", type=int, default=DEFAULTS["epochs"], show_default=True, help="UVC search epochs (if UVC runs here).")
@click.option("--finetune-epochs", type=int, default=None,
              help="Fine-tune epochs for both methods (default: the --uvc run's, else the UVC default).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--reuse", is_flag=True, help="Reuse WORK/magnitude/compressed.safetensors if made for this budget and epochs.")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), required=True, help="Scratch folder.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the JSON here.")
def main(model: str, data: str, budget: float, uvc_artifact: str | None, epochs: int, finetune_epochs: int | None,
         seed: int, reuse: bool, work: Path, out: Path | None) -> None:
    """Compare UVC and one-shot magnitude pruning (both fine-tuned alike) at one MACs budget."""
    try:
        result = compare(model, data, budget, uvc_artifact, epochs, finetune_epochs, seed, reuse, work)
    except VitcError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    if out is not None:
        write_json(out, result)
    emit(result, as_json=True)


if __name__ == "__main__":
    main()
