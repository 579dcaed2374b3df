"""Check a ``vitc run`` report against targets: those of the pipeline YAML it ran, or given lines.

    python -m benchmarks.check_targets runs/fashion-mnist/report.json --pipeline benchmarks/fashion_mnist.yaml
    python -m benchmarks.check_targets runs/fashion-mnist/report.json --target "uvc-0.50 top1 >= dense - 1.0"

Prints one line per target (met / NOT met, the value and its bound); exits 1 when one is not met, 2 on
bad input. ``vitc run`` checks its YAML's targets itself at the end; this re-checks a finished report
(e.g. against a stricter line) without running anything.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("report", type=click.Path(path_type=Path))
@click.option("--pipeline", type=click.Path(path_type=Path), default=None, help="A pipeline YAML whose 'targets' to check.")
@click.option("--target", "targets", multiple=True, help="A target line, e.g. 'dense top1 >= 88' (repeatable).")
def main(report: Path, pipeline: Path | None, targets: tuple[str, ...]) -> None:
    """Check REPORT (a run's report.json) against targets; exit 1 if one is not met."""
    from vitc.core.errors import VitcError
    from vitc.pipeline.targets import check_report, describe

    try:
        results = check_report(report, list(targets), pipeline)
    except VitcError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    for r in results:
        click.echo(describe(r))
    missed = sum(not r["met"] for r in results)
    if missed:
        click.echo(f"error: {missed} of {len(results)} targets not met", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
