"""Small validation helpers for values that are not settings fields (lists typed on a command line)."""

from __future__ import annotations

from vitc.core.errors import UsageError


def check_fraction(value: float, option: str) -> float:
    """A fraction in (0, 1] (budgets, keep ratios)."""
    if not 0 < value <= 1:
        raise UsageError(f"{option} must be in (0, 1], got {value}")
    return value


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


def check_data_spec(text: str) -> str:
    """A data spec (digits, synthetic[:N], imagefolder:PATH, ...), parsed now so a bad one fails before any work."""
    from vitc.core.data import parse_data

    return str(parse_data(str(text)))


def check_image_source(text: str) -> str:
    """``random`` (seeded random images) or a data spec."""
    return "random" if str(text).strip() == "random" else check_data_spec(text)


def check_model_ref(text: str) -> str:
    """An existing artifact file, a vitc config or a timm model name (checked now, so a typo fails before any work)."""
    from vitc.core.models import SMALL_CONFIGS, is_artifact_path, suggest

    name = str(text).strip()
    if is_artifact_path(name):
        from pathlib import Path

        if not Path(name).is_file():
            raise UsageError(f"no such file: {name}")
        return name
    if name in SMALL_CONFIGS:
        return name
    import timm

    if not timm.is_model(name):
        close = suggest(name)
        raise UsageError(f"unknown model {name!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    return name


def check_latency_file(value: object) -> str:
    """A settings ``parse``: the path of an existing ``vitc profile`` latency profile (read in full when used)."""
    from pathlib import Path

    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise UsageError(f"no such latency profile: {value} (write one with `vitc profile MODEL --backend ... -o {path.name}`)")
    return str(path)
