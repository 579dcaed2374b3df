"""One schema per step: a settings dataclass whose fields carry their default, range, choices and help.

A step's options are declared once, as a dataclass with :func:`setting` fields. Everything else derives
from it: the Click options of its command (:mod:`vitc.cli.options`), the keys the ``vitc run`` YAML
accepts for it (:func:`from_mapping`), and the validation both run (:func:`validate`), so the command
line and a pipeline accept and refuse exactly the same values, with the same message, before any work.

Types are read from the annotations: ``bool``, ``int``, ``float`` (finite unless ``finite=False``),
``str``, ``list[int]``, ``list[float]``, ``tuple[float, ...]``, and ``X | None``. Ranges are
``min``/``max`` with ``min_open``/``max_open``; ``choices`` lists the accepted values; ``parse``
normalises and checks a value (a data spec, a device) and raises :class:`UsageError` with the reason.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from vitc.core.errors import UsageError

KEY = "vitc.setting"
T = TypeVar("T")
Label = Callable[[str], str]


@dataclass(frozen=True)
class Spec:
    """What a settings field knows about itself besides its type and default."""

    help: str
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False
    choices: tuple[Any, ...] | None = None
    finite: bool = True
    none_at_zero: bool = False  # 0 means "off" and is stored as None (e.g. --max-grad-norm 0)
    parse: Callable[[Any], Any] | None = None
    flag: str | None = None  # CLI spelling, default --field-name
    aliases: tuple[str, ...] = ()  # old CLI spellings, accepted but hidden
    short: str | None = None  # e.g. -o
    cli: bool = True  # False: YAML/library only
    metavar: str | None = None

    def range_text(self) -> str:
        if self.choices is not None:
            return ""
        lo, hi = self.min, self.max
        if lo is not None and hi is not None:
            return f"{'(' if self.min_open else '['}{lo:g}, {hi:g}{')' if self.max_open else ']'}"
        if lo is not None:
            return f"{'>' if self.min_open else '>='} {lo:g}"
        if hi is not None:
            return f"{'<' if self.max_open else '<='} {hi:g}"
        return ""


def setting(default: Any = dataclasses.MISSING, *, help: str, **spec: Any) -> Any:
    """A settings field: ``lr: float = setting(1e-3, help="...", min=0, min_open=True)``."""
    metadata = {KEY: Spec(help=help, **spec)}
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def spec_of(f: dataclasses.Field) -> Spec:
    spec = f.metadata.get(KEY)
    if not isinstance(spec, Spec):
        raise TypeError(f"field {f.name} is not declared with vitc.core.settings.setting()")
    return spec


def fields(cls: type) -> list[tuple[dataclasses.Field, Spec, Any]]:
    """(field, spec, resolved type) for every field of a settings class."""
    hints = typing.get_type_hints(cls)
    return [(f, spec_of(f), hints[f.name]) for f in dataclasses.fields(cls)]


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def flag_of(name: str, spec: Spec | None = None) -> str:
    return (spec.flag if spec is not None and spec.flag else None) or "--" + name.replace("_", "-")


def cli_label(cls: type) -> Label:
    """``--flag`` of a field (list elements, ``name[i]``, are named by the flag too)."""
    specs = {f.name: s for f, s, _ in fields(cls)}
    return lambda name: flag_of(name.split("[")[0], specs.get(name.split("[")[0]))


def yaml_label(source: str, prefix: str = "") -> Label:
    return lambda name: f"{source}: '{prefix}{name}'"


class Settings:
    """Base of every settings dataclass: :meth:`validate` checks each field, then :meth:`rules` (between fields)."""

    def validate(self, label: Label | None = None) -> Any:
        return validate(self, label)

    def rules(self, label: Label) -> None:
        """Rules between fields; raise :class:`UsageError` naming them through ``label``."""

    @classmethod
    def with_options(cls: type[T], settings: T | None = None, **options: Any) -> T:
        """``settings`` (or the defaults) with ``options`` replacing fields, validated: the library's keyword form."""
        obj = dataclasses.replace(settings, **options) if settings is not None else cls(**options)  # type: ignore[type-var]
        return validate(obj)


# ------------------------------------------------------------------------------------------------
# coercion and validation
# ------------------------------------------------------------------------------------------------


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return inner[0], type(None) in args
    return tp, False


