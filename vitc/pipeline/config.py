"""The ``vitc run`` YAML: every section is a step's own settings schema, validated before any work.

Each section reads the same settings dataclass as the command that runs the step (``baseline`` =
``vitc train``'s :class:`~vitc.train.settings.TrainSettings`; a method's section = its
``vitc compress KIND`` settings; ``export``/``verify``/``eval``/``bench`` reuse their commands' fields),
so the pipeline accepts and refuses exactly what the commands do, with the same message naming the
key — before the baseline trains. Example (every key optional except ``model`` and ``data``)::

    model: deit_small_patch16_224      # timm name | vitc config | artifact path
    pretrained: true                   # or checkpoint: PATH
    data: imagefolder:/data/imagenet
    out: runs/deit_s                   # ~ is expanded
    seed: 0
    device: cuda
    distributed: {nproc_per_node: 8}   # training stages run under torchrun
    baseline: {epochs: 0}              # 0 = use the model as given (no training)
    uvc: {budgets: [0.5], epochs: 30, finetune_epochs: 120}        # any `vitc compress uvc` option
    dynamicvit: {keep_ratio: 0.7, epochs: 30, materialize: [0.5, 0.7, 0.9]}
    export: {opset: 18, fp16: true, int8: true, calib_samples: 512, calib_method: entropy}
    verify: {batch_sizes: [1, 32]}
    eval: {batch_size: 128}
    bench: {backends: [torch, onnxruntime, tensorrt], device: cuda, batch_sizes: [1, 32, 64]}
    subset: {train: 6400, val: 2000}   # fashion-mnist data: only the first N images of each split
    targets: ["dense top1 >= 88", "uvc-0.50 top1 >= dense - 1.5"]   # checked against report.json

A method section takes every option of ``vitc compress KIND`` (flag names with ``_``). A method that
sweeps a value lists it (``uvc: {budgets: [0.3, 0.5]}``); a token-selection method lists the keep ratios
to materialize (``materialize``). A method without a swept value runs several times when its section lists
``runs``: each item overrides the section's settings (``{keep_ratio: 0.5, name: teacher-dense}``; ``name``
tells apart runs that would share a folder; ``teacher: dense`` is the run's own dense baseline).
Duplicate keys are refused (YAML would silently keep the last).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitc.backends import BACKENDS, DEFAULT_BENCH_BACKENDS
from vitc.checks.settings import BenchSettings, EvalSettings, VerifySettings
from vitc.core.device import check_device_name
from vitc.core.errors import UsageError
from vitc.core.settings import Label, Settings, check_keys, check_value, closest, coerce, from_mapping, like, setting, yaml_label
from vitc.core.settings import fields as settings_fields
from vitc.core.validation import check_data_spec
from vitc.methods import METHODS, ratio_tag
from vitc.methods.base import Method
from vitc.onnx.settings import ExportSettings, QuantizeSettings
from vitc.train.settings import TrainSettings

INHERITED = ("seed", "device")  # top-level keys every training section inherits unless it sets its own


@dataclass(kw_only=True)
class DistributedStage(Settings):
    nproc_per_node: int = setting(1, min=1, help="Processes per node for the training stages (torchrun).")


@dataclass(kw_only=True)
class ExportStage(Settings):
    opset: int = like(ExportSettings, "opset")
    fp16: bool = setting(True, help="Also export an FP16 ONNX.")
    int8: bool = setting(True, help="Also write an INT8 Q/DQ ONNX, calibrated on the run's data.")
    calib_samples: int = like(QuantizeSettings, "num_samples")
    calib_method: str = like(QuantizeSettings, "method")


@dataclass(kw_only=True)
class VerifyStage(Settings):
    data: str | None = setting(None, parse=check_data_spec, help="Real images to verify on (default: the run's data).")
    batch_sizes: list[int] = setting([1, 32], min=1, help="Batch sizes to verify at (random and real images each).")
    batches: int = like(VerifySettings, "batches", default=2)

    def rules(self, label: Label) -> None:
        if not self.batch_sizes:
            raise UsageError(f"{label('batch_sizes')} must list at least one batch size")


@dataclass(kw_only=True)
class EvalStage(Settings):
    batch_size: int = like(EvalSettings, "batch_size")


@dataclass(kw_only=True)
class BenchStage(Settings):
    backends: list[str] = setting(list(DEFAULT_BENCH_BACKENDS), choices=tuple(BACKENDS),
                                  help="Backends to evaluate and bench (tensorrt only where TensorRT and a GPU are present; "
                                       "openvino runs the ONNX files on the CPU when listed).")
    device: str = like(BenchSettings, "device", default="cpu")
    batch_sizes: list[int] = like(BenchSettings, "batch_sizes", default=[1, 32])
    warmup_ms: float = like(BenchSettings, "warmup_ms", default=200.0)
    min_iters: int = like(BenchSettings, "min_iters", default=10)
    min_seconds: float = like(BenchSettings, "min_seconds", default=1.0)
    paired: bool = setting(True, help="Bench each compressed format alternately with the dense one (paired speedup); "
                                      "false: each on its own (images/s only; speedups from separate runs).")

    def rules(self, label: Label) -> None:
        if not self.batch_sizes:
            raise UsageError(f"{label('batch_sizes')} must list at least one batch size")
        twice = next((b for i, b in enumerate(self.backends) if b in self.backends[:i]), None)
        if twice is not None:
            raise UsageError(f"{label('backends')} lists {twice} twice")

    def settings(self, backend: str, precision: str | None) -> BenchSettings:
        return BenchSettings(batch_sizes=list(self.batch_sizes), backend=backend, device=self.device, precision=precision,
                             warmup_ms=self.warmup_ms, min_iters=self.min_iters, min_seconds=self.min_seconds)


@dataclass(kw_only=True)
class SubsetStage(Settings):
    train: int | None = setting(None, min=1, help="Use only the first N training images (fashion-mnist data).")
    val: int | None = setting(None, min=1, help="Use only the first N validation (test) images (fashion-mnist data).")

    @property
    def active(self) -> bool:
        return self.train is not None or self.val is not None


@dataclass
class MethodStage:
    """One method section: a validated settings object per run (one per swept value) and the ratios to materialize."""

    method: Method
    runs: list[Any]
    materialize: list[float] | None = None
    parent_value: Any = None  # methods that build on another's output: the parent run's value (e.g. its budget)
    names: list[str | None] = field(default_factory=list)  # per run: a suffix for its folder and variants (`runs[i].name`)
    run_materialize: list[list[float] | None] = field(default_factory=list)  # per run: its own `materialize`
    dense_teacher: list[bool] = field(default_factory=list)  # per run: `teacher: dense` (the run's baseline)
    run_keys: list[set[str]] = field(default_factory=list)  # per run: the keys its `runs[i]` item sets

    def key(self, i: int, name: str) -> str:
        """The YAML key that set field ``name`` of run ``i`` (``dynamicvit.runs[1].keep_ratio``, ``dynamicvit.stages``)."""
        own = i < len(self.run_keys) and name in self.run_keys[i]
        return f"{self.method.kind}.runs[{i}].{name}" if own else f"{self.method.kind}.{name}"

    @property
    def values(self) -> list[Any]:
        return [self.method.variant_value(s) for s in self.runs]

    def name_of(self, i: int) -> str | None:
        return self.names[i] if i < len(self.names) else None

    def ratios_of(self, i: int) -> list[float] | None:
        own = self.run_materialize[i] if i < len(self.run_materialize) else None
        return own if own is not None else self.materialize

    def teacher_is_dense(self, i: int) -> bool:
        return self.dense_teacher[i] if i < len(self.dense_teacher) else False


@dataclass
class PipelineConfig:
    model: str
    data: str
    pretrained: bool = False
    checkpoint: str | None = None
    out: str | None = None
    seed: int = 0
    device: str = "auto"
    distributed: DistributedStage = field(default_factory=DistributedStage)
    baseline: TrainSettings = field(default_factory=TrainSettings)
    methods: dict[str, MethodStage] = field(default_factory=dict)
    export: ExportStage = field(default_factory=ExportStage)
    verify: VerifyStage = field(default_factory=VerifyStage)
    eval: EvalStage = field(default_factory=EvalStage)
    bench: BenchStage = field(default_factory=BenchStage)
    subset: SubsetStage = field(default_factory=SubsetStage)
    targets: list[Any] = field(default_factory=list)  # vitc.pipeline.targets.Target
    source: str = "pipeline"
    notes: list[str] = field(default_factory=list)  # what the run adds on its own (said in --dry-run and the log)

    def to_dict(self) -> dict[str, Any]:
        from vitc.core.settings import to_dict

        out: dict[str, Any] = {k: getattr(self, k) for k in ("model", "data", "pretrained", "checkpoint", "out", "seed", "device")}
        for key in ("distributed", "baseline", "export", "verify", "eval", "bench", "subset"):
            out[key] = to_dict(getattr(self, key))
        for kind, stage in self.methods.items():
            out[kind] = {"runs": [to_dict(s) for s in stage.runs], "materialize": stage.materialize,
                         "names": stage.names, "dense_teacher": stage.dense_teacher}
        out["targets"] = [t.text for t in self.targets]
        return out


_TOP = ("model", "data", "pretrained", "checkpoint", "out", "seed", "device", "distributed", "baseline", "export",
        "verify", "eval", "bench", "subset", "targets")
_SECTIONS: dict[str, type] = {"distributed": DistributedStage, "export": ExportStage, "verify": VerifyStage,
                              "eval": EvalStage, "bench": BenchStage, "subset": SubsetStage}


def load_config(path: str | os.PathLike[str], overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Parse and validate a pipeline YAML; any problem is a one-line ``UsageError`` naming the key.

    ``overrides``: ``KEY=VALUE`` items (``--set``) replacing keys of the file before validation; a dotted
    KEY reaches into a section (``baseline.epochs=20``), VALUE is read as YAML (``uvc.budgets=[0.3,0.5]``).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such pipeline file: {path}")
    try:
        raw = yaml.load(path.read_text(), Loader=_strict_loader())
    except _DuplicateKey as e:
        raise UsageError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UsageError(f"{path}: invalid YAML{where}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a text (YAML) file") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: expected a mapping at the top level")
    for item in overrides:
        apply_override(raw, item)
    return config_from_dict(raw, source=str(path))


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set ``KEY=VALUE`` (dotted KEY, YAML VALUE) in ``raw``; a malformed item is one line naming it."""
    import yaml

    key, sep, text = item.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. baseline.epochs=20 or data=fashion-mnist:/data/fm")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        raise UsageError(f"--set {item!r}: the value is not valid YAML") from None
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UsageError(f"--set {item!r}: '{'.'.join(parts[:i + 1])}' is not a section")
        node = child
    node[parts[-1]] = value


