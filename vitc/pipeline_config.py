"""The ``vitc run`` YAML: a strict schema, validated before any work, errors that name the bad key.

Example (every key optional except ``model`` and ``data``)::

    model: deit_small_patch16_224      # timm name | vitc config | artifact path
    pretrained: true                   # or checkpoint: PATH
    data: imagefolder:/data/imagenet
    out: runs/deit_s
    seed: 0
    distributed: {nproc_per_node: 8}   # training stages run under torchrun
    baseline: {epochs: 0}              # 0 = use the model as given (no training)
    uvc: {budgets: [0.5], epochs: 30, finetune_epochs: 120}
    dynamicvit: {keep_ratio: 0.7, epochs: 30, materialize: [0.5, 0.7, 0.9]}
    export: {opset: 18, fp16: true, int8: true, calib_samples: 512, calib_method: entropy}
    verify: {batch_sizes: [1, 32]}
    eval: {batch_size: 128}
    bench: {backends: [torch, onnxruntime, tensorrt], device: cuda, batch_sizes: [1, 32, 64]}
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from vitc import train_defaults as TRAIN
from vitc.errors import UsageError


@dataclass
class BaselineCfg:
    """Train (or fine-tune) the starting model; ``epochs: 0`` uses it as given."""

    epochs: int = TRAIN.EPOCHS
    batch_size: int = TRAIN.BATCH_SIZE
    lr: float = TRAIN.LR
    warmup_epochs: float = TRAIN.WARMUP_EPOCHS
    weight_decay: float = TRAIN.WEIGHT_DECAY


@dataclass
class UvcCfg:
    budgets: list[float] = field(default_factory=lambda: [0.5])
    epochs: int | None = None
    finetune_epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DynamicVitCfg:
    keep_ratio: float = 0.7
    epochs: int | None = None
    materialize: list[float] = field(default_factory=lambda: [0.5, 0.7, 0.9])
    batch_size: int | None = None
    lr: float | None = None
    stages: list[int] | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExportCfg:
    opset: int = 18
    fp16: bool = True
    int8: bool = True
    calib_samples: int = 512
    calib_method: str = "minmax"


@dataclass
class VerifyCfg:
    data: str | None = None  # default: the run's data
    batch_sizes: list[int] = field(default_factory=lambda: [1, 32])
    batches: int = 2


@dataclass
class EvalCfg:
    batch_size: int = 64


@dataclass
class BenchCfg:
    backends: list[str] = field(default_factory=lambda: ["torch", "onnxruntime", "tensorrt"])
    device: str = "cpu"
    batch_sizes: list[int] = field(default_factory=lambda: [1, 32])
    warmup_ms: float = 200.0
    min_iters: int = 10
    min_seconds: float = 1.0


@dataclass
class DistributedCfg:
    nproc_per_node: int = 1


@dataclass
class PipelineConfig:
    model: str
    data: str
    pretrained: bool = False
    checkpoint: str | None = None
    out: str | None = None
    seed: int = 0
    device: str = "auto"
    distributed: DistributedCfg = field(default_factory=DistributedCfg)
    baseline: BaselineCfg = field(default_factory=BaselineCfg)
    uvc: UvcCfg | None = None
    dynamicvit: DynamicVitCfg | None = None
    export: ExportCfg = field(default_factory=ExportCfg)
    verify: VerifyCfg = field(default_factory=VerifyCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)
    bench: BenchCfg = field(default_factory=BenchCfg)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_BACKENDS = ("torch", "onnxruntime", "tensorrt")
_CALIB = ("minmax", "entropy", "percentile")


def load_config(path: str | os.PathLike[str]) -> PipelineConfig:
    """Parse and validate a pipeline YAML; any problem is a one-line ``UsageError`` naming the key."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such pipeline file: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UsageError(f"{path}: invalid YAML{where}") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: expected a mapping at the top level")
    return config_from_dict(raw, source=str(path))


