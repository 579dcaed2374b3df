"""A method's section of a ``vitc run`` YAML: its runs (one per swept value, or per item of ``runs``), the keep ratios to
materialize, and the parent runs a method that builds on another's output needs."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from vitc.core.errors import UsageError
from vitc.core.settings import check_keys, check_value, coerce, yaml_label
from vitc.core.settings import fields as settings_fields
from vitc.methods import METHODS, ratio_tag
from vitc.methods.base import Method
from vitc.pipeline.sections import section_settings


@dataclass
class Run:
    """One run of a method section: its validated settings, the suffix ``name`` of its folder, its own keep ratios to
    materialize, whether its teacher is the run's dense model, and the keys its ``runs[i]`` item set."""

    settings: Any
    name: str | None = None
    materialize: list[float] | None = None
    dense_teacher: bool = False
    keys: set[str] = field(default_factory=set)


@dataclass
class MethodStage:
    """One method section: its runs (one per swept value, or per item of ``runs``) and the ratios to materialize."""

    method: Method
    runs: list[Run]
    materialize: list[float] | None = None
    parent_value: Any = None  # methods that build on another's output: the parent run's value (e.g. its budget)

    def key(self, i: int, name: str) -> str:
        """The YAML key that set field ``name`` of run ``i`` (``dynamicvit.runs[1].keep_ratio``, ``dynamicvit.stages``)."""
        own = i < len(self.runs) and name in self.runs[i].keys
        return f"{self.method.kind}.runs[{i}].{name}" if own else f"{self.method.kind}.{name}"

    @property
    def values(self) -> list[Any]:
        return [self.method.variant_value(r.settings) for r in self.runs]

    def ratios_of(self, i: int) -> list[float] | None:
        own = self.runs[i].materialize
        return own if own is not None else self.materialize


def method_stage(method: Method, raw: Any, source: str, inherited: dict[str, Any]) -> MethodStage:
    kind = method.kind
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: '{kind}' must be a mapping")
    raw = dict(raw)
    options = raw.pop("options", None)  # older spelling: the method's options in a nested mapping
    if options is not None:
        if not isinstance(options, dict):
            raise UsageError(f"{source}: '{kind}.options' must be a mapping")
        both = sorted(set(options) & set(raw))
        if both:
            raise UsageError(f"{source}: '{kind}.{both[0]}' is given both in '{kind}' and in '{kind}.options'")
        raw.update(options)
    extra: list[str] = []
    materialize: list[float] | None = None
    parent_value: Any = None
    if method.parent is not None:
        key = method.parent_key
        assert key is not None
        extra.append(key)
        if key not in raw:
            raise UsageError(f"{source}: '{kind}.{key}' is required (the {key} of the {METHODS[method.parent].title} run "
                             "it builds on)")
        parent_tp = next(t for f, _, t in settings_fields(METHODS[method.parent].settings) if f.name == key)
        parent_value = coerce(parent_tp, raw[key], yaml_label(source, f"{kind}.")(key))
        parent_spec = next(sp for f, sp, _ in settings_fields(METHODS[method.parent].settings) if f.name == key)
        parent_value = check_value(parent_spec, parent_value, yaml_label(source, f"{kind}.")(key))
    if method.token_selection:
        extra.append("materialize")
        materialize = _ratios(raw.get("materialize"), source, f"{kind}.materialize")
    sweep = method.sweep
    if sweep is None or (f"{sweep}s" not in raw and "runs" in raw):  # a swept method may list its runs instead
        return _listed_runs(method, raw, source, inherited, extra, materialize, parent_value)
    sweep_key = f"{sweep}s"
    extra.append(sweep_key)
    check_keys(method.settings, raw, yaml_label(source, f"{kind}."), where=f"{kind}.", extra=extra, excluded=(sweep,))
    values = raw.get(sweep_key)
    if values is None:
        raise UsageError(f"{source}: '{kind}.{sweep_key}' is required (the values of --{sweep.replace('_', '-')} to run)")
    if not isinstance(values, list):
        values = [values]
    if not values:
        raise UsageError(f"{source}: '{kind}.{sweep_key}' must list at least one value")
    tp = next(t for f, _, t in settings_fields(method.settings) if f.name == sweep)
    base = yaml_label(source, f"{kind}.")
    runs: list[Run] = []
    for i, value in enumerate(values):
        def label(name: str, i: int = i) -> str:
            return base(f"{sweep_key}[{i}]") if name == sweep else base(name)

        typed = coerce(tp, value, label(sweep))
        runs.append(Run(section_settings(method.settings, raw, source, kind, inherited, fixed={sweep: typed}, extra=tuple(extra),
                                  label=label)))
    tags = [ratio_tag(v) if isinstance(v, float) else str(v) for v in (method.variant_value(r.settings) for r in runs)]
    dup = next((t for t in tags if tags.count(t) > 1), None)
    if dup is not None:
        raise UsageError(f"{source}: '{kind}.{sweep_key}' lists {dup} twice")
    return MethodStage(method, runs, materialize)


