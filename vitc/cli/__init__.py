"""The ``vitc`` command line: a thin layer over the library (parse → call → print → exit code).

Subcommands are imported lazily (Click's LazyGroup pattern), so ``vitc --help`` does not import
torch. A :class:`vitc.core.errors.VitcError` becomes ``error: <one line>`` on stderr and its exit code
(2 for usage errors, 1 for failed checks); anything else is a bug and keeps its traceback.

Ctrl-C: the SIGINT handler is installed first thing, before Click (and long before torch, which a
subcommand imports lazily and which takes seconds), so an interrupt at any moment — torch still
importing included — is ``error: interrupted`` and exit 130, never a traceback. An interrupt that
some library swallows while importing surfaces again at the next import (an audit hook of the console
script), so the command stops instead of going on to fail oddly.

``VITC_STARTUP_MARKS=FILE`` (read for this purpose only, by the tests of the above): vitc appends a line to FILE
at each moment of start-up it reaches — ``handler`` (the SIGINT handler is installed; nothing else of vitc or
Click is imported yet), ``importing`` (a subcommand's module, and with it torch, starts importing) and
``imported`` (the subcommand is about to parse its options and run) — so a test sends its Ctrl-C once that
moment is reached instead of after a guessed delay.
"""

from __future__ import annotations

import os
import signal
import threading

_interrupted = threading.Event()  # set by the handler: an interrupt arrived (even if some import swallowed it)
_unhandled = threading.Event()  # an interrupt not yet turned into `error: interrupted`


_importing = [True]  # this module is still importing: an interrupt is recorded, and main() reports it on entry


def _on_sigint(signum: int, frame: object) -> None:
    _interrupted.set()
    _unhandled.set()
    if not _importing:  # raised inside this module's own imports it would escape as a traceback, before main()
        raise KeyboardInterrupt


def _resurface(event: str, args: tuple[object, ...]) -> None:
    """Audit hook of the console script: an interrupt that some library swallowed (``except BaseException``)
    surfaces again at the next module import, where vitc's lazily imported steps spend their first seconds."""
    if event == "import" and _unhandled.is_set():
        _unhandled.clear()
        raise KeyboardInterrupt


_hooked: list[bool] = []  # the audit hook is added once per process: hooks can never be removed


def _add_resurface_hook() -> None:
    import sys

    if not _hooked:
        sys.addaudithook(_resurface)
        _hooked.append(True)


def _install_interrupt_handler() -> None:
    """Replace Python's default SIGINT handler (only that one: never a handler someone else installed)."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)


STARTUP_MARKS = "VITC_STARTUP_MARKS"


def _mark(moment: str) -> None:
    """Append ``moment`` to the file named by $VITC_STARTUP_MARKS, when set (see the module docstring)."""
    path = os.environ.get(STARTUP_MARKS)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(moment + "\n")


_install_interrupt_handler()  # before every other import of the command line
_mark("handler")

import importlib  # noqa: E402
from typing import Any  # noqa: E402

import click  # noqa: E402

from vitc.core.errors import VitcError  # noqa: E402
from vitc.core.version import __version__  # noqa: E402


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
            _mark("importing")
            try:
                module = importlib.import_module(module_name)
            except ImportError as e:  # not written yet, or an optional dependency is missing
                if _interrupted.is_set():  # an interrupt during the import, turned into an ImportError by some module
                    raise KeyboardInterrupt from None
                return _unavailable(cmd_name, str(e) or type(e).__name__)
            if _interrupted.is_set():  # an interrupt during the import that some module swallowed
                raise KeyboardInterrupt
            from vitc.cli.guard import guard_inputs

            command = guard_inputs(getattr(module, attr))
            _mark("imported")
            return command
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except VitcError as e:
            fail(ctx, f"{rank_prefix()}{e}", e.exit_code)
        except KeyboardInterrupt:
            _unhandled.clear()
            fail(ctx, f"{rank_prefix()}interrupted", 130)


def fail(ctx: click.Context, message: str, exit_code: int) -> None:
    """``error: MESSAGE`` on stderr (and, with --json, ``{"error", "exit_code"}`` on stdout), then exit."""
    from vitc.cli.common import JSON_EMITTED, JSON_META, json_error

    click.echo(f"error: {message}", err=True)
    if ctx.meta.get(JSON_META) and not ctx.meta.get(JSON_EMITTED):  # one JSON document on stdout, never two
        json_error(message, exit_code)
    ctx.exit(exit_code)


def rank_prefix() -> str:
    """``"rank N: "`` under torchrun with more than one process, so a failing rank is named."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"rank {os.environ.get('RANK', '?')}: "
    return ""


def _unavailable(name: str, reason: str) -> click.Command:
    """Polygraphy's MissingTool: the command is listed, and using it is a one-line error (exit 1)."""

    def fail(args: tuple[str, ...]) -> None:
        raise VitcError(f"vitc {name} is unavailable: {reason}")

    return click.Command(
        name, callback=fail, help=f"(unavailable: {reason})", add_help_option=False,
        params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


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
    "profile": "vitc.cli.profile:profile",
    "tune": "vitc.cli.tune:tune",
    "run": "vitc.cli.run:run",
    "demo": "vitc.cli.run:demo",
    "models": "vitc.cli.models:models",
    "import": "vitc.cli.importing:import_group",
}


@click.group(cls=LazyGroup, lazy_subcommands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vitc")
def cli() -> None:
    """Compress Vision Transformers (UVC, DynamicViT, or both) and deploy them.

    \b
    Pipeline:  compress → materialize → export → verify → quantize → build → eval / bench → report
    Tuned:     vitc tune MODEL --target-speedup S   (method, precision, backend chosen by measurement)
    Chained:   vitc run PIPELINE.yaml        End to end on built-in data: vitc demo
    Models:    vitc models [FILTER]          Official checkpoints: vitc import dynamicvit CKPT ...
    Every command takes --json; errors are one line (exit 2: bad input, 1: a failed step or check).
    """


def main() -> None:
    """The console script: as Click's standalone mode, except that a usage error Click raises while parsing
    (a bad option value, an unknown command) is one ``error:`` line, plus a JSON error document when
    --json was given."""
    import json
    import sys

    from vitc.core.provenance import set_command

    _install_interrupt_handler()
    _add_resurface_hook()
    if _unhandled.is_set():  # Ctrl-C while this module imported (Click, vitc's own modules)
        _unhandled.clear()
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    set_command(sys.argv[1:])
    try:
        code = cli.main(prog_name="vitc", standalone_mode=False)  # returns ctx.exit's code in this mode
    except KeyboardInterrupt:  # outside any command (Click turns one inside into Abort, handled below)
        _unhandled.clear()
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        # one `error:` line like every other failure (Click's own form is three: usage, hint, error)
        ctx = getattr(e, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if isinstance(e, click.UsageError) and ctx is not None else ""
        click.echo(f"error: {e.format_message()}{hint}", err=True)
        if "--json" in sys.argv[1:]:
            click.echo(json.dumps({"error": e.format_message(), "exit_code": e.exit_code}))
        sys.exit(e.exit_code)
    except click.exceptions.Abort as e:
        if _interrupted.is_set() or isinstance(e.__cause__, KeyboardInterrupt):  # Ctrl-C while Click parsed or imported
            _unhandled.clear()
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        click.echo("Aborted!", err=True)
        sys.exit(1)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


_importing.clear()  # from here on the handler raises KeyboardInterrupt at once

if __name__ == "__main__":  # pragma: no cover
    main()
