"""Targets a pipeline's results must meet, checked against its report (``report.json``) — a checker, not a runner.

A target is one line: a row (variant, optionally ``[format]``; default ``pytorch``), a metric, a comparison,
and a number or another row's same metric with an optional offset::

    dense top1 >= 88
    uvc-0.50 top1 >= dense - 1.5
    uvc-0.50[onnx int8] top1 >= dense[onnx int8] - 2
    uvc-0.50[onnx fp32] speedup@32 >= 1.3

Metrics: ``top1``, ``top5`` (%), ``macs_ratio`` (compressed/dense MACs), ``params``, ``speedup@B``
(dense/compressed time at batch B), ``throughput@B`` (images/s at batch B).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitc.core.errors import UsageError

DEFAULT_FORMAT = "pytorch"
_ROW = r"(?P<{p}variant>[^\s\[\]]+)(?:\[(?P<{p}format>[^\]]+)\])?"
_METRIC = r"top1|top5|macs_ratio|params|speedup@\d+|throughput@\d+"
_TARGET = re.compile(rf"^\s*{_ROW.format(p='')}\s+(?P<metric>{_METRIC})\s*(?P<op>>=|<=|>|<)\s*(?P<rhs>.+?)\s*$")
_NUMBER = re.compile(r"^[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?$")
_RHS_ROW = re.compile(rf"^{_ROW.format(p='r')}(?:\s+(?P<sign>[+-])\s*(?P<offset>\d+(?:\.\d*)?))?$")
_OPS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


@dataclass(frozen=True)
class Target:
    text: str
    variant: str
    format: str
    metric: str
    op: str
    value: float | None = None  # a number, or ...
    ref_variant: str | None = None  # ... another row's metric
    ref_format: str | None = None
    offset: float = 0.0

    def rows(self) -> list[tuple[str, str]]:
        """The (variant, format) rows the target reads."""
        own = [(self.variant, self.format)]
        return own + ([(self.ref_variant, self.ref_format or DEFAULT_FORMAT)] if self.ref_variant else [])


def parse_target(text: Any, label: str) -> Target:
    """One target line; a malformed one is a one-line ``UsageError`` naming ``label``."""
    if not isinstance(text, str):
        raise UsageError(f"{label} must be a string such as 'dense top1 >= 88', got {text!r}")
    m = _TARGET.match(text)
    if not m:
        raise UsageError(f"{label}: cannot read {text!r}; write ROW METRIC OP VALUE, e.g. 'dense top1 >= 88' or "
                         "'uvc-0.50 top1 >= dense - 1.5' (metrics: top1, top5, macs_ratio, params, speedup@B, throughput@B)")
    variant, fmt, metric, op, rhs = m["variant"], m["format"] or DEFAULT_FORMAT, m["metric"], m["op"], m["rhs"]
    if _NUMBER.match(rhs):
        return Target(text.strip(), variant, fmt.strip(), metric, op, value=float(rhs))
    r = _RHS_ROW.match(rhs)
    if not r:
        raise UsageError(f"{label}: cannot read the right side {rhs!r} of {text!r}; give a number or a row with an "
                         "optional offset ('dense - 1.5')")
    offset = float(r["offset"]) * (-1 if r["sign"] == "-" else 1) if r["offset"] else 0.0
    return Target(text.strip(), variant, fmt.strip(), metric, op, ref_variant=r["rvariant"],
                  ref_format=(r["rformat"] or DEFAULT_FORMAT).strip(), offset=offset)


def parse_targets(raw: Any, label: str) -> list[Target]:
    """The ``targets`` list of a pipeline (``label``: how to name the key, e.g. ``"p.yaml: 'targets'"``)."""
    if raw is None:
        return []
    items = raw if isinstance(raw, list) else [raw]
    key = label.rstrip("'")
    return [parse_target(t, f"{key}[{i}]'") for i, t in enumerate(items)]


def check_planned(targets: Iterable[Target], rows: Iterable[tuple[str, str]], label: str) -> None:
    """Every row a target names is one the run makes (before any stage runs)."""
    have = set(rows)
    variants = sorted({v for v, _ in have})
    key = label.rstrip("'")
    for i, t in enumerate(targets):
        for variant, fmt in t.rows():
            if (variant, fmt) in have:
                continue
            if variant not in variants:
                raise UsageError(f"{key}[{i}]': no variant {variant!r} in this run (variants: {', '.join(variants)})")
            formats = sorted(f for v, f in have if v == variant)
            raise UsageError(f"{key}[{i}]': {variant} has no {fmt!r} row (formats: {', '.join(formats)})")


def _metric(row: dict[str, Any], metric: str) -> float | None:
    if "@" in metric:
        name, batch = metric.split("@")
        value = (row.get(name) or {}).get(batch)
    else:
        value = row.get(metric)
    return None if value is None else float(value)


def check_targets(rows: list[dict[str, Any]], targets: Iterable[Target]) -> list[dict[str, Any]]:
    """Each target with its measured value, its bound and whether it is met (a missing value is not met)."""
    index = {(r.get("variant"), r.get("format")): r for r in rows}
    out = []
    for t in targets:
        row = index.get((t.variant, t.format))
        value = _metric(row, t.metric) if row is not None else None
        bound: float | None = t.value
        if t.ref_variant is not None:
            ref = index.get((t.ref_variant, t.ref_format))
            ref_value = _metric(ref, t.metric) if ref is not None else None
            bound = None if ref_value is None else ref_value + t.offset
        met = value is not None and bound is not None and _OPS[t.op](value, bound)
        out.append({"target": t.text, "value": value, "bound": bound, "met": bool(met)})
    return out


def describe(result: dict[str, Any]) -> str:
    """``met: dense top1 >= 88 (89.12 vs 88)`` — one line per checked target."""
    if result["value"] is None or result["bound"] is None:
        return f"NOT met: {result['target']} (no such value in the report)"
    state = "met" if result["met"] else "NOT met"
    return f"{state}: {result['target']} ({result['value']:.4g} vs {result['bound']:.4g})"


def check_report(report: str | Path, targets: list[str] | None = None, pipeline: str | Path | None = None) -> list[dict[str, Any]]:
    """Check ``targets`` (lines), or the ``targets`` of the ``pipeline`` YAML, against a run's ``report.json``."""
    import json

    import yaml

    path = Path(report)
    try:
        rows = json.loads(path.read_text())["rows"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{path}: not a vitc run report ({type(e).__name__}: {e})") from None
    lines: Any = list(targets or [])
    label = "--target"
    if pipeline is not None:
        try:
            raw = yaml.safe_load(Path(pipeline).read_text())
        except (OSError, yaml.YAMLError) as e:
            raise UsageError(f"{pipeline}: cannot read it ({type(e).__name__})") from None
        listed = raw.get("targets") if isinstance(raw, dict) else None
        lines += listed if isinstance(listed, list) else [listed] if listed else []
        label = f"{pipeline}: 'targets'"
    if not lines:
        raise UsageError("no targets to check: give --target LINE or a pipeline YAML with a 'targets' list")
    return check_targets(rows, parse_targets(lines, label))
