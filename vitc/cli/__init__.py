"""The ``vitc`` command line: a thin layer over the library (parse → call → print → exit code).

Subcommands are imported lazily (Click's LazyGroup pattern), so ``vitc --help`` does not import
torch. A :class:`vitc.errors.VitcError` becomes ``error: <one line>`` on stderr and its exit code
(2 for usage errors, 1 for failed checks); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from vitc import __version__
from vitc.errors import VitcError


class LazyGroup(click.Group):
    """A group whose subcommands live in ``module:attr`` strings, imported on first use."""

    def __init__(self, *args: Any, lazy_subcommands: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = lazy_subcommands or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_subcommands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_subcommands:
            module_name, attr = self.lazy_subcommands[cmd_name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except VitcError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            ctx.exit(130)


COMMANDS = {
    "info": "vitc.cli.info:info",
    "train": "vitc.cli.train:train",
    "eval": "vitc.cli.evaluate:eval_cmd",
    "compress": "vitc.cli.compress:compress",
    "materialize": "vitc.cli.materialize:materialize",
    "export": "vitc.cli.export:export",
    "verify": "vitc.cli.verify:verify",
    "quantize": "vitc.cli.quantize:quantize",
    "build": "vitc.cli.build:build",
    "bench": "vitc.cli.bench:bench",
    "run": "vitc.cli.run:run",
    "demo": "vitc.cli.run:demo",
}


@click.group(cls=LazyGroup, lazy_subcommands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vitc")
def cli() -> None:
    """Compress Vision Transformers (UVC, DynamicViT) and deploy them.

    \b
    Pipeline:  compress → materialize → export → verify → quantize → build → eval / bench → report
    Chained:   vitc run PIPELINE.yaml        End to end on built-in data: vitc demo
    """


def main() -> None:
    cli(prog_name="vitc")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