def config_from_dict(raw: dict[str, Any], source: str = "pipeline") -> PipelineConfig:
    """Validate every section of a pipeline mapping (no work is done) and return the config."""
    label = yaml_label(source)
    allowed = set(_TOP) | set(METHODS)
    for key in raw:
        if key not in allowed:
            close = closest(str(key), allowed)
            raise UsageError(f"{source}: unknown key '{key}'" + (f" (did you mean '{close}'?)" if close else ""))
    for key in ("model", "data"):
        if key not in raw:
            raise UsageError(f"{source}: missing required key '{key}'")
    cfg = PipelineConfig(model=_text(raw["model"], label("model")), data=_text(raw["data"], label("data")), source=source)
    check_data_spec_labeled(cfg.data, label("data"))
    if "pretrained" in raw:
        if not isinstance(raw["pretrained"], bool):
            raise UsageError(f"{label('pretrained')} must be true or false, got {raw['pretrained']!r}")
        cfg.pretrained = raw["pretrained"]
    if raw.get("checkpoint") is not None:
        cfg.checkpoint = os.path.expanduser(_text(raw["checkpoint"], label("checkpoint")))
    if raw.get("out") is not None:
        cfg.out = os.path.expanduser(_text(raw["out"], label("out")))
    if "seed" in raw:
        if isinstance(raw["seed"], bool) or not isinstance(raw["seed"], int) or raw["seed"] < 0:
            raise UsageError(f"{label('seed')} must be an integer >= 0, got {raw['seed']!r}")
        cfg.seed = raw["seed"]
    if "device" in raw:
        try:
            cfg.device = check_device_name(_text(raw["device"], label("device")))
        except UsageError as e:
            raise UsageError(f"{label('device')}: {e}") from None
    inherited = {"seed": cfg.seed, "device": cfg.device}
    for key, cls in _SECTIONS.items():
        setattr(cfg, key, from_mapping(cls, raw.get(key), yaml_label(source, f"{key}."), where=f"{key}."))
    if cfg.subset.active and not cfg.data.strip().startswith("fashion-mnist"):
        raise UsageError(f"{label('subset')} applies to fashion-mnist data, not {cfg.data}")
    from vitc.pipeline.targets import parse_targets

    cfg.targets = parse_targets(raw.get("targets"), label("targets"))
    cfg.baseline = _settings(TrainSettings, raw.get("baseline"), source, "baseline", inherited)
    for kind, method in METHODS.items():
        if kind in raw:
            cfg.methods[kind] = _method_stage(method, raw[kind], source, inherited)
    _add_parent_runs(cfg, raw, inherited)
    return cfg