def config_from_dict(raw: dict[str, Any], source: str = "pipeline") -> PipelineConfig:
    cfg = _build(PipelineConfig, raw, source, "")
    _check_values(cfg, source)
    return cfg


def _build(cls: type, raw: Any, source: str, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: '{prefix.rstrip('.') or 'top level'}' must be a mapping")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            close = _closest(str(key), names)
            hint = f" (did you mean '{prefix}{close}'?)" if close else ""
            raise UsageError(f"{source}: unknown key '{prefix}{key}'{hint}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
                raise UsageError(f"{source}: missing required key '{prefix}{f.name}'")
            continue
        kwargs[f.name] = _coerce(hints[f.name], raw[f.name], source, f"{prefix}{f.name}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, source: str, key: str) -> Any:
    import typing

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            if dataclasses.is_dataclass(inner[0]):
                return _build(inner[0], value if value is not None else {}, source, key + ".")
            return _coerce(inner[0], value, source, key)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, source, key + ".")
    if origin is list:
        if not isinstance(value, list):
            value = [value]
        return [_coerce(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UsageError(f"{source}: '{key}' must be a mapping")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise UsageError(f"{source}: '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{source}: '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{source}: '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise UsageError(f"{source}: '{key}' must be a string, got {value!r}")
        return str(value)
    return value


def _check_values(cfg: PipelineConfig, source: str) -> None:
    def bad(key: str, why: str) -> UsageError:
        return UsageError(f"{source}: '{key}' {why}")

    from vitc.data import parse_data

    parse_data(cfg.data)
    if cfg.baseline.epochs < 0:
        raise bad("baseline.epochs", "must be >= 0")
    if cfg.uvc is not None:
        if not cfg.uvc.budgets:
            raise bad("uvc.budgets", "must list at least one budget")
        for i, b in enumerate(cfg.uvc.budgets):
            if not 0 < b <= 1:
                raise bad(f"uvc.budgets[{i}]", f"must be in (0, 1], got {b}")
    if cfg.dynamicvit is not None:
        d = cfg.dynamicvit
        if not 0 < d.keep_ratio <= 1:
            raise bad("dynamicvit.keep_ratio", f"must be in (0, 1], got {d.keep_ratio}")
        for i, r in enumerate(d.materialize):
            if not 0 < r <= 1:
                raise bad(f"dynamicvit.materialize[{i}]", f"must be in (0, 1], got {r}")
    if cfg.export.opset not in range(17, 21):
        raise bad("export.opset", f"must be 17..20 (TensorRT 10 parses up to 20), got {cfg.export.opset}")
    if cfg.export.calib_method not in _CALIB:
        raise bad("export.calib_method", f"must be one of {', '.join(_CALIB)}, got {cfg.export.calib_method!r}")
    if cfg.export.calib_samples < 1:
        raise bad("export.calib_samples", "must be >= 1")
    for i, b in enumerate(cfg.bench.backends):
        if b not in _BACKENDS:
            raise bad(f"bench.backends[{i}]", f"must be one of {', '.join(_BACKENDS)}, got {b!r}")
    for key, values in (("bench.batch_sizes", cfg.bench.batch_sizes), ("verify.batch_sizes", cfg.verify.batch_sizes)):
        if not values or any(v < 1 for v in values):
            raise bad(key, "must be a non-empty list of positive integers")
    if cfg.bench.device not in ("cpu", "cuda", "auto"):
        raise bad("bench.device", f"must be cpu, cuda or auto, got {cfg.bench.device!r}")
    if cfg.distributed.nproc_per_node < 1:
        raise bad("distributed.nproc_per_node", "must be >= 1")
    if cfg.eval.batch_size < 1:
        raise bad("eval.batch_size", "must be >= 1")


def _closest(word: str, candidates: set[str]) -> str | None:
    import difflib

    match = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    return match[0] if match else None
