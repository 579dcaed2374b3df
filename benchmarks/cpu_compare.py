#!/usr/bin/env python
"""CPU speedup of a UVC-materialized DeiT-S (budget 0.5) over the dense DeiT-S at batch 32, measured
with the ``vitc bench --compare`` protocol (alternating A/B runs, median-based ratio), next to the
analytic MACs ratio.

    python -m benchmarks.cpu_compare --uvc runs/uvc/compressed.safetensors     # a real UVC result
    python -m benchmarks.cpu_compare                                            # hand-built stand-in

Without ``--uvc`` the compressed architecture is **hand-built**, not searched: DeiT-S with one block
skipped and heads/MLP widths shrinking with depth (MLP widths multiples of 8), scaled until its MACs
are ``--budget`` of the dense model's. Throughput depends on these shapes, not on weights, so it
stands in for a UVC result of the same MACs ratio until one is available (a UVC search of DeiT-S
does not fit a 2-core CPU); the output says which one was measured.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from benchmarks.shapes import DENSE_MODEL, dense_artifact, hand_built_uvc_like, save_shape, uvc_architecture


@click.command()
@click.option("--model", default=DENSE_MODEL, show_default=True, help="Dense model: timm name, vitc config or artifact.")
@click.option("--uvc", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="UVC artifact (compressed or materialized) [default: a hand-built stand-in at --budget].")
@click.option("--budget", type=float, default=0.5, show_default=True, help="MACs budget of the hand-built stand-in.")
@click.option("--batch", "batches", default="32", show_default=True, help="Batch sizes (images).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/cpu_compare"), show_default=True)
@click.option("--warmup-ms", type=float, default=500.0, show_default=True)
@click.option("--min-iters", type=int, default=10, show_default=True)
@click.option("--min-seconds", type=float, default=20.0, show_default=True)
def main(model: str, uvc: Path | None, budget: float, batches: str, out: Path, warmup_ms: float, min_iters: int,
         min_seconds: float) -> None:
    """Dense vs UVC (budget 0.5) speedup on CPU through `vitc bench --compare`."""
    from vitc.checks.bench import compare_targets
    from vitc.cli.bench import format_compare
    from vitc.core.artifacts import read_header
    from vitc.core.errors import VitcError
    from vitc.core.fileio import write_json
    from vitc.core.validation import parse_int_list

    try:
        out.mkdir(parents=True, exist_ok=True)
        dense = dense_artifact(model, out)
        if uvc is not None:
            compressed = uvc_architecture(dense, out, given=uvc)
            source = f"UVC artifact {uvc}"
        else:
            spec = hand_built_uvc_like(read_header(dense)[0], budget)
            compressed = save_shape(spec, out / "uvc-handbuilt.safetensors", method="hand-built")
            source = f"HAND-BUILT DeiT-S-shaped stand-in at MACs budget {budget:g} (not a UVC search result)"
        report = compare_targets(str(dense), str(compressed), device="cpu", batch_sizes=parse_int_list(batches, "--batch"),
                                 warmup_ms=warmup_ms, min_iters=min_iters, min_seconds=min_seconds)
    except VitcError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    report["compressed_source"] = source
    write_json(out / "cpu_compare.json", report)
    click.echo(f"B = {source}")
    click.echo(format_compare(report))
    click.echo(f"wrote {out / 'cpu_compare.json'}")


if __name__ == "__main__":
    main()
