#!/usr/bin/env python
"""At matched MACs, does UVC + DynamicViT beat either method alone?

Part 1, digits (vit-micro): from one dense baseline,

* UVC alone at budgets 0.3 and 0.45 (and 0.5, the parent of the combined runs),
* DynamicViT alone trained at rho 0.5 and 0.6,
* UVC 0.5 + DynamicViT trained at rho 0.7 and 0.5, each with both teachers (the UVC model, the
  default, and the original dense model, ``--teacher``),

every run with its command's default recipe (UVC: 30 search + 60 fine-tune epochs; DynamicViT and
the combination: 30 epochs), so each model gets the training its method would get from a user. Each
model is exported (fp32 ONNX), its top-1 measured on the 360-image val split through ONNX Runtime,
and its ORT CPU throughput at batch 32 measured alternately with the dense ONNX (the
``vitc bench --compare`` protocol): images/s and the paired speedup.

Part 2, DeiT-S shapes: the ORT CPU speedup of the combined model over dense DeiT-S at batch 1 and 32
next to its MACs ratio. The architecture comes from short runs on synthetic data (throughput depends
on the shapes — kept blocks, heads, MLP widths, token counts — not on the weights): a UVC search at
budget 0.5 (as in the README's DeiT-S command), then one epoch of token-selection training at rho 0.7.

    python benchmarks/matched_macs.py --out runs/matched_macs                     # both parts (4,287 s measured on 2 shared cores)
    python benchmarks/matched_macs.py --out runs/matched_macs --skip-deits        # digits only
    python benchmarks/matched_macs.py --out runs/matched_macs --baseline runs/base/model.safetensors

Every finished model is kept in OUT and reused when the script runs again (delete a folder to redo
it). Writes OUT/matched_macs.json and OUT/matched_macs.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

DENSE = "dense"


def log(msg: str) -> None:
    click.echo(f"[{time.strftime('%H:%M:%S')}] {msg}", err=True)


def cached(path: Path, what: str, make: Any) -> Path:
    """``path`` if a previous run made it, else ``make()`` (which writes it)."""
    if path.is_file():
        log(f"reuse {what}: {path}")
        return path
    log(f"run {what}")
    t0 = time.perf_counter()
    make()
    log(f"done {what} in {time.perf_counter() - t0:.0f} s")
    return path


def train_runs(out: Path, data: str, baseline: Path | None, seed: int, smoke: bool) -> list[dict[str, Any]]:
    """Train every digits model; return one record per model to deploy (name, method, artifact, recipe)."""
    from vitc.methods import METHODS, materialize
    from vitc.methods.dynamicvit.settings import DynamicViTSettings
    from vitc.methods.uvc.settings import UVCSettings
    from vitc.methods.uvc_dynamicvit.settings import UVCDynamicViTSettings
    from vitc.train.classifier import train_classifier
    from vitc.train.settings import TrainSettings

    short: dict[str, Any] = {"epochs": 1} if smoke else {}
    if baseline is None:
        baseline = cached(out / "dense" / "model.safetensors", "dense baseline",
                          lambda: train_classifier("vit-micro", data, out / "dense",
                                                   TrainSettings(seed=seed, device="cpu", **short)))
    models: list[dict[str, Any]] = [{"name": DENSE, "method": DENSE, "artifact": baseline, "recipe": "vitc train defaults"}]

    def compressed(kind: str, folder: Path, source: Path, settings: Any) -> Path:
        return cached(folder / "compressed.safetensors", folder.name,
                      lambda: METHODS[kind].compress(str(source), data, folder, settings))

    def plain(artifact: Path, target: Path, ratio: float | None = None) -> Path:
        return cached(target, f"materialize {target.name}",
                      lambda: materialize(artifact, target, [ratio] if ratio is not None else None))

    uvc_short: dict[str, Any] = ({"epochs": 4, "finetune_epochs": 1, "gate_warmup_epochs": 0, "z_lr_schedule": (2000.0,),
                                  "gate_lr": 5.0, "gate_interval": 1} if smoke else {})
    uvc_models: dict[float, Path] = {}
    for budget in (0.3, 0.45, 0.5):
        folder = out / f"uvc-{budget:.2f}"
        art = compressed("uvc", folder, baseline, UVCSettings(budget=budget, seed=seed, device="cpu", **uvc_short))
        uvc_models[budget] = plain(art, folder / "materialized.safetensors")
        models.append({"name": f"uvc {budget:g}", "method": "uvc", "artifact": uvc_models[budget],
                       "recipe": "30 search + 60 fine-tune epochs" if not smoke else "smoke"})
    dvt_short: dict[str, Any] = {"epochs": 1, "freeze_epochs": 0} if smoke else {}
    for rho in (0.5, 0.6):
        folder = out / f"dynamicvit-{rho:.2f}"
        art = compressed("dynamicvit", folder, baseline, DynamicViTSettings(keep_ratio=rho, seed=seed, device="cpu", **dvt_short))
        models.append({"name": f"dynamicvit rho {rho:g}", "method": "dynamicvit",
                       "artifact": plain(art, folder / "materialized.safetensors", rho),
                       "recipe": "30 epochs (5 frozen)" if not smoke else "smoke"})
    for teacher in ("uvc", DENSE):
        for rho in (0.7, 0.5):
            folder = out / f"uvc-0.50+dynamicvit-{rho:.2f}-teacher-{teacher}"
            settings = UVCDynamicViTSettings(keep_ratio=rho, seed=seed, device="cpu",
                                             teacher=str(baseline) if teacher == DENSE else None, **dvt_short)
            art = compressed("uvc+dynamicvit", folder, uvc_models[0.5], settings)
            models.append({"name": f"uvc 0.5 + dynamicvit rho {rho:g} (teacher {teacher})", "method": "uvc+dynamicvit",
                           "teacher": teacher, "artifact": plain(art, folder / "materialized.safetensors", rho),
                           "recipe": "UVC 0.5 above + 30 epochs (5 frozen)" if not smoke else "smoke"})
    return models


def deploy_and_measure(models: list[dict[str, Any]], data: str, bench: Any) -> list[dict[str, Any]]:
    """fp32 ONNX, top-1 through ONNX Runtime, MACs, params, and ORT img/s at batch 32 paired with the dense ONNX."""
    from vitc.checks.bench import compare_targets
    from vitc.checks.evaluate import evaluate_target
    from vitc.core.artifacts import read_header
    from vitc.core.flops import model_macs
    from vitc.core.summary import count_params
    from vitc.onnx.export import export_onnx

    rows = []
    dense_onnx: Path | None = None
    dense_macs = 0
    for m in models:
        art = Path(m["artifact"])
        onnx = cached(art.with_suffix(".onnx"), f"export {m['name']}", lambda art=art: export_onnx(str(art), art.with_suffix(".onnx")))
        spec = read_header(art, verify=False)[0]
        macs = model_macs(spec)
        if m["method"] == DENSE:
            dense_onnx, dense_macs = onnx, macs
        assert dense_onnx is not None
        evaluated = evaluate_target(str(onnx), data, backend="onnxruntime", device="cpu")
        top1 = evaluated["top1"]
        row = {**{k: v for k, v in m.items() if k != "artifact"}, "artifact": str(art), "onnx": str(onnx),
               "macs": macs, "macs_ratio": macs / dense_macs, "params": count_params(spec), "top1_ort": top1,
               "images": evaluated["images"]}
        if m["method"] == DENSE:
            row.update({"img_s_32": None, "speedup_32": 1.0})
        else:
            log(f"bench {m['name']} against dense (ORT CPU, batch 32, alternating)")
            pair = compare_targets(str(dense_onnx), str(onnx), bench)["results"][0]
            row.update({"img_s_32": pair["b"]["images_per_s"], "dense_img_s_32": pair["a"]["images_per_s"],
                        "speedup_32": pair["speedup"], "speedup_paired_32": pair["speedup_paired"]})
        rows.append(row)
        log(f"{m['name']}: MACs {row['macs_ratio']:.3f}, ORT top-1 {top1:.2f}%")
    dense_row = rows[0]
    dense_row["img_s_32"] = sum(r.get("dense_img_s_32") or 0 for r in rows[1:]) / max(1, len(rows) - 1)
    return rows


def deits_shapes(out: Path, bench_settings: Any, smoke: bool) -> dict[str, Any]:
    """ORT CPU speedup of UVC 0.5 + DynamicViT rho 0.7 over dense DeiT-S at batch 1 and 32 (shapes from synthetic runs)."""
    from vitc.checks.bench import compare_targets
    from vitc.core.artifacts import read_header, save_model
    from vitc.core.flops import model_macs
    from vitc.core.models import resolve_model
    from vitc.methods import METHODS, materialize
    from vitc.methods.uvc.settings import UVCSettings
    from vitc.methods.uvc_dynamicvit.settings import UVCDynamicViTSettings
    from vitc.onnx.export import export_onnx

    name = "vit-micro" if smoke else "deit_small_patch16_224"
    folder = out / "deits"
    folder.mkdir(parents=True, exist_ok=True)
    dense = cached(folder / "dense.safetensors", f"dense {name} (random weights)",
                   lambda: save_model(folder / "dense.safetensors", *resolve_model(name)))
    synthetic = "synthetic:16" if smoke else "synthetic:64"
    uvc = folder / "uvc" / "compressed.safetensors"
    search = UVCSettings(budget=0.5, epochs=2 if smoke else 4, finetune_epochs=0, batch_size=4, gate_warmup_epochs=0,
                         z_lr_schedule=(2000.0,), gate_lr=5.0, gate_interval=1, device="cpu")
    cached(uvc, "DeiT-S UVC search on synthetic data", lambda: METHODS["uvc"].compress(str(dense), synthetic, uvc.parent, search))
    combined = folder / "combined" / "compressed.safetensors"
    tokens = UVCDynamicViTSettings(keep_ratio=0.7, epochs=1, freeze_epochs=0, batch_size=4, device="cpu")
    cached(combined, "DeiT-S token selection on the UVC model (synthetic, 1 epoch)",
           lambda: METHODS["uvc+dynamicvit"].compress(str(uvc), synthetic, combined.parent, tokens))
    target = folder / "combined-keep0.70.safetensors"
    cached(target, "materialize", lambda: materialize(combined, target))
    onnx = {}
    for key, art in (("dense", dense), ("combined", target)):
        onnx[key] = cached(folder / f"{key}.onnx", f"export {key}", lambda art=art, key=key: export_onnx(str(art), folder / f"{key}.onnx"))
    spec = read_header(target, verify=False)[0]
    macs = {"dense": model_macs(read_header(dense, verify=False)[0]), "combined": model_macs(spec)}
    log("bench DeiT-S dense vs combined (ORT CPU, batch 1 and 32, alternating)")
    report = compare_targets(str(onnx["dense"]), str(onnx["combined"]), bench_settings, batch_sizes=[1, 32])
    return {
        "model": name,
        "architecture": {"blocks": spec.depth, "heads": [b.heads for b in spec.blocks],
                         "mlp_hidden": [b.mlp_hidden for b in spec.blocks],
                         "keep_tokens": [b.keep_tokens for b in spec.blocks if b.keep_tokens]},
        "macs": macs, "macs_ratio": macs["dense"] / macs["combined"],
        "results": [{"batch": r["batch"], "dense_img_s": r["a"]["images_per_s"], "combined_img_s": r["b"]["images_per_s"],
                     "speedup": r["speedup"], "speedup_paired": r["speedup_paired"]} for r in report["results"]],
        "note": "architecture from short runs on synthetic data: throughput depends on shapes, not weights",
    }


def markdown(rows: list[dict[str, Any]], deits: dict[str, Any] | None, meta: dict[str, Any]) -> str:
    lines = [f"# Matched MACs: UVC, DynamicViT and both (vit-micro on {meta['data']}, {meta['images']} val images)", "",
             "| model | method | MACs ratio | params (K) | top-1 ORT fp32 (%) | ORT img/s @32 | speedup @32 (paired) |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r["macs_ratio"]):
        ips = "-" if r.get("img_s_32") is None else f"{r['img_s_32']:.0f}"
        lines.append(f"| {r['name']} | {r['method']} | {r['macs_ratio']:.3f} | {r['params'] / 1e3:.1f} | {r['top1_ort']:.2f} | "
                     f"{ips} | {r['speedup_32']:.2f}x |")
    lines += ["", f"Recipes: each method's command defaults ({meta['recipes']}). Top-1 through ONNX Runtime fp32 on the "
              "val split; throughput: ORT on the CPU at batch 32, each model alternated with the dense ONNX in one "
              "paired run.", ""]
    if deits:
        lines += [f"## DeiT-S shapes: UVC 0.5 + DynamicViT rho 0.7 vs dense ({deits['model']}, ORT CPU fp32)", "",
                  f"MACs {deits['macs']['dense'] / 1e9:.2f} G -> {deits['macs']['combined'] / 1e9:.2f} G "
                  f"(ratio {deits['macs_ratio']:.2f}x); blocks kept {deits['architecture']['blocks']}, "
                  f"tokens kept {deits['architecture']['keep_tokens']}.", "",
                  "| batch | dense img/s | combined img/s | speedup | MACs ratio |", "|---|---|---|---|---|"]
        for r in deits["results"]:
            lines.append(f"| {r['batch']} | {r['dense_img_s']:.2f} | {r['combined_img_s']:.2f} | {r['speedup']:.2f}x | "
                         f"{deits['macs_ratio']:.2f}x |")
        lines += ["", deits["note"] + "."]
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/matched_macs"), show_default=True)
@click.option("--data", default="digits", show_default=True, help="Data spec (digits | fashion-mnist | imagefolder:PATH).")
@click.option("--baseline", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A trained dense vit-micro artifact [default: train one with `vitc train` defaults].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--skip-deits", is_flag=True, help="Skip part 2 (DeiT-S shapes).")
@click.option("--smoke", is_flag=True, help="One-epoch runs of every stage (checks the script, not the methods).")
@click.option("--min-seconds", type=float, default=4.0, show_default=True, help="Timed seconds per side and batch size.")
def main(out: Path, data: str, baseline: Path | None, seed: int, skip_deits: bool, smoke: bool, min_seconds: float) -> None:
    """Matched-MACs comparison of UVC, DynamicViT and UVC+DynamicViT; see the module docstring."""
    from vitc.checks.environment import environment
    from vitc.checks.settings import BenchSettings
    from vitc.core.errors import VitcError
    from vitc.core.fileio import write_json, write_text

    t0 = time.perf_counter()
    bench = BenchSettings(batch_sizes=[32], backend="onnxruntime", device="cpu", warmup_ms=300,
                          min_iters=5 if smoke else 20, min_seconds=0.2 if smoke else min_seconds)
    try:
        out.mkdir(parents=True, exist_ok=True)
        models = train_runs(out, data, baseline, seed, smoke)
        rows = deploy_and_measure(models, data, bench)
        deits = None if skip_deits else deits_shapes(out, bench, smoke)
    except VitcError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    meta = {"data": data, "images": rows[0]["images"],  # the val images every model was evaluated on
            "recipes": "UVC 30 search + 60 fine-tune epochs; DynamicViT 30 epochs, 5 frozen" if not smoke else "smoke",
            "seconds": round(time.perf_counter() - t0, 1), "seed": seed}
    result = {"benchmark": "matched_macs", "meta": meta, "rows": rows, "deits": deits, "environment": environment()}
    write_json(out / "matched_macs.json", result)
    write_text(out / "matched_macs.md", markdown(rows, deits, meta))
    click.echo(markdown(rows, deits, meta))
    click.echo(f"wrote {out / 'matched_macs.json'} and {out / 'matched_macs.md'} ({meta['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