def _add_parent_runs(cfg: PipelineConfig, raw: dict[str, Any], inherited: dict[str, Any]) -> None:
    """A method that builds on another's output (UVC+DynamicViT on UVC) needs that run: reuse the one the
    parent's section lists with the same value, else add it — from the parent's section settings when
    there is one, else the parent method's defaults."""
    for kind, stage in list(cfg.methods.items()):
        parent = stage.method.parent
        if parent is None:
            continue
        parent_method = METHODS[parent]
        key = stage.method.parent_key
        assert key is not None and parent_method.sweep is not None
        existing = cfg.methods.get(parent)
        if existing is not None and stage.parent_value in existing.values:
            continue
        section = dict(raw.get(parent) or {}) if isinstance(raw.get(parent), dict) else {}
        section.pop(f"{parent_method.sweep}s", None)
        section.pop("options", None)
        run = _settings(parent_method.settings, section, cfg.source, parent, inherited,
                        fixed={parent_method.sweep: stage.parent_value}, extra=("materialize",),
                        label=yaml_label(cfg.source, f"{kind}.") if not section else None)
        where = (f"the {parent} section's settings" if isinstance(raw.get(parent), dict)
                 else f"the defaults of `vitc compress {parent}`")
        listed = f"{parent}.{parent_method.sweep}s lists {', '.join(f'{v:g}' for v in existing.values)}" \
            if existing is not None else f"there is no {parent} section"
        value = stage.parent_value
        cfg.notes.append(f"'{kind}.{key}' is {value:g} and {listed}: the run adds a {parent_method.title} run at "
                         f"{key} {value:g} with {where} ({_epochs(run)})")
        if existing is None:
            cfg.methods = {parent: MethodStage(parent_method, [run]), **cfg.methods}
        else:
            existing.runs.append(run)


