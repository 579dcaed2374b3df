#!/usr/bin/env python
"""How long ``vitc --help`` and ``vitc --version`` take, and whether they import torch: each command run
``--repeats`` times in a fresh interpreter (the console script's own path: ``python -m vitc.cli``), next
to a bare interpreter and ``import torch`` for scale. Median and max wall time; JSON + Markdown.

    python -m benchmarks.cli_startup                   # runs/cli_startup/cli_startup.{json,md}

The target is < 0.5 s for help and version (no torch). Times depend on the machine and on its load;
the script records both (CPU count, load average) and asserts nothing.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import click

CASES = {
    "python (bare interpreter)": ["-c", "pass"],
    "vitc --version": ["-m", "vitc.cli", "--version"],
    "vitc --help": ["-m", "vitc.cli", "--help"],
    "vitc train --help": ["-m", "vitc.cli", "train", "--help"],
    "import torch": ["-c", "import torch"],
}
TORCH_PROBE = ("import runpy, sys; sys.argv = ['vitc', *sys.argv[1:]]\n"
               "try:\n    runpy.run_module('vitc.cli', run_name='__main__')\n"
               "except SystemExit:\n    pass\nprint('torch' in sys.modules, file=sys.stderr)")


def _time(args: list[str], repeats: int, env: dict[str, str]) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t0)
    return times


def _imports_torch(args: list[str], env: dict[str, str]) -> bool | None:
    if args[:2] != ["-m", "vitc.cli"]:
        return None
    run = subprocess.run([sys.executable, "-c", TORCH_PROBE, *args[2:]], env=env, capture_output=True, text=True, check=True)
    return run.stderr.strip().splitlines()[-1] == "True"


@click.command()
@click.option("--repeats", type=click.IntRange(min=1), default=7, show_default=True, help="Runs per command.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/cli_startup"), show_default=True)
def main(repeats: int, out: Path) -> None:
    """Time vitc's start-up (help, version) in fresh interpreters."""
    from vitc.core.fileio import write_json, write_text
    from vitc.core.tables import markdown_table

    env = {**os.environ, "OMP_NUM_THREADS": "1", "VITC_PROGRESS": "0"}
    rows = []
    for name, args in CASES.items():
        times = _time(args, repeats, env)
        rows.append({"command": name, "median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3),
                     "runs": repeats, "imports_torch": _imports_torch(args, env)})
        click.echo(f"{name}: median {rows[-1]['median_s']:.3f} s, max {rows[-1]['max_s']:.3f} s", err=True)
    load = list(os.getloadavg())
    result = {"python": sys.version.split()[0], "cpus": os.cpu_count(), "load_average": load, "rows": rows}
    write_json(out / "cli_startup.json", result)
    table = markdown_table(["command", "median s", "max s", "runs", "imports torch"],
                           [[r["command"], r["median_s"], r["max_s"], r["runs"], r["imports_torch"]] for r in rows])
    write_text(out / "cli_startup.md", f"# vitc start-up\n\n{table}\n\nPython {result['python']}, {result['cpus']} CPUs, "
                                       f"load average {', '.join(f'{v:.2f}' for v in load)}.\n")
    click.echo(table)


if __name__ == "__main__":
    main()
