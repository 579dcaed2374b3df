from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from vitc.cli.common import emit, json_option, out_option
from vitc.core.errors import CheckFailed

F = Callable[..., Any]


def _human(r: dict[str, Any]) -> str:
    if "stages" in r:  # --dry-run
        lines = [f"stage {s['stage']}/{s['of']} {s['name']}: {s['action']}" for s in r["stages"]]
        lines += [f"note: {n}" for n in r.get("notes", [])] + [f"target: {t}" for t in r.get("targets", [])]
        return "\n".join(lines + [f"{r['would_run']} to run, {r['would_skip']} to skip (--resume) in {r['out']}"])
    from vitc.pipeline.targets import describe

    files = r["report"]
    skipped = f", {len(r['stages_skipped'])} skipped (unchanged)" if r["stages_skipped"] else ""
    targets = "".join(f"target {describe(t)}\n" for t in r.get("targets", []))
    return (f"{r['table']}\n\n{targets}{len(r['stages_run'])} stages run{skipped} in {r['meta']['seconds']:.0f}s\n"
            f"report: {files['markdown']}  {files['json']}  {files['plot']}")


def run_options(f: F) -> F:
    f = click.option("--allow-fail", is_flag=True,
                     help="Exit 0 even when a check failed (the report still marks the failed rows).")(f)
    f = click.option("--dry-run", is_flag=True,
                     help="Print the stages the run would go through and which --resume would skip; run nothing.")(f)
    f = click.option("--force", is_flag=True, help="Start over in an OUT that holds an earlier run (its checkpoints "
                                                   "and stage records are discarded).")(f)
    return click.option("--resume", is_flag=True,
                        help="Skip stages whose inputs and options are unchanged; continue interrupted training.")(f)


def _finish(result: dict[str, Any], as_json: bool, allow_fail: bool) -> None:
    emit(result, as_json, _human)
    failed = result.get("failed") or []
    if failed:
        click.echo(f"{len(failed)} check(s) failed:", err=True)
        for line in failed:
            click.echo(f"  FAIL {line}", err=True)
        if not allow_fail:
            raise CheckFailed(f"{len(failed)} check(s) failed (see the report; --allow-fail exits 0 anyway)")


@click.command()
@click.argument("pipeline", type=click.Path(dir_okay=False, path_type=Path))
@out_option("Output folder (default: the YAML's `out`, else runs/pipeline).", required=False)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Replace a key of the YAML (repeatable): a dotted KEY reaches into a section, VALUE is YAML, e.g. "
                   "--set data=fashion-mnist:/data/fm --set baseline.epochs=20.")
@run_options
@json_option
def run(pipeline: Path, out: Path | None, overrides: tuple[str, ...], resume: bool, force: bool, dry_run: bool,
        allow_fail: bool, as_json: bool) -> None:
    """Run the whole chain described by PIPELINE.yaml and write the report.

    Stages: baseline → compress → materialize → export → quantize → build (when TensorRT is
    installed) → verify → eval (each variant through its deployed backend) → bench (paired with the
    dense model) → report. The whole YAML is validated, and checked against the model spec, before
    any work; see examples/ and the README for the keys. A failed check (a verification, a `targets`
    line) exits 1 after the report is written, listing what failed.
    """
    from vitc.pipeline.config import load_config
    from vitc.pipeline.run import run_pipeline

    cfg = load_config(pipeline, overrides)
    _finish(run_pipeline(cfg, out, resume, force=force, dry_run=dry_run), as_json, allow_fail)


@click.command()
@out_option("Output folder: one sub-folder per variant, plus report.md, report.json and pareto.png.", required=False)
@click.option("--fast", is_flag=True, help="A few epochs per stage (< 4 min): checks the toolchain, not accuracy.")
@run_options
@json_option
def demo(out: Path | None, fast: bool, resume: bool, force: bool, dry_run: bool, allow_fail: bool, as_json: bool) -> None:
    """End to end on the embedded digits data with vit-micro, on CPU.

    Trains the baseline, compresses it with UVC (budget 0.5), DynamicViT (rho 0.7) and DynamicViT on
    the UVC model (uvc+dynamicvit, rho 0.7), materializes the token-selection models at 0.5/0.7/0.9
    (--fast: UVC at budget 0.7), exports fp32/fp16/INT8 ONNX, verifies, evaluates, benchmarks and writes
    OUT/report.md, OUT/report.json and OUT/pareto.png (default OUT: runs/demo, runs/demo-fast with
    --fast). About 14 min on 2 CPU cores; --fast < 4 min.
    """
    from vitc.pipeline.demo import demo_config
    from vitc.pipeline.run import run_pipeline

    out = out or Path("runs/demo-fast" if fast else "runs/demo")
    _finish(run_pipeline(demo_config(fast), out, resume, force=force, dry_run=dry_run), as_json, allow_fail)
