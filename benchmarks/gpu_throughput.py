#!/usr/bin/env python
"""GPU throughput: DeiT-S dense vs UVC-materialized (budget 0.5) vs DynamicViT-materialized (rho 0.7,
0.5), at batch 1, 32 and 64 in fp16, through every backend present, with the measured speedup next
to the analytic MACs ratio.

    python benchmarks/gpu_throughput.py --out runs/gpu_throughput            # on a CUDA machine
    python benchmarks/gpu_throughput.py --uvc runs/uvc/compressed.safetensors --dynamicvit runs/dvt/compressed.safetensors

Architectures: unless ``--uvc``/``--dynamicvit`` name trained artifacts, they come from a short
compress run on synthetic data (``vitc.methods.uvc.compress.compress_uvc`` / ``compress_dynamicvit`` then
``vitc.methods.materialize.materialize``): throughput depends on the shapes (heads, MLP widths, blocks,
token counts), not on the weights, and the script says so in its output.

Backends: torch (always; fp16 with CUDA graphs), onnxruntime (when its CUDA provider is installed,
or on CPU), tensorrt (when TensorRT is installed: fp16 ONNX → ``vitc build`` engine). Each
compressed variant is timed alternately with the dense model of the same backend and precision
(``vitc bench --compare`` protocol), so the speedup holds even when absolute times drift.
``--device cpu --precision fp32`` runs the same protocol on a CPU (a smoke run, or CPU numbers).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

NOTE_SYNTHETIC = ("architectures from a short compress run on synthetic data: throughput depends on shapes "
                  "(heads, MLP widths, blocks, token counts), not on weights; accuracy is not measured here")


def dense_artifact(model: str, out: Path) -> Path:
    """The dense model as a vitc artifact (random init unless ``model`` is already an artifact)."""
    from vitc.core.artifacts import save_model
    from vitc.core.models import is_artifact_path, resolve_model

    if is_artifact_path(model):
        return Path(model)
    net, spec = resolve_model(model)
    return save_model(out / "dense.safetensors", net, spec)


def uvc_architecture(dense: Path, out: Path, *, given: Path | None, budget: float, synthetic: int, epochs: int,
                     batch_size: int, device: str) -> Path:
    """A materialized UVC model: from ``given`` (compressed or already materialized) or a short run."""
    from vitc.core.artifacts import read_header
    from vitc.core.errors import UsageError
    from vitc.methods import materialize

    if given is None:
        from vitc.methods.uvc.compress import compress_uvc
        from vitc.methods.uvc.settings import UVCSettings

        settings = UVCSettings(budget=budget, epochs=epochs, finetune_epochs=0, batch_size=batch_size, device=device)
        summary = compress_uvc(str(dense), f"synthetic:{synthetic}", out / "uvc", settings)
        assert summary is not None  # single process
        given = Path(summary["artifact"])
    _, kind, _ = read_header(given)
    if kind == "model":
        return given
    if kind != "uvc":
        raise UsageError(f"--uvc {given} is a {kind} artifact, not a UVC one")
    return Path(materialize(given, out / "uvc" / "materialized.safetensors")["artifact"])


def dynamicvit_architectures(dense: Path, out: Path, *, given: Path | None, keep_ratios: list[float], synthetic: int,
                             epochs: int, batch_size: int, device: str) -> list[tuple[float, Path]]:
    """Materialized DynamicViT models, one per keep ratio (token counts floor(N*rho^s) per stage)."""
    from vitc.core.artifacts import read_header
    from vitc.core.errors import UsageError
    from vitc.methods import materialize

    if given is None:
        from vitc.methods.dynamicvit.compress import compress_dynamicvit
        from vitc.methods.dynamicvit.settings import DynamicViTSettings

        settings = DynamicViTSettings(keep_ratio=keep_ratios[0], epochs=epochs, batch_size=batch_size, device=device)
        summary = compress_dynamicvit(str(dense), f"synthetic:{synthetic}", out / "dynamicvit", settings)
        assert summary is not None
        given = Path(summary["artifact"])
    _, kind, _ = read_header(given)
    if kind != "dynamicvit":
        raise UsageError(f"--dynamicvit {given} is a {kind} artifact, not a DynamicViT one")
    result = materialize(given, out / "dynamicvit", keep_ratios)
    return [(v["keep_ratio"], Path(v["artifact"])) for v in result["variants"]]


def available_backends(wanted: list[str], device: str) -> tuple[list[str], dict[str, str]]:
    """The wanted backends that can run here, and why each other one cannot."""
    import onnxruntime as ort

    from vitc.backends.tensorrt.common import tensorrt_version

    cuda = device.startswith("cuda")
    skipped: dict[str, str] = {}
    ok = []
    for b in wanted:
        if b == "onnxruntime" and cuda and "CUDAExecutionProvider" not in ort.get_available_providers():
            skipped[b] = "onnxruntime has no CUDA provider here (install onnxruntime-gpu)"
        elif b == "tensorrt" and tensorrt_version() is None:
            skipped[b] = "TensorRT is not installed"
        elif b == "tensorrt" and not cuda:
            skipped[b] = "TensorRT needs --device cuda"
        else:
            ok.append(b)
    return ok, skipped


def deployable(artifact: Path, backend: str, precision: str, batches: list[int], out: Path) -> str:
    """What the backend loads: the artifact (torch), an ONNX (onnxruntime) or an engine (tensorrt)."""
    if backend == "torch":
        return str(artifact)
    from vitc.onnx.export import export_onnx

    onnx_path = out / "deploy" / f"{artifact.stem}.{precision}.onnx"
    if not onnx_path.exists():
        export_onnx(str(artifact), onnx_path, fp16=precision == "fp16")
    if backend == "onnxruntime":
        return str(onnx_path)
    from vitc.backends.tensorrt.build import build_engine

    engine = onnx_path.with_suffix(".engine")
    build_engine(onnx_path, engine, min_batch=min(batches), opt_batch=max(batches), max_batch=max(batches),
                 timing_cache=str(out / "deploy" / "timing.cache"))
    return str(engine)


def run(variants: list[tuple[str, Path]], backends: list[str], *, device: str, precision: str, batches: list[int],
        settings: Any, cuda_graph: bool, out: Path) -> list[dict[str, Any]]:
    """Per backend: the dense model against each variant, alternately, per batch size."""
    from vitc.backends import load_runner
    from vitc.checks.bench import compare_report

    (_, dense), rest = variants[0], variants[1:]
    reports = []
    for backend in backends:
        opts: dict[str, Any] = {"cuda_graph": True} if cuda_graph and backend in ("torch", "tensorrt") else {}
        prec = precision if backend == "torch" else None
        with load_runner(deployable(dense, backend, precision, batches, out), backend, device, prec, **opts) as ra:
            for name, path in rest:
                target = deployable(path, backend, precision, batches, out)
                with load_runner(target, backend, device, prec, **opts) as rb:
                    report = compare_report(ra, rb, batches, settings, "dense", name)
                reports.append({"backend": backend, "variant": name, **report})
    return reports


def table(reports: list[dict[str, Any]]) -> str:
    from vitc.cli.common import format_table

    rows = []
    for rep in reports:
        for r in rep["results"]:
            rows.append({"backend": rep["backend"], "variant": rep["variant"], "batch": r["batch"],
                         "dense": r["a"]["images_per_s"], "variant_ips": r["b"]["images_per_s"], "speedup": r["speedup"],
                         "paired": r["speedup_paired"], "macs": rep["macs"]["ratio"] if rep["macs"] else None})
    cols = [("backend", "backend"), ("variant", "variant"), ("batch", "batch"), ("dense", "dense img/s"),
            ("variant_ips", "variant img/s"), ("speedup", "speedup"), ("paired", "paired"), ("macs", "MACs ratio")]
    return format_table(rows, cols)


@click.command()
@click.option("--model", default="deit_small_patch16_224", show_default=True, help="Dense model: timm name, vitc config or artifact.")
@click.option("--uvc", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="UVC artifact (compressed or materialized) [default: a short compress run on synthetic data].")
@click.option("--dynamicvit", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="DynamicViT compressed artifact [default: a short compress run on synthetic data].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/gpu_throughput"), show_default=True)
@click.option("--device", default="cuda", show_default=True, help="cuda, cuda:N or cpu.")
@click.option("--precision", type=click.Choice(["fp16", "fp32", "bf16"]), default="fp16", show_default=True)
@click.option("--batch", "batches", default="1,32,64", show_default=True, help="Batch sizes (images).")
@click.option("--backends", default="torch,onnxruntime,tensorrt", show_default=True, help="Backends to try (those absent are skipped).")
@click.option("--budget", type=float, default=0.5, show_default=True, help="UVC MACs budget (fraction of dense).")
@click.option("--keep-ratios", default="0.7,0.5", show_default=True, help="DynamicViT keep ratios rho.")
@click.option("--synthetic", type=click.IntRange(min=8), default=1408, show_default=True,
              help="Synthetic images per split for the compress runs (1408 = 22 steps per epoch at batch 64).")
@click.option("--uvc-epochs", type=click.IntRange(min=1), default=30, show_default=True, help="UVC search epochs (no fine-tune).")
@click.option("--dynamicvit-epochs", type=click.IntRange(min=1), default=1, show_default=True,
              help="DynamicViT epochs (token counts do not depend on training).")
@click.option("--train-batch", type=click.IntRange(min=1), default=64, show_default=True, help="Batch size of the compress runs.")
@click.option("--warmup-ms", type=float, default=500.0, show_default=True)
@click.option("--min-iters", type=int, default=50, show_default=True)
@click.option("--min-seconds", type=float, default=3.0, show_default=True)
@click.option("--cuda-graph/--no-cuda-graph", default=True, show_default=True, help="CUDA graphs for torch and TensorRT.")
def main(model: str, uvc: Path | None, dynamicvit: Path | None, out: Path, device: str, precision: str, batches: str,
         backends: str, budget: float, keep_ratios: str, synthetic: int, uvc_epochs: int, dynamicvit_epochs: int,
         train_batch: int, warmup_ms: float, min_iters: int, min_seconds: float, cuda_graph: bool) -> None:
    """Dense vs UVC vs DynamicViT throughput through every backend present; see the module docstring."""
    from vitc.checks.environment import environment
    from vitc.checks.settings import BenchSettings
    from vitc.core.errors import VitcError
    from vitc.core.fileio import write_json
    from vitc.core.validation import parse_float_list, parse_int_list

    try:
        batch_list = parse_int_list(batches, "--batch")
        ratios = parse_float_list(keep_ratios, "--keep-ratios")
        settings = BenchSettings(warmup_ms=warmup_ms, min_iters=min_iters, min_seconds=min_seconds)
        settings.validate()
        use, skipped = available_backends([b.strip() for b in backends.split(",") if b.strip()], device)
        for b, why in skipped.items():
            click.echo(f"skipping {b}: {why}", err=True)
        out.mkdir(parents=True, exist_ok=True)
        dense = dense_artifact(model, out)
        uvc_path = uvc_architecture(dense, out, given=uvc, budget=budget, synthetic=synthetic, epochs=uvc_epochs,
                                    batch_size=train_batch, device=device)
        dvt = dynamicvit_architectures(dense, out, given=dynamicvit, keep_ratios=ratios, synthetic=synthetic,
                                       epochs=dynamicvit_epochs, batch_size=train_batch, device=device)
        variants = [("dense", dense), (f"uvc-{budget:g}", uvc_path)] + [(f"dynamicvit-{r:g}", p) for r, p in dvt]
        reports = run(variants, use, device=device, precision=precision, batches=batch_list, settings=settings,
                      cuda_graph=cuda_graph and device.startswith("cuda"), out=out)
    except VitcError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    notes = {
        "uvc": f"from {uvc}" if uvc else NOTE_SYNTHETIC,
        "dynamicvit": f"from {dynamicvit}" if dynamicvit else NOTE_SYNTHETIC,
        "skipped_backends": skipped,
    }
    result: dict[str, Any] = {"device": device, "precision": precision, "batches": batch_list, "notes": notes,
              "environment": reports[0]["environment"] if reports else environment([]), "comparisons": reports}
    write_json(out / "gpu_throughput.json", result)
    click.echo(f"UVC architecture: {notes['uvc']}\nDynamicViT architectures: {notes['dynamicvit']}")
    env = result["environment"]
    click.echo(f"device: {(env.get('gpu') or {}).get('name') or env['cpu']}  precision: {precision}  "
               f"speedup = median latency dense / variant (alternating runs); MACs ratio = dense / variant")
    click.echo(table(reports))
    click.echo(f"wrote {out / 'gpu_throughput.json'}")


if __name__ == "__main__":
    main()
