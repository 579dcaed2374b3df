"""``vitc tune``'s answer on paper: ``report.json`` (the result), ``report.md`` (every candidate, the loop, why the
winner won) and ``pareto.png`` (top-1 against measured speedup, the front drawn, labels kept apart)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitc.tune.result import TuneResult, tables

REPORT_JSON, REPORT_MD, PARETO_PNG = "report.json", "report.md", "pareto.png"


def render_markdown(r: TuneResult) -> str:
    verdict = f"**{r.winner}** — {r.why}" if r.winner else f"**target not met** — {r.why}"
    parts = [f"# vitc tune: {r.target_speedup:g}x over {r.reference} at batch {r.batch_size}", "", verdict, ""]
    if r.deployed:
        parts += [f"Deployable file: `{r.deployed}`.", ""]
    parts += [f"Dense held-out top-1: {r.dense_holdout_top1:.2f}%. Speedups are paired (median of per-round ratios) "
              "against the reference's dense file; 'predicted' is the dense gain on the candidate's backend and precision "
              "times the compression its latency model predicts. Top-1 val is through the candidate's own backend; the "
              "choice is made on the held-out train images.", ""]
    parts += tables(r)
    parts += ["", f"Took {r.seconds / 60:.1f} min" + (f" ({r.resumed_seconds / 60:.1f} of them in earlier runs, resumed)."
                                                       if r.resumed_seconds else ".")]
    return "\n".join(parts) + "\n"


def pareto_png(r: TuneResult) -> bytes:
    from vitc.core.plots import Point, scatter_png

    colors = {"dense": "black", "trial": "tab:blue", "round": "tab:orange", "final": "tab:purple"}
    points = [Point(e.measured, e.top1, label=e.name, legend=f"{e.kind} · {e.backend} {e.precision}",
                    color="tab:green" if e.name == r.winner else colors[e.kind], marker="*" if e.kind == "dense" else "o",
                    size=160 if e.name == r.winner else 60)
              for e in r.entries if e.measured is not None and e.top1 is not None]
    return scatter_png(points, xlabel=f"measured speedup over {r.reference} (paired, batch {r.batch_size})",
                       ylabel="top-1 on the val split (%)", title=f"vitc tune: {r.target_speedup:g}x target", front=True,
                       xline=(r.target_speedup, f"target {r.target_speedup:g}x"))


def write_report(r: TuneResult, out: Path) -> dict[str, str]:
    from vitc.core.fileio import write_bytes, write_json, write_text

    files = {"json": str(out / REPORT_JSON), "markdown": str(out / REPORT_MD), "plot": str(out / PARETO_PNG)}
    r.report = files
    data: dict[str, Any] = r.to_dict()
    write_json(out / REPORT_JSON, data)
    write_text(out / REPORT_MD, render_markdown(r))
    write_bytes(out / PARETO_PNG, pareto_png(r))
    return files


__all__ = ["PARETO_PNG", "REPORT_JSON", "REPORT_MD", "pareto_png", "render_markdown", "write_report"]
