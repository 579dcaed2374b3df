"""Click options derived from a step's settings dataclass (:mod:`vitc.core.settings`), and back.

``@settings_options(ExportSettings)`` adds one option per field: its flag (``--field-name`` unless the
field names another), its help with the range, choices and default, ``--x/--no-x`` for a boolean that
defaults to true, comma-separated text for lists, and hidden old spellings. :func:`collect` turns the
parsed values back into a validated settings object with the same coercion and validation the
pipeline YAML gets, so a value is accepted or refused — with the same message — on both paths.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any

import click

from vitc.core.errors import UsageError
from vitc.core.settings import Spec, _strip_optional, cli_label, coerce, default_of, fields, flag_of, make

F = Callable[..., Any]
ALIAS = "_alias__"


def _help(spec: Spec, base: Any, default: Any) -> str:
    text = spec.help
    extra = []
    rng = spec.range_text()
    if rng:
        extra.append(f"x {rng}" if not rng.startswith(("(", "[")) else f"in {rng}")
    if spec.none_at_zero:
        extra.append("0 = off")
    if extra:
        text += f"  [{'; '.join(extra)}]"
    return text


def _show_default(default: Any) -> Any:
    if default is dataclasses.MISSING or default is None:
        return False
    if isinstance(default, (list, tuple)):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default)
    if isinstance(default, float):
        return f"{default:g}"
    return True


def option_for(name: str, spec: Spec, tp: Any, default: Any) -> F:
    """The ``click.option`` decorator of one settings field."""
    flag = flag_of(name, spec)
    base, _ = _strip_optional(tp)
    names = [flag] + ([spec.short] if spec.short else [])
    help_text = _help(spec, base, default)
    required = default is dataclasses.MISSING
    if base is bool:
        if default is True:
            return click.option(f"{flag}/--no-{flag[2:]}", name, default=True, show_default=True, help=help_text)
        return click.option(*names, name, is_flag=True, default=False, help=help_text)
    origin = typing.get_origin(base)
    kwargs: dict[str, Any] = {"default": None if default is dataclasses.MISSING else default,
                              "show_default": _show_default(default), "required": required, "help": help_text}
    if origin in (list, tuple):
        kwargs["type"] = str
        kwargs["metavar"] = spec.metavar or "V1,V2,..."
        if isinstance(default, (list, tuple)):
            kwargs["default"] = ",".join(str(v) for v in default)
    elif spec.choices is not None:
        kwargs["type"] = click.Choice([str(c) for c in spec.choices])
        if default is not None and default is not dataclasses.MISSING:
            kwargs["default"] = str(default)
    else:
        kwargs["type"] = str
        kwargs["metavar"] = spec.metavar or {int: "INTEGER", float: "FLOAT", str: "TEXT"}.get(base, "VALUE")
    return click.option(*names, name, **kwargs)


def settings_options(cls: type, *, exclude: tuple[str, ...] = (), only: tuple[str, ...] | None = None) -> Callable[[F], F]:
    """Decorator: one option per settings field of ``cls`` (in declaration order), plus hidden aliases."""

    def add(f: F) -> F:
        for field, spec, tp in reversed(fields(cls)):
            if not spec.cli or field.name in exclude or (only is not None and field.name not in only):
                continue
            for alias in spec.aliases:
                f = click.option(alias, ALIAS + field.name, hidden=True, default=None, type=str,
                                 help=f"Old spelling of {flag_of(field.name, spec)}.")(f)
            f = option_for(field.name, spec, tp, default_of(field))(f)
        return f

    return add


def collect(cls: type, params: dict[str, Any], ctx: click.Context | None = None, **fixed: Any) -> Any:
    """Pop ``cls``'s fields (and their alias values) from ``params`` and build the validated settings.

    Only values the user gave count as explicit (a preset fills the others); with no ``ctx`` every
    value counts.
    """
    flags = cli_label(cls)
    typed: dict[str, str] = {}  # fields given by an old spelling: errors name the flag as typed
    values: dict[str, Any] = dict(fixed)
    for field, spec, tp in fields(cls):
        if field.name in fixed:
            params.pop(field.name, None)
            continue
        alias = params.pop(ALIAS + field.name, None)
        if field.name not in params:
            continue
        value = params.pop(field.name)
        given = ctx is None or ctx.get_parameter_source(field.name) not in (
            click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP)
        if alias is not None:
            if given:
                raise UsageError(f"{flag_of(field.name, spec)} and its old spelling {spec.aliases[0]} were both given")
            value, given = alias, True
            typed[field.name] = spec.aliases[0]
        if not given:
            continue
        values[field.name] = coerce(tp, value, typed.get(field.name, flags(field.name)), from_text=True)
    return make(cls, values, lambda name: typed.get(name.split("[")[0], flags(name)))