def _describe(tp: Any) -> str:
    base, _ = _strip_optional(tp)
    origin = typing.get_origin(base)
    if origin in (list, tuple):
        inner = typing.get_args(base)[0]
        return f"a list of {_describe(inner)}s"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(base, str(base))


def coerce(tp: Any, value: Any, label: str, *, from_text: bool = False) -> Any:
    """``value`` as type ``tp``; YAML values are taken as typed, CLI text (``from_text``) is parsed.

    A wrong type is a one-line :class:`UsageError` starting with ``label``.
    """
    base, optional = _strip_optional(tp)
    if value is None:
        if optional:
            return None
        raise UsageError(f"{label} must be {_describe(base)}, got null")
    origin = typing.get_origin(base)
    if origin in (list, tuple):
        inner = typing.get_args(base)[0]
        if from_text and isinstance(value, str):
            items: list[Any] = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            items = [value]
        out = [coerce(inner, v, f"{label}[{i}]" if not from_text else label, from_text=from_text)
               for i, v in enumerate(items)]
        return tuple(out) if origin is tuple else out
    if base is bool:
        if from_text and isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise UsageError(f"{label} must be true or false, got {value!r}")
        return value
    if base is int:
        if from_text and isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise UsageError(f"{label} must be an integer, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer() and not from_text:
                return int(value)
            raise UsageError(f"{label} must be an integer, got {value!r}")
        return value
    if base is float:
        if from_text and isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise UsageError(f"{label} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{label} must be a number, got {value!r}")
        return float(value)
    if base is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise UsageError(f"{label} must be a string, got {value!r}")
        return str(value)
    return value


def check_value(spec: Spec, value: Any, label: str) -> Any:
    """Range, finiteness, choices and ``parse`` of one value (each element of a list); returns it, normalised."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        checked = [check_value(spec, v, label) for v in value]
        return type(value)(checked)
    if spec.choices is not None and value not in spec.choices:
        raise UsageError(f"{label} must be one of {', '.join(map(str, spec.choices))}, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and spec.finite and not math.isfinite(value):
            raise UsageError(f"{label} must be a finite number, got {value}")
        lo, hi = spec.min, spec.max
        low_bad = lo is not None and (value <= lo if spec.min_open else value < lo)
        high_bad = hi is not None and (value >= hi if spec.max_open else value > hi)
        if low_bad or high_bad:
            raise UsageError(f"{label} must be {_range_words(spec)}, got {value}")
    if spec.parse is not None:
        try:
            parsed = spec.parse(value)
        except UsageError as e:
            raise UsageError(f"{label}: {e}") from None
        return value if parsed is None else parsed
    return value


def _range_words(spec: Spec) -> str:
    text = spec.range_text()
    return f"in {text}" if text.startswith(("(", "[")) else text


def validate(obj: Any, label: Label | None = None) -> Any:
    """Check every field of a settings object (types, ranges, choices, parse), then its own ``rules``.

    Returns ``obj`` (fields normalised in place), after its ``rules`` (checks between fields). Errors
    name the field through ``label`` (the CLI flag by default).
    """
    label = label or cli_label(type(obj))
    for f, spec, tp in fields(type(obj)):
        value = getattr(obj, f.name)
        if spec.none_at_zero and value == 0 and not isinstance(value, bool):
            value = None
        value = coerce(tp, value, label(f.name))
        if isinstance(value, (list, tuple)):
            value = type(value)(check_value(spec, v, label(f"{f.name}[{i}]")) for i, v in enumerate(value))
        else:
            value = check_value(spec, value, label(f.name))
        object.__setattr__(obj, f.name, value)
    rules = getattr(obj, "rules", None)
    if callable(rules):
        rules(label)
    return obj


def make(cls: type[T], values: dict[str, Any], label: Label) -> T:
    """Build and validate ``cls`` from explicitly given ``values`` (already typed).

    A class with ``PRESETS`` (a dict of name → field values) and a ``preset`` field takes the chosen
    preset's values for every field not in ``values``; explicit values always win.
    """
    merged: dict[str, Any] = {}
    presets = getattr(cls, "PRESETS", None)
    if presets:
        preset_field = next((f for f in dataclasses.fields(cls) if f.name == "preset"), None)  # type: ignore[arg-type]
        name = values.get("preset", default_of(preset_field) if preset_field is not None else None)
        if name in presets:
            names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
            merged.update({k: v for k, v in presets[name].items() if k in names})
    merged.update(values)
    missing = [f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
               if f.name not in merged and default_of(f) is dataclasses.MISSING]
    if missing:
        raise UsageError(f"{label(missing[0])} is required")
    return validate(cls(**merged), label)


def from_mapping(cls: type[T], raw: Any, label: Label, *, where: str = "", extra: Iterable[str] = (),
                 **fixed: Any) -> T:
    """Build and validate ``cls`` from a YAML mapping; an unknown key names the closest valid one.

    ``fixed`` values are set by the caller (not by the mapping); ``extra`` names keys the caller
    handles itself (accepted here, ignored).
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UsageError(f"{_source_of(label)}'{where.rstrip('.') or 'top level'}' must be a mapping")
    check_keys(cls, raw, label, where=where, extra=extra, excluded=fixed)
    values: dict[str, Any] = dict(fixed)
    for f, _, tp in fields(cls):
        if f.name in raw and f.name not in fixed:
            values[f.name] = coerce(tp, raw[f.name], label(f.name))
        elif f.name not in values and default_of(f) is dataclasses.MISSING:
            raise UsageError(f"{_source_of(label)}missing required key '{where}{f.name}'")
    return make(cls, values, label)


def check_keys(cls: type, raw: dict[str, Any], label: Label, *, where: str = "", extra: Iterable[str] = (),
               excluded: Iterable[str] = ()) -> None:
    """Refuse a key that is not a field of ``cls`` (nor in ``extra``), naming the closest valid one."""
    names = {f.name for f in dataclasses.fields(cls)}
    allowed = (names - set(excluded)) | set(extra)
    for key in raw:
        if key not in allowed:
            close = closest(str(key), allowed)
            hint = f" (did you mean '{where}{close}'?)" if close else ""
            raise UsageError(f"{_source_of(label)}unknown key '{where}{key}'{hint}")


def _source_of(label: Label) -> str:
    """The ``source: `` prefix a YAML label puts before the key (empty for CLI labels)."""
    text = label("\0")
    return text.split("'", 1)[0] if "'" in text else ""


def closest(word: str, candidates: Iterable[str]) -> str | None:
    match = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    return match[0] if match else None


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain JSON-ready values (tuples as lists)."""
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def derive(cls: type[T], name: str, doc: str | None = None, **changes: Any) -> type[T]:
    """A subclass of settings ``cls`` with other defaults (or help/ranges): ``changes[field]`` is a new
    default, or a dict with ``default`` and any :class:`Spec` attributes."""
    hints = typing.get_type_hints(cls)
    new_fields = []
    unknown = set(changes) - {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if unknown:
        raise TypeError(f"{cls.__name__} has no fields {sorted(unknown)}")
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in changes:
            continue
        change = changes[f.name]
        spec, default = spec_of(f), default_of(f)
        if isinstance(change, dict):
            change = dict(change)
            default = change.pop("default", default)
            spec = dataclasses.replace(spec, **change)
        else:
            default = change
        new_fields.append((f.name, hints[f.name], _field(default, spec)))
    derived = dataclasses.make_dataclass(name, new_fields, bases=(cls,), kw_only=True)
    derived.__doc__ = doc or cls.__doc__
    derived.__module__ = cls.__module__
    return derived


def like(cls: type, name: str, **changes: Any) -> Any:
    """A field declared like ``cls.name`` (same default and spec, with ``changes``), for composite schemas."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    spec, default = spec_of(f), default_of(f)
    default = changes.pop("default", default)
    return _field(default, dataclasses.replace(spec, **changes) if changes else spec)


def _field(default: Any, spec: Spec) -> Any:
    metadata = {KEY: spec}
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def to_args(obj: Any) -> list[str]:
    """The command-line arguments that give a settings object's values (for torchrun child processes)."""
    args: list[str] = []
    for f, spec, tp in fields(type(obj)):
        if not spec.cli:
            continue
        value, flag = getattr(obj, f.name), flag_of(f.name, spec)
        base, _ = _strip_optional(tp)
        if value is None:
            continue
        if base is bool:
            if value:
                args.append(flag)
            elif default_of(f) is True:
                args.append(f"--no-{flag[2:]}")
        elif isinstance(value, (list, tuple)):
            args += [flag, ",".join(repr(v) if isinstance(v, float) else str(v) for v in value)]
        else:
            args += [flag, repr(value) if isinstance(value, float) else str(value)]
    return args
