"""Never write over an input: every command refuses, before any work, an output that is one of its inputs under any
spelling, and no write of a running command lands on one (``guard_inputs``, applied to the whole CLI)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

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