DENSE_TEACHER = "dense"  # `teacher: dense` in a pipeline: the run's own dense baseline


def _listed_runs(method: Method, raw: dict[str, Any], source: str, inherited: dict[str, Any], extra: list[str],
                 materialize: list[float] | None, parent_value: Any) -> MethodStage:
    """A method without a swept value: one run from its section, or one per item of ``runs`` (each item
    overrides the section's settings; ``name`` suffixes its folder, ``materialize`` its own ratios)."""
    kind = method.kind
    base = yaml_label(source, f"{kind}.")
    raw = dict(raw)
    items = raw.pop("runs", None)
    if items is None:
        items = [{}]
    elif not isinstance(items, list) or not items:
        raise UsageError(f"{base('runs')} must list at least one run (a mapping of settings each)")
    own = ("name", "materialize") if method.token_selection else ("name",)
    stage = MethodStage(method, [], materialize, parent_value)
    has_teacher = any(f.name == "teacher" for f in dataclasses.fields(method.settings))
    for i, item in enumerate(items):
        where = f"{kind}.runs[{i}]."
        if not isinstance(item, dict):
            raise UsageError(f"{source}: '{kind}.runs[{i}]' must be a mapping, got {item!r}")
        check_keys(method.settings, item, yaml_label(source, where), where=where, extra=own,
                   excluded=[k for k in extra if k != "materialize"])
        item = dict(item)
        keys = set(item)
        name = item.pop("name", None)
        if name is not None and (not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", name)):
            raise UsageError(f"{source}: '{where}name' must be letters, digits, '.', '_' or '-', got {name!r}")
        ratios = _ratios(item.pop("materialize", None), source, f"{where}materialize")
        merged = {**raw, **item}
        dense_teacher = has_teacher and merged.get("teacher") == DENSE_TEACHER
        if dense_teacher:
            merged.pop("teacher")

        def label(key: str, item: dict[str, Any] = item, where: str = where) -> str:
            return yaml_label(source, where)(key) if key.split("[", maxsplit=1)[0] in item else base(key)

        stage.runs.append(Run(section_settings(method.settings, merged, source, kind, inherited, extra=tuple(extra), label=label),
                              name=name, materialize=ratios, dense_teacher=dense_teacher, keys=keys))
    return stage


def _ratios(value: Any, source: str, key: str) -> list[float] | None:
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise UsageError(f"{source}: '{key}[{i}]' must be a number, got {v!r}")
        if not 0 < v <= 1:
            raise UsageError(f"{source}: '{key}[{i}]' must be in (0, 1], got {v}")
        out.append(float(v))
    if not out:
        raise UsageError(f"{source}: '{key}' must list at least one keep ratio")
    tags = [ratio_tag(v) for v in out]
    dup = next((t for t in tags if tags.count(t) > 1), None)
    if dup is not None:
        raise UsageError(f"{source}: '{key}' lists {dup} twice")
    return out
