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


# ------------------------------------------------------------------------------------------------
# never write over an input
# ------------------------------------------------------------------------------------------------

OUTPUT_PARAMS = {"out": "--out", "report": "--report", "report_alias": "--out"}
READ_WRITE_PARAMS = {"timing_cache"}  # read and then updated on purpose
WRITES_ATTR = "vitc_writes"  # on a command whose --out is a folder: the names it writes there (see guard_inputs)


def input_paths(params: dict[str, Any]) -> list[Path]:
    """The existing files a command was given: every parameter value that names a file (a model, a checkpoint,
    a teacher, an ONNX...), and the files of a data spec's PATH (``fashion-mnist:PATH``)."""
    found: list[Path] = []

    def add(value: Any) -> None:
        if isinstance(value, (list, tuple)):
            for v in value:
                add(v)
            return
        if not isinstance(value, (str, Path)) or not str(value):
            return
        candidates = [Path(value)]
        if isinstance(value, str) and ":" in value:  # a data spec: KIND:PATH
            candidates.append(Path(value.split(":", 1)[1]))
        for path in candidates:
            try:
                if path.is_file():
                    found.append(path)
                elif path.is_dir() and path is not candidates[0]:  # a data folder: its files (IDX, ...)
                    found.extend(p for p in path.iterdir() if p.is_file())
            except OSError:
                continue

    for name, value in params.items():
        if name not in OUTPUT_PARAMS and name not in READ_WRITE_PARAMS:
            add(value)
    return found


def output_paths(params: dict[str, Any], folder_files: tuple[str, ...] = ()) -> list[tuple[str, Path]]:
    """``(flag, path)`` of what a command writes: --out (a file, or ``folder_files`` in the --out folder) and
    --report."""
    outputs: list[tuple[str, Path]] = []
    for name, flag in OUTPUT_PARAMS.items():
        value = params.get(name)
        if not isinstance(value, (str, Path)) or not str(value):
            continue
        path = Path(value)
        outputs.append((flag, path))
        if name == "out" and not path.is_file():
            outputs.extend((f"{flag} {path}:", path / f) for f in folder_files)
    return outputs


def guard_inputs(command: click.Command) -> click.Command:
    """Wrap ``command`` (and a group's subcommands) so that it refuses, before any work, an output that is one of
    its inputs under any spelling, and so that no write of the command lands on an input
    (:func:`vitc.core.fileio.protect_inputs`: a file the step names only while it runs, e.g. a materialized
    variant, is checked when it is written, before any other file of the step where the step lists its
    outputs first).

    A command whose --out is a folder lists the names it writes there in its ``vitc_writes`` attribute, so
    ``vitc train --model runs/t/model.safetensors --out runs/t`` is refused before training, not after."""
    import functools

    if getattr(command, "_vitc_guarded", False):
        return command
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            guard_inputs(sub)
    elif command.callback is not None:
        callback = command.callback

        @functools.wraps(callback)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            from vitc.core.fileio import protect_inputs, refuse_overwriting_inputs

            inputs = input_paths(kwargs)
            refuse_overwriting_inputs(output_paths(kwargs, getattr(command, WRITES_ATTR, ())), inputs)
            with protect_inputs(inputs):
                return callback(*args, **kwargs)

        command.callback = guarded
    command._vitc_guarded = True  # type: ignore[attr-defined]
    return command
