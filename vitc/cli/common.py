"""Options and output helpers shared by the subcommands (defined once, used everywhere)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import click

from vitc.errors import UsageError

F = Callable[..., Any]


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout (progress stays on stderr).")(f)


def model_options(f: F) -> F:
    """``--pretrained`` / ``--checkpoint PATH`` for commands that take a model name."""
    f = click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Load weights from a timm-style state dict (.pth/.pt/.safetensors; never unpickles code).")(f)
    f = click.option("--pretrained", is_flag=True, help="Start from timm hub weights (needs internet).")(f)
    return f


def data_option(required: bool = True, name: str = "--data") -> Callable[[F], F]:
    return click.option(name, "data", required=required, metavar="SPEC",
                        help="digits | synthetic[:N] | imagefolder:PATH (PATH/train, PATH/val class folders).")


def train_options(f: F | None = None, *, max_grad_norm: float | None = None) -> Any:
    """Optimisation options shared by ``train`` and the ``compress`` methods.

    ``@train_options`` or ``@train_options(max_grad_norm=1.0)`` for a method that clips by default;
    ``--max-grad-norm 0`` turns clipping off.
    """

    def no_clip_at_zero(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
        return None if value == 0 else value

    def add(g: F) -> F:
        g = click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
                         help="Random seed (initial weights, data order, augmentation, dropout).")(g)
        g = click.option("--deterministic", is_flag=True, help="Deterministic algorithms (bit-exact resume tests).")(g)
        g = click.option("--max-grad-norm", type=click.FloatRange(min=0), default=max_grad_norm, callback=no_clip_at_zero,
                         show_default=max_grad_norm is not None,
                         help="Clip the global L2 gradient norm to this value; 0 = no clipping"
                              + ("." if max_grad_norm is not None else " (the default)."))(g)
        g = click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")(g)
        g = click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.pt (written after every epoch).")(g)
        return g

    return add(f) if f is not None else add


def emit(result: dict[str, Any], as_json: bool, human: Callable[[dict[str, Any]], str] | None = None) -> None:
    """Print ``result`` as one strict JSON object (NaN/Inf as null), or as human-readable text."""
    if as_json:
        from vitc.fileio import json_safe

        click.echo(json.dumps(json_safe(result), indent=2, default=_jsonable, allow_nan=False))
    else:
        click.echo(human(result) if human else "\n".join(f"{k}: {v}" for k, v in result.items()))


def _jsonable(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def parse_float_list(text: str, option: str, low: float = 0.0, high: float = 1.0) -> list[float]:
    """``0.5,0.7`` → [0.5, 0.7], each in (low, high]; otherwise a one-line usage error."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{option}: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise UsageError(f"{option}: empty list")
    for v in values:
        if not low < v <= high:
            raise UsageError(f"{option}: {v} is outside ({low:g}, {high:g}]")
    return values


def parse_int_list(text: str, option: str, minimum: int = 1) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{option}: expected comma-separated integers, got {text!r}") from None
    if not values or any(v < minimum for v in values):
        raise UsageError(f"{option}: every value must be >= {minimum}, got {text!r}")
    return values


def check_fraction(value: float, option: str) -> float:
    """A fraction in (0, 1] (budgets, keep ratios)."""
    if not 0 < value <= 1:
        raise UsageError(f"{option} must be in (0, 1], got {value}")
    return value


def format_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """A plain-text table: ``columns`` are (key, header) pairs."""
    cells = [[h for _, h in columns]] + [[_fmt(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.4e}"
    return str(v)


def human_count(n: float, unit: str = "") -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3f} {suffix}{unit}"
    return f"{n:g} {unit}".strip()
