from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vitc.checks.settings import VerifySettings
from vitc.cli.common import emit, json_option
from vitc.cli.options import collect, settings_options
from vitc.core.errors import CheckFailed


@click.command()
@click.argument("onnx", metavar="MODEL.onnx", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--against", required=True, metavar="ARTIFACT",
              help="Reference run in PyTorch fp32 on CPU: the vitc artifact (or timm name) the ONNX came from.")
@settings_options(VerifySettings)
@json_option
@click.pass_context
def verify(ctx: click.Context, onnx: Path, against: str, as_json: bool, **params: Any) -> None:
    """Compare MODEL.onnx (ONNX Runtime, or --backend openvino) with ARTIFACT (PyTorch) on the same inputs.

    Reports, Polygraphy-style, max/mean/median abs and rel error, p99 abs error, cosine similarity,
    top-1 agreement and the minimum tolerance that would pass, then PASSED/FAILED (exit 1 on FAILED).

    DynamicViT files: the TopK indices are read as extra outputs (Polygraphy's --onnx-outputs), so an
    image whose kept tokens differ from PyTorch's (a near-tie moved by rounding) is compared with the
    fp32 model run on the ONNX's kept tokens; such images are counted, and on real images (--data) the
    swaps may change PyTorch's fp32 top-1 on at most 1% of images (FAILED when significantly more:
    one-sided binomial p < 0.05).
    """
    s = collect(VerifySettings, params, ctx)
    from vitc.checks.verify import verify_onnx

    report = verify_onnx(onnx, against, data=s.data, batches=s.batches, batch_size=s.batch_size, atol=s.atol,
                         rtol=s.rtol, stat=s.stat, seed=s.seed, device=s.device, backend=s.backend)
    emit(report.to_dict(), as_json, lambda _: report.to_text())
    if not report:
        raise CheckFailed(report.summary())
