"""`vitc tune` on DeiT-S shapes through ONNX Runtime and OpenVINO, fp32 and INT8, on this CPU: speed only.

For each (batch, target) — by default (32, 4x), (1, 4x) and (32, 6x) — one `vitc tune` of a seeded random DeiT-S
on synthetic data (throughput depends on shapes, not weights; accuracy is not measured here, so no block is kept
float for accuracy: ``block_drop`` 100), with the short searches of ``benchmarks.shapes``, every candidate benched
round-robin with the dense model on ONNX Runtime fp32. The latency profiles are shared by the tunes
(``--profiles``), so the 6x tune reuses the 4x tune's. Writes OUT/tune.json and OUT/tune.md (the tables of
benchmarks/README.md, "vitc tune").

    python -m benchmarks.tune --out runs/tune_deits                 # ~1 h on 2 idle CPU cores (measured 58 min)
    python -m benchmarks.tune --smoke --out runs/tune_smoke         # vit-micro, minutes
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from benchmarks.shapes import DENSE_MODEL, SHORT_SEARCH_DATA


def run(out: Path, model: str, cases: list[tuple[int, float]], threads: int, smoke: bool) -> dict[str, Any]:
    from benchmarks import write_results
    from vitc.checks.environment import environment
    from vitc.core.errors import CheckFailed
    from vitc.tune import tune

    short: dict[str, Any] = {"epochs": 4, "finetune_epochs": 0, "train_batch_size": 4,
             "token_points": 3 if smoke else 6, "probe_seconds": 0.2 if smoke else 1.0, "bench_seconds": 1.0 if smoke else 4.0}
    results = []
    for batch, target in cases:
        folder = out / f"b{batch}-x{target:g}"
        try:
            result = tune(model, SHORT_SEARCH_DATA, folder, target_speedup=target,
                          batch_size=batch, threads=threads, backends=["onnxruntime", "openvino"], precisions=["fp32", "int8"],
                          block_drop=100.0, profiles=str(out / "profiles"), resume=(folder / "tune.json").is_file(),
                          force=not (folder / "tune.json").is_file(), **short)
            results.append(result.to_dict())
        except CheckFailed as e:  # nothing reachable: said, and the benchmark goes on
            results.append({"target_speedup": target, "batch_size": batch, "met": False, "why": str(e), "entries": []})
    summary = {"benchmark": "tune", "model": model, "threads": threads, "smoke": smoke, "tunes": results,
               "environment": environment()}
    return write_results(out, "tune", summary, markdown(summary))


def markdown(summary: dict[str, Any]) -> str:
    from vitc.core.tables import markdown_table

    lines = [f"## vitc tune: {summary['model']} shapes, {summary['threads']} threads, speed only", ""]
    for t in summary["tunes"]:
        s, b = t["target_speedup"], t["batch_size"]
        lines += [f"### batch {b}, target {s:g}x over ONNX Runtime fp32", ""]
        if t.get("candidates"):
            lines += [markdown_table(["candidate", "dense speedup (paired)", "compression needed"],
                                     [[c["backend"] + " " + c["precision"], f"{c['gain']:.2f}x", f"{c['needed']:.2f}x"]
                                      for c in t["candidates"]]), ""]
        if t.get("entries"):
            lines += [markdown_table(["candidate", "runs as", "predicted", "measured (paired, IQR)", "off S", "MACs ratio",
                                      "float blocks"],
                                     [[e["name"] + (" ★" if e["name"] == t.get("winner") else ""),
                                       f"{e['backend']} {e['precision']}", f"{e['predicted']:.2f}x" if e["predicted"] else "-",
                                       f"{e['measured']:.2f}x ({e['measured_iqr'][0]:.2f}-{e['measured_iqr'][1]:.2f})"
                                       if e["measured_iqr"] else "-",
                                       f"{100 * (e['measured'] / s - 1):+.1f}%" if e["measured"] else "-",
                                       f"{e['macs'] / t['entries'][0]['macs']:.3f}" if e.get("macs") else "-",
                                       ",".join(map(str, e.get("float_blocks") or [])) or "-"] for e in t["entries"]]), ""]
        if t.get("rounds"):
            lines += ["Loop: " + "; ".join(f"round {r['round']} {r['trial']} predicted {r['predicted']:.2f}x, measured "
                                           f"{r['measured']:.2f}x" for r in t["rounds"]), ""]
        lines += [("**Met**: " if t.get("met") else "**Not met**: ") + str(t.get("why")), ""]
    return "\n".join(lines)


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/tune_deits"), show_default=True)
@click.option("--model", default=DENSE_MODEL, show_default=True)
@click.option("--cases", default="32:4,1:4,32:6", show_default=True, help="BATCH:TARGET pairs, comma-separated.")
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--smoke", is_flag=True, help="vit-micro, short everything: checks the script, not the figures.")
def main(out: Path, model: str, cases: str, threads: int, smoke: bool) -> None:
    """`vitc tune` on DeiT-S shapes over {onnxruntime, openvino} x {fp32, int8}, speed only."""
    from vitc.core.errors import VitcError

    pairs = [(int(c.split(":")[0]), float(c.split(":")[1])) for c in cases.split(",") if c.strip()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        summary = run(out, "vit-micro" if smoke else model, pairs, threads, smoke)
    except VitcError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    click.echo(markdown(summary))


if __name__ == "__main__":
    main()
