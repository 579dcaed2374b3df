from __future__ import annotations

from pathlib import Path

import click

from vitc.cli.common import emit, json_option
from vitc.errors import CheckFailed


@click.command()
@click.argument("onnx", metavar="MODEL.onnx", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--against", required=True, metavar="ARTIFACT",
              help="Reference run in PyTorch fp32 on CPU: the vitc artifact (or timm name) the ONNX came from.")
@click.option("--data", default="random", show_default=True, metavar="SPEC|random",
              help="random: seeded uniform [0,1) images normalised with the model's mean/std; "
                   "or digits | imagefolder:PATH (its val split).")
@click.option("--batches", type=click.IntRange(min=1), default=None,
              help="Batches to compare [default: 4 for random, the whole val split for real data].")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Images per batch.")
@click.option("--atol", type=click.FloatRange(min=0), default=None,
              help="Absolute tolerance (logit units) [default: fp32 1e-4, fp16 1e-2, int8 1e-2 on 1 - cosine].")
@click.option("--rtol", type=click.FloatRange(min=0), default=None, help="Relative tolerance [default: fp32 1e-3, fp16 1e-2].")
@click.option("--stat", type=click.Choice(["elemwise", "mean", "median", "max", "cosine"]), default=None,
              help="Error statistic checked (Polygraphy's --check-error-stat): elemwise fails if any logit exceeds "
                   "both atol and rtol; mean/median/max compare that statistic; cosine fails if 1 - mean cosine "
                   "similarity > atol [default: fp32 elemwise, fp16 mean, int8 cosine].")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--device", default="auto", show_default=True, help="ONNX Runtime device: auto, cpu, cuda or cuda:N.")
@json_option
def verify(onnx: Path, against: str, data: str, batches: int | None, batch_size: int, atol: float | None,
           rtol: float | None, stat: str | None, seed: int, device: str, as_json: bool) -> None:
    """Compare MODEL.onnx (ONNX Runtime) with ARTIFACT (PyTorch) on the same inputs.

    Reports, Polygraphy-style, max/mean/median abs and rel error, p99 abs error, cosine similarity,
    top-1 agreement and the minimum tolerance that would pass, then PASSED/FAILED (exit 1 on FAILED).

    DynamicViT files: the TopK indices are read as extra outputs (Polygraphy's --onnx-outputs), so an
    image whose kept tokens differ from PyTorch's (a near-tie moved by rounding) is compared with the
    fp32 model run on the ONNX's kept tokens; such images are counted, and on real images (--data) the
    top-1 agreement with PyTorch's own selection must reach 99%.
    """
    from vitc.export.verify import verify_onnx

    report = verify_onnx(onnx, against, data=data, batches=batches, batch_size=batch_size, atol=atol, rtol=rtol,
                         stat=stat, seed=seed, device=device)
    emit(report.to_dict(), as_json, lambda _: report.to_text())
    if not report:
        raise CheckFailed(report.summary())
