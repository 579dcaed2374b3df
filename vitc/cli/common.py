"""Options and output helpers shared by the subcommands (defined once, used everywhere)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

F = Callable[..., Any]


JSON_META = "vitc.json"  # set in the context's meta when --json is given: errors then print JSON too
JSON_EMITTED = "vitc.json.emitted"  # the command already printed its JSON document (e.g. a failed verify report)


def _remember_json(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.meta[JSON_META] = True
    return value


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, is_eager=True, callback=_remember_json,
                        help="Print one JSON object on stdout (progress stays on stderr); an error prints "
                             '{"error": ..., "exit_code": N} there too, unless the command already printed its '
                             "report (a failed verify).")(f)


def json_error(message: str, exit_code: int) -> None:
    """The machine-readable twin of an ``error:`` line, on stdout."""
    click.echo(json.dumps({"error": message, "exit_code": exit_code}))


def model_options(f: F) -> F:
    """``--pretrained`` / ``--checkpoint PATH`` for commands that take a model name."""
    f = click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Load weights from a timm-style state dict (.pth/.pt/.safetensors; never unpickles code).")(f)
    f = click.option("--pretrained", is_flag=True, help="Start from timm hub weights (needs internet).")(f)
    return f


DATA_HELP = ("digits | fashion-mnist[:PATH] | imagefolder:PATH (PATH/train, PATH/val class folders) | synthetic[:N] "
             "(random, for throughput only).")


def data_option(required: bool = True) -> Callable[[F], F]:
    return click.option("--data", "data", required=required, metavar="SPEC", help=DATA_HELP)


def out_option(help: str, *, required: bool = True, folder: bool = False) -> Callable[[F], F]:
    """``--out/-o``: what the command writes (an artifact, an ONNX, an engine or a folder of them)."""
    return click.option("--out", "-o", "out", type=click.Path(path_type=Path), required=required, help=help)


def resume_option(f: F) -> F:
    return click.option("--resume", is_flag=True, help="Continue from the checkpoint in OUT (written after every epoch).")(f)


def emit(result: dict[str, Any], as_json: bool, human: Callable[[dict[str, Any]], str] | None = None) -> None:
    """Print ``result`` as one strict JSON object (NaN/Inf as null), or as human-readable text."""
    if as_json:
        from vitc.core.fileio import json_safe

        click.echo(json.dumps(json_safe(result), indent=2, default=_jsonable, allow_nan=False))
        ctx = click.get_current_context(silent=True)
        if ctx is not None:  # stdout holds this command's one JSON document; a later error adds no second one
            ctx.meta[JSON_EMITTED] = True
    else:
        click.echo(human(result) if human else "\n".join(f"{k}: {v}" for k, v in result.items()))


def _jsonable(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
