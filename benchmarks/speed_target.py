"""Speed targets on DeiT-S shapes through ONNX Runtime fp32 on the CPU: latency target vs MACs budget.

For each batch size (1, 32) the dense model is profiled (`vitc profile`); for each target S (1.5, 2, 3) it then
makes, by the library's own steps,

* UVC: the short synthetic-data search (``benchmarks.shapes``) with ``--target-speedup S --latency`` and, beside
  it, with ``--budget 1/S`` (MACs);
* DynamicViT: token selection at the keep ratio the latency model picks for S, and at the one whose MACs are 1/S;
* UVC + DynamicViT: UVC takes S^(2/3) of the speedup and token selection the rest (see docs/methods.md), by
  latency and by MACs;

exports each to ONNX as ``vitc export`` does, and runs them round-robin with the dense ONNX (the paired protocol
of ``vitc bench REF T1 T2 ...``) at that batch size. Throughput depends on shapes, not weights, so the searches run
on synthetic data and token selection on a seeded random model; accuracy is not measured here. Every compressed
model is a shape outside the profile's grid: its predicted speedup against the measured one is the model's
held-out error.

    python -m benchmarks.speed_target --out runs/speed_target            # DeiT-S, ~30 min on 2 idle CPU cores
    python -m benchmarks.speed_target --smoke --out runs/speed_target_smoke   # vit-micro, a few minutes
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from benchmarks import shapes
from vitc.core.progress import log

TARGETS = (1.5, 2.0, 3.0)
UVC_SHARE = 2 / 3  # of log S, for the combination


def _uvc(dense: Path, folder: Path, smoke: bool, **budget: Any) -> Path:
    """A materialized UVC model from the short search at ``budget`` (budget=... or target_speedup=..., latency=...)."""
    from vitc.core.errors import CheckFailed
    from vitc.methods import METHODS, materialize

    final = folder / "materialized.safetensors"
    if not final.is_file():
        summary = None
        for epochs in (2, 4, 8):  # a mild budget can take the steep search a few more steps to reach
            settings = shapes.short_search_settings(**{"budget": None, "epochs": epochs, **budget})
            try:
                resume = (folder / "search" / "checkpoint.pt").is_file()  # a killed or short search continues
                summary = METHODS["uvc"].compress(str(dense), "synthetic:32", folder, settings, resume=resume)
                break
            except CheckFailed as e:
                if epochs == 8:
                    raise
                log(f"{e}; continuing the search to {2 * epochs} epochs")
        assert summary is not None  # one process
        materialize(summary["artifact"], final)
    return final


def _onnx(artifact: Path) -> Path:
    from vitc.onnx.export import export_onnx

    out = artifact.with_suffix(".onnx")
    if not out.is_file():
        export_onnx(artifact, out, verify=False)
    return out


def _ratio_for_macs(spec: Any, stages: list[int], dense_macs: int, target: float) -> float:
    """The largest keep ratio whose MACs (predictors included) are at most ``dense_macs / target``."""
    from vitc.core.flops import model_macs
    from vitc.methods.dynamicvit.compress import with_token_selection

    lo, hi = (1.0 / spec.num_patches) ** (1.0 / len(stages)) * (1 + 1e-9), 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if model_macs(with_token_selection(spec, mid, stages)) <= dense_macs / target else (lo, mid)
    return lo


def _tokens(base: Path, ratio: float, out: Path) -> Path:
    from vitc.core.artifacts import read_header

    spec, _, _ = read_header(base)
    selected, _ = shapes.with_tokens(spec, ratio)
    return out if out.is_file() else shapes.save_shape(selected, out, keep_ratio=ratio)


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/speed_target"), show_default=True)
@click.option("--model", default=shapes.DENSE_MODEL, show_default=True, help="The dense model (timm name or vitc config).")
@click.option("--batch", "batches", default="1,32", show_default=True, help="Batch sizes (one profile each).")
@click.option("--targets", default=",".join(f"{t:g}" for t in TARGETS), show_default=True, help="Speedup targets S.")
@click.option("--threads", type=int, default=2, show_default=True, help="ONNX Runtime intra-op threads (profile and bench).")
@click.option("--min-seconds", type=float, default=3.0, show_default=True, help="Bench: seconds per target, at least.")
@click.option("--smoke", is_flag=True, help="vit-micro, one target, a short grid: checks the script, measures nothing useful.")
def main(out: Path, model: str, batches: str, targets: str, threads: int, min_seconds: float, smoke: bool) -> None:
    """Predicted vs measured speedup of latency targets and MACs budgets (UVC, DynamicViT, both)."""
    from vitc.core.errors import VitcError

    try:
        result = run(out, "vit-micro" if smoke else model, [int(b) for b in batches.split(",")],
                     [2.0] if smoke else [float(t) for t in targets.split(",")], threads, 0.5 if smoke else min_seconds, smoke)
    except VitcError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    click.echo(markdown(result))


def run(out: Path, model: str, batches: list[int], targets: list[float], threads: int, min_seconds: float,
        smoke: bool) -> dict[str, Any]:
    from benchmarks import write_results
    from vitc.checks.bench import bench_targets
    from vitc.checks.environment import environment
    from vitc.checks.profile import ProfileSettings, profile_latency
    from vitc.checks.settings import BenchSettings
    from vitc.core.artifacts import read_header
    from vitc.core.errors import UsageError
    from vitc.core.flops import model_macs
    from vitc.core.latency import load_latency
    from vitc.core.progress import log
    from vitc.core.token_select import default_stages
    from vitc.methods.dynamicvit.compress import keep_ratio_for_speedup

    out.mkdir(parents=True, exist_ok=True)
    dense = shapes.dense_artifact(model, out)
    dense_spec = read_header(dense)[0]
    dense_macs = model_macs(dense_spec)
    stages = default_stages(dense_spec.depth)
    grid: dict[str, Any] = {"token_points": 3, "head_points": 2, "mlp_points": 2} if smoke else {}
    latency = {}
    for b in batches:
        path = out / f"latency-b{b}.json"
        if not path.is_file():
            profile_latency(model, path, ProfileSettings(backend="onnxruntime", device="cpu", batch_size=b, threads=threads,
                                                         **grid), probe_cache=out / "probes")
        latency[b] = load_latency(path)

    variants: list[dict[str, Any]] = []  # name, method, by, target, batch (None: both), artifact
    unreachable: list[dict[str, Any]] = []  # latency targets no keep ratio meets on the profile

    def add(name: str, method: str, by: str, target: float, batch: int | None, artifact: Path, **extra: Any) -> None:
        variants.append({"name": name, "method": method, "by": by, "target": target, "batch": batch,
                         "artifact": artifact, **extra})

    for s in targets:
        tag = f"{s:g}"
        add(f"uvc-macs{tag}", "UVC", "MACs budget", s, None, _uvc(dense, out / f"uvc-macs{tag}", smoke, budget=1 / s))
        r = _ratio_for_macs(dense_spec, stages, dense_macs, s)
        add(f"dvt-macs{tag}", "DynamicViT", "MACs budget", s, None, _tokens(dense, r, out / f"dvt-macs{tag}.safetensors"),
            keep_ratio=r)
        share = s ** UVC_SHARE
        base = _uvc(dense, out / f"combo-uvc-macs{tag}", smoke, budget=1 / share)
        base_spec = read_header(base)[0]
        r = _ratio_for_macs(base_spec, default_stages(base_spec.depth), dense_macs, s)
        add(f"combo-macs{tag}", "UVC+DynamicViT", "MACs budget", s, None, _tokens(base, r, out / f"combo-macs{tag}.safetensors"),
            keep_ratio=r)
        for b in batches:
            lat = out / f"latency-b{b}.json"
            add(f"uvc-x{tag}-b{b}", "UVC", "latency target", s, b,
                _uvc(dense, out / f"uvc-x{tag}-b{b}", smoke, target_speedup=s, latency=str(lat)))
            try:
                r = keep_ratio_for_speedup(dense_spec, stages, latency[b], s, model)["keep_ratio"]
            except UsageError as e:  # token selection alone cannot get there: say so, as vitc materialize does
                log(f"dvt-x{tag}-b{b}: {e}")
                unreachable.append({"name": f"dvt-x{tag}-b{b}", "batch": b, "target": s, "why": str(e)})
            else:
                add(f"dvt-x{tag}-b{b}", "DynamicViT", "latency target", s, b,
                    _tokens(dense, r, out / f"dvt-x{tag}-b{b}.safetensors"), keep_ratio=r)
            base = _uvc(dense, out / f"combo-uvc-x{tag}-b{b}", smoke, target_speedup=share, latency=str(lat))
            base_spec = read_header(base)[0]
            r = keep_ratio_for_speedup(base_spec, default_stages(base_spec.depth), latency[b], s, str(base))["keep_ratio"]
            add(f"combo-x{tag}-b{b}", "UVC+DynamicViT", "latency target", s, b,
                _tokens(base, r, out / f"combo-x{tag}-b{b}.safetensors"), keep_ratio=r)

    dense_onnx = _onnx(dense)
    for v in variants:
        v["onnx"] = _onnx(v["artifact"])
        v["spec"] = read_header(v["artifact"])[0]
        v["macs_ratio"] = model_macs(v["spec"]) / dense_macs
    rows = []
    for b in batches:
        here = [v for v in variants if v["batch"] in (None, b)]
        log(f"batch {b}: the dense ONNX and {len(here)} compressed ones, round-robin")
        settings = BenchSettings(batch_sizes=[b], backend="onnxruntime", device="cpu", warmup_ms=300,
                                 min_iters=5 if b > 8 else 30, min_seconds=min_seconds, peak=False)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # the ONNX Runtime runner's thread count
        report = bench_targets([str(dense_onnx)] + [str(v["onnx"]) for v in here], settings)
        measured = report.results[0].rows[1:]
        for v, m in zip(here, measured):
            predicted = latency[b].predict(v["spec"], v["name"])["speedup"]
            paired = float(m.speedup_paired or 0.0)
            rows.append({"name": v["name"], "method": v["method"], "by": v["by"], "target": v["target"], "batch": b,
                         "keep_ratio": v.get("keep_ratio"), "macs_ratio": v["macs_ratio"], "blocks": v["spec"].depth,
                         "predicted_speedup": predicted, "measured_speedup": paired, "error": predicted / paired - 1,
                         "off_target": paired / v["target"] - 1, "cv": m.cv})
    errors = {b: [abs(r["error"]) for r in rows if r["batch"] == b] for b in batches}
    result = {"benchmark": "speed_target", "model": model, "backend": "onnxruntime fp32", "threads": threads,
              "targets": targets, "batches": batches, "uvc_share": UVC_SHARE, "rows": rows, "unreachable": unreachable,
              "mean_abs_error": {str(b): sum(e) / len(e) for b, e in errors.items() if e},
              "held_out_shapes": {str(b): len(e) for b, e in errors.items()},
              "profiles": {str(b): {"dense_ms": latency[b].dense_ms, "fixed_ms": latency[b].fixed_ms,
                                    "calibration": latency[b].calibration, "probes": len(latency[b].measurements)}
                           for b in batches},
              "environment": environment(), "smoke": smoke}
    return write_results(out, "speed_target", result, markdown(result))


def markdown(result: dict[str, Any]) -> str:
    from vitc.core.tables import markdown_table

    lines = [f"## Speed targets: {result['model']}, {result['backend']}, {result['threads']} threads", ""]
    for b in result["batches"]:
        rows = [r for r in result["rows"] if r["batch"] == b]
        lines += [f"### batch {b} (profile: dense {result['profiles'][str(b)]['dense_ms']:.1f} ms, "
                  f"{result['profiles'][str(b)]['probes']} probes)", "",
                  markdown_table(["model", "method", "by", "S", "keep ratio", "MACs ratio", "blocks", "predicted",
                                  "measured (paired)", "prediction error", "measured vs S"],
                                 [[r["name"], r["method"], r["by"], r["target"], r["keep_ratio"], r["macs_ratio"],
                                   r["blocks"], f"{r['predicted_speedup']:.2f}x", f"{r['measured_speedup']:.2f}x",
                                   f"{100 * r['error']:+.1f}%", f"{100 * r['off_target']:+.1f}%"] for r in rows]),
                  "", f"Mean absolute prediction error over {len(rows)} held-out shapes: "
                      f"{100 * result['mean_abs_error'].get(str(b), float('nan')):.1f}%.", ""]
        lines += [f"Not reachable: {u['name']}: {u['why']}." for u in result.get("unreachable", []) if u["batch"] == b]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