def _epochs(run: Any) -> str:
    if hasattr(run, "finetune_epochs"):
        return f"{run.epochs} search + {run.finetune_epochs} fine-tune epochs"
    return f"{run.epochs} epochs"


def check_data_spec_labeled(text: str, label: str) -> None:
    try:
        check_data_spec(text)
    except UsageError as e:
        raise UsageError(f"{label}: {e}") from None


def _text(value: Any, label: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UsageError(f"{label} must be a string, got {value!r}")
    return str(value)


def _settings(cls: type, raw: Any, source: str, key: str, inherited: dict[str, Any], *, fixed: dict[str, Any] | None = None,
              extra: tuple[str, ...] = (), label: Label | None = None) -> Any:
    """A section as ``cls``: the top-level seed/device unless the section sets its own."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: '{key}' must be a mapping")
    names = {f.name for f in dataclasses.fields(cls)}
    mapping = {**{k: v for k, v in inherited.items() if k in names and k not in raw},
               **{k: v for k, v in raw.items() if k not in extra}}
    return from_mapping(cls, mapping, label or yaml_label(source, f"{key}."), where=f"{key}.", extra=extra, **(fixed or {}))


def _method_stage(method: Method, raw: Any, source: str, inherited: dict[str, Any]) -> MethodStage:
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
    runs = []
    for i, value in enumerate(values):
        def label(name: str, i: int = i) -> str:
            return base(f"{sweep_key}[{i}]") if name == sweep else base(name)

        typed = coerce(tp, value, label(sweep))
        runs.append(_settings(method.settings, raw, source, kind, inherited, fixed={sweep: typed}, extra=tuple(extra),
                              label=label))
    tags = [ratio_tag(v) if isinstance(v, float) else str(v) for v in (method.variant_value(s) for s in runs)]
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

        stage.runs.append(_settings(method.settings, merged, source, kind, inherited, extra=tuple(extra), label=label))
        stage.names.append(name)
        stage.run_materialize.append(ratios)
        stage.dense_teacher.append(dense_teacher)
        stage.run_keys.append(keys)
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


class _DuplicateKey(Exception):
    pass


def _strict_loader() -> type:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def construct_mapping(loader: Any, node: Any, deep: bool = False) -> dict[Any, Any]:
        loader.flatten_mapping(node)
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):  # `? [a, b]`: unhashable, and no setting is named so
                kind = "list" if isinstance(key_node, yaml.SequenceNode) else "mapping"
                raise _DuplicateKey(f"line {key_node.start_mark.line + 1}: a key is a {kind}; keys are plain names")
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise _DuplicateKey(f"duplicate key '{key}' (line {key_node.start_mark.line + 1}; first on line "
                                    f"{seen[key] + 1}); YAML would silently keep the last one")
            seen[key] = key_node.start_mark.line
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return Loader
