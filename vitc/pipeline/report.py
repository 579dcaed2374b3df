"""The run report: ``report.json``, ``report.md`` and ``pareto.png`` (top-1 against images/s).

One row per (variant, deployed format): params, MACs, MACs ratio to dense, top-1 and the backend
it was measured through, images/s at each benched batch size, speedup over the dense model at the
same precision and backend, the *stacked* speedup over the dense fp32 model on the reference backend
(ONNX Runtime) across method × precision × backend, the achieved GFLOP/s (2 · MACs · images/s) and its
share of the GEMM peak of its own precision timed in the same bench rounds, and the verification result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitc.backends import BACKENDS, REFERENCE_BACKEND
from vitc.core.fileio import write_bytes, write_json, write_text

REPORT_JSON, REPORT_MD, PARETO_PNG = "report.json", "report.md", "pareto.png"
DENSE = "dense"  # the method name of the run's own dense model
REFERENCE = (DENSE, REFERENCE_BACKEND, "fp32")  # (method, backend, precision) every stacked speedup is over


def add_stacked(rows: list[dict[str, Any]]) -> None:
    """Fill ``row["stacked_speedup"][batch]`` (img/s over the dense ONNX Runtime fp32 row's, measured in
    separate runs of the same pipeline), ``row["gflops"][batch]`` and ``row["peak_fraction"][batch]``
    (of the GEMM of its precision its bench timed in the same rounds)."""
    ref = next((r for r in rows if (r.get("method"), r.get("backend"), r.get("precision")) == REFERENCE), None)
    ref_ips = (ref or {}).get("throughput") or {}
    for r in rows:
        ips = r.get("throughput") or {}
        detail = r.get("bench") or {}
        # the row's own measurement (the last target of its bench: alone, or after the dense model when paired)
        measured = {str(res["batch"]): res["rows"][-1] for res in detail.get("results", []) if res.get("rows")}
        r["stacked_speedup"] = r.get("stacked_speedup_measured") or {  # a tune row: its own paired measurement
            b: v / ref_ips[b] for b, v in ips.items() if v and ref_ips.get(b)}
        r["gflops"] = {b: 2.0 * r["macs"] * v / 1e9 for b, v in ips.items() if v and r.get("macs")}
        r["peak_fraction"] = {b: m["peak_fraction"] for b, m in measured.items() if m.get("peak_fraction") is not None}
        r["peak_gflops"] = {b: m["peak_gflops"] for b, m in measured.items() if m.get("peak_gflops") is not None}


def add_speedups(rows: list[dict[str, Any]]) -> None:
    """Fill ``row["speedup"][batch]`` where no paired measurement gave it: img/s over the dense row with the
    same backend and precision (1.0 for the dense rows themselves)."""
    dense = {(r["backend"], r["precision"]): r for r in rows if r.get("method") == DENSE}
    for r in rows:
        if r.get("speedup"):
            continue
        base = dense.get((r["backend"], r["precision"]))
        r["speedup"] = {}
        if not base:
            continue
        for b, ips in (r.get("throughput") or {}).items():
            ref = (base.get("throughput") or {}).get(b)
            if ref and ips:
                r["speedup"][b] = ips / ref


def batch_sizes(rows: list[dict[str, Any]]) -> list[str]:
    seen: set[int] = set()
    for r in rows:
        seen.update(int(b) for b in (r.get("throughput") or {}))
    return [str(b) for b in sorted(seen)]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    batches = batch_sizes(rows)
    header = ["variant", "format", "params (M)", "MACs (M)", "MACs ratio", "top-1 (%)", "top-1 via"]
    header += [f"img/s @{b}" for b in batches] + [f"speedup @{b}" for b in batches]
    header += [f"vs dense ORT fp32 @{b}" for b in batches] + [f"GFLOP/s (of peak) @{b}" for b in batches] + ["verified"]
    predicted = any(r.get("predicted_speedup") for r in rows)  # speed targets: the latency profile's prediction
    if predicted:
        header.insert(7 + len(batches), "predicted speedup (target)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [
            r["variant"], r["format"], f"{r['params'] / 1e6:.3f}", f"{r['macs'] / 1e6:.2f}", f"{r['macs_ratio']:.3f}",
            "-" if r.get("top1") is None else f"{r['top1']:.2f}", r.get("top1_backend") or "-",
        ]
        cells += [_num(r.get("throughput", {}).get(b), "{:.1f}") for b in batches]
        if predicted:
            cells.append("-" if not r.get("predicted_speedup") else
                         f"{r['predicted_speedup']:.2f}x" + (f" ({r['target_speedup']:g}x)" if r.get("target_speedup") else ""))
        cells += [_num(r.get("speedup", {}).get(b), "{:.2f}x") for b in batches]
        cells += [_num((r.get("stacked_speedup") or {}).get(b), "{:.2f}x") for b in batches]
        cells += [_gflops(r, b) for b in batches]
        cells.append(r.get("verify") or "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else fmt.format(v)


def _gflops(row: dict[str, Any], batch: str) -> str:
    g = (row.get("gflops") or {}).get(batch)
    if g is None:
        return "-"
    frac = (row.get("peak_fraction") or {}).get(batch)
    return f"{g:.1f}" + ("" if frac is None else f" ({frac:.0%})")


def render_markdown(report: dict[str, Any]) -> str:
    rows = report["rows"]
    meta = report.get("meta", {})
    parts = [f"# vitc report: {meta.get('model', '?')} on {meta.get('data', '?')}", ""]
    if meta:
        parts.append(", ".join(f"{k}: {v}" for k, v in meta.items() if k not in ("model", "data") and not isinstance(v, (dict, list))))
        parts.append("")
    parts.append(markdown_table(rows))
    parts += [
        "",
        "MACs are analytic multiply–accumulates per image. Top-1 is measured through the backend named in "
        "'top-1 via' on the validation split. Throughput is images/s on synthetic inputs; speedup is over the "
        "dense model with the same backend and precision, measured alternately with it in one paired run (the "
        "`vitc bench --compare` protocol). 'vs dense ORT fp32' is the stacked speedup over the dense fp32 model on "
        "ONNX Runtime (method × precision × backend; images/s of separate runs; a tune row's speedups are its own "
        "paired measurements against the dense files in the tune's bench). GFLOP/s is 2 · MACs · images/s, "
        "with its share of a GEMM of the same precision timed in the same bench rounds. 'verified' is the "
        "parity check of each exported ONNX against its PyTorch artifact.",
    ]
    if report.get("targets"):
        from vitc.pipeline.targets import describe

        parts += ["", "Targets:", *(f"- {describe(t)}" for t in report["targets"])]
    env = report.get("environment")
    if env:
        parts += ["", "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items())]
    return "\n".join(parts) + "\n"


def pareto_png(rows: list[dict[str, Any]], batch: str | None = None) -> bytes:
    """Top-1 (%) against images/s at ``batch`` (default 32, else the largest benched), dense marked, labels apart."""
    from vitc.core.plots import Point, scatter_png

    batches = batch_sizes(rows)
    if batch is None:
        batch = "32" if "32" in batches else (batches[-1] if batches else None)
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive"]
    colors: dict[str, str] = {DENSE: "black"}
    for r in rows:  # one colour per method, in the order the report lists them
        colors.setdefault(r.get("method", "?"), palette[(len(colors) - 1) % len(palette)])
    points, annotated = [], set()
    for r in rows:  # one marker per deployed format (the backend's record says which), one colour per method
        ips = (r.get("throughput") or {}).get(batch) if batch else None
        if ips is None or r.get("top1") is None:
            continue
        method, backend = r.get("method", "?"), r.get("backend", "?")
        is_dense = method == DENSE and r.get("precision") == "fp32"
        marker = "*" if is_dense else (BACKENDS[backend].marker(r.get("precision", "")) if backend in BACKENDS else "o")
        label = r["variant"] if r["variant"] not in annotated else None  # one label per variant
        annotated.add(r["variant"])
        points.append(Point(ips, r["top1"], label=label, legend=f"{method} · {backend} {r.get('precision', '')}".strip(),
                            color=colors.get(method, "tab:gray"), marker=marker, size=160 if is_dense else 60))
    return scatter_png(points, xlabel=f"throughput at batch {batch} (images/s, higher is better)",
                       ylabel="top-1 accuracy (%)", title="Accuracy vs throughput (★ = dense baseline)")


def write_report(out_dir: str | Path, rows: list[dict[str, Any]], meta: dict[str, Any], environment: dict[str, Any],
                 targets: list[dict[str, Any]] | None = None) -> dict[str, str]:
    """``targets``: the checked targets (:func:`vitc.pipeline.targets.check_targets`), listed under the table."""
    out_dir = Path(out_dir)
    add_speedups(rows)
    add_stacked(rows)
    report: dict[str, Any] = {"meta": meta, "environment": environment, "rows": rows}
    if targets:
        report["targets"] = targets
    write_json(out_dir / REPORT_JSON, report)
    write_text(out_dir / REPORT_MD, render_markdown(report))
    write_bytes(out_dir / PARETO_PNG, pareto_png(rows))
    return {"json": str(out_dir / REPORT_JSON), "markdown": str(out_dir / REPORT_MD), "plot": str(out_dir / PARETO_PNG)}
