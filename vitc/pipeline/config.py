"""The ``vitc run`` YAML: every section is a step's own settings schema, validated before any work.

Each section reads the same settings dataclass as the command that runs the step (``baseline`` =
``vitc train``'s :class:`~vitc.train.settings.TrainSettings`; a method's section = its ``vitc compress KIND``
settings; ``export``, ``quantize``, ``build``, ``verify``, ``eval``, ``bench`` and ``tune`` their commands'; the
classes are in :mod:`vitc.pipeline.sections`, a method's runs in :mod:`vitc.pipeline.runs`), so the pipeline
accepts and refuses exactly what the commands do, with the same message naming the key — before the baseline
trains. Example (every key optional except ``model`` and ``data``)::

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
    deploy: {backends: [torch, onnxruntime, tensorrt], precisions: [fp32, fp16, int8]}
    export: {opset: 18}
    quantize: {num_samples: 512, method: entropy}  # calibrated on the run's data unless quantize.data
    build: {tensorrt: {workspace_gb: 8}}
    verify: {batch_sizes: [1, 32]}
    eval: {batch_size: 128}
    bench: {device: cuda, batch_sizes: [1, 32, 64]}
    tune: {target_speedup: 3, max_drop: 1.0}     # vitc tune on the dense model: one more report row
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitc.backends import BACKENDS, BUILDERS
from vitc.core.device import check_device_name
from vitc.core.errors import UsageError
from vitc.core.settings import Settings, check_value, closest, coerce, from_mapping, to_dict, yaml_label
from vitc.core.settings import fields as settings_fields
from vitc.core.validation import check_data_spec
from vitc.methods import METHODS
from vitc.pipeline.runs import MethodStage, Run, method_stage
from vitc.pipeline.sections import (
    ALIASES,
    DEPLOY_PRECISIONS,
    BenchStage,
    DeployStage,
    DistributedStage,
    EvalStage,
    ExportStage,
    QuantizeStage,
    SubsetStage,
    TuneStage,
    VerifyStage,
    section_settings,
)
from vitc.train.settings import TrainSettings


@dataclass
class PipelineConfig:
    """A validated ``vitc run`` YAML; its fields are the YAML's top-level keys (a method's section is ``methods[kind]``)."""

    model: str
    data: str
    pretrained: bool = False
    checkpoint: str | None = None
    out: str | None = None
    seed: int = 0
    device: str = "auto"
    distributed: DistributedStage = field(default_factory=DistributedStage)
    baseline: TrainSettings = field(default_factory=TrainSettings)
    deploy: DeployStage = field(default_factory=DeployStage)
    export: ExportStage = field(default_factory=ExportStage)
    quantize: QuantizeStage = field(default_factory=QuantizeStage)
    build: dict[str, Any] = field(default_factory=dict)  # builder backend -> its build settings (given ones)
    verify: VerifyStage = field(default_factory=VerifyStage)
    eval: EvalStage = field(default_factory=EvalStage)
    bench: BenchStage = field(default_factory=BenchStage)
    subset: SubsetStage = field(default_factory=SubsetStage)
    tune: TuneStage | None = None  # `vitc tune` on the dense model (a section with at least target_speedup)
    targets: list[Any] = field(default_factory=list)  # vitc.pipeline.targets.Target
    methods: dict[str, MethodStage] = field(default_factory=dict, metadata={"internal": True})
    source: str = field(default="pipeline", metadata={"internal": True})
    notes: list[str] = field(default_factory=list, metadata={"internal": True})  # said in --dry-run and the log

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.metadata.get("internal"):
                continue
            value = getattr(self, f.name)
            if f.name == "targets":
                out[f.name] = [t.text for t in value]
            elif f.name == "build":
                out[f.name] = {k: to_dict(v) for k, v in value.items()}
            elif value is None:
                out[f.name] = None
            else:
                out[f.name] = to_dict(value) if dataclasses.is_dataclass(value) else value
        for kind, stage in self.methods.items():
            out[kind] = {"runs": [{**to_dict(r.settings), "name": r.name, "materialize": r.materialize,
                                   "dense_teacher": r.dense_teacher} for r in stage.runs],
                         "materialize": stage.materialize}
        return out


def _top_keys() -> tuple[tuple[str, ...], dict[str, type]]:
    """The YAML's top-level keys (PipelineConfig's fields) and which of them are plain settings sections."""
    import typing

    hints = typing.get_type_hints(PipelineConfig)
    keys = tuple(f.name for f in dataclasses.fields(PipelineConfig) if not f.metadata.get("internal"))
    sections = {k: hints[k] for k in keys if isinstance(hints[k], type) and issubclass(hints[k], Settings)
                and k not in ("baseline",)}
    return keys, sections


_TOP, _SECTIONS = _top_keys()


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
    raw = _apply_aliases(raw, cfg)
    for key, cls in _SECTIONS.items():
        section = raw.get(key)
        _refuse_fixed(cls, section, source, key)
        setattr(cfg, key, from_mapping(cls, section, yaml_label(source, f"{key}."), where=f"{key}."))
    if cfg.subset.active and not cfg.data.strip().startswith("fashion-mnist"):
        raise UsageError(f"{label('subset')} applies to fashion-mnist data, not {cfg.data}")
    cfg.build = _build_section(raw.get("build"), source)
    from vitc.pipeline.targets import parse_targets

    cfg.targets = parse_targets(raw.get("targets"), label("targets"))
    cfg.baseline = section_settings(TrainSettings, raw.get("baseline"), source, "baseline", inherited)
    if raw.get("tune") is not None:
        cfg.tune = section_settings(TuneStage, raw["tune"], source, "tune", inherited)
    for kind, method in METHODS.items():
        if kind in raw:
            cfg.methods[kind] = method_stage(method, raw[kind], source, inherited)
    add_parent_runs(cfg, raw, inherited)
    return cfg


def _apply_aliases(raw: dict[str, Any], cfg: PipelineConfig) -> dict[str, Any]:
    """Old spellings moved to the keys they became (``bench.backends`` → ``deploy.backends``; ``export.fp16: false``
    drops fp16 from ``deploy.precisions``), each with a ``note:``; a setting given both ways is refused."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    precisions_given = isinstance(raw.get("deploy"), dict) and "precisions" in raw["deploy"]
    for (section, key), (to_section, to_key) in ALIASES.items():
        old = raw.get(section)
        if not isinstance(old, dict) or key not in old:
            continue
        value = old.pop(key)
        target = raw.get(to_section)
        if target is None:
            target = raw[to_section] = {}
        if not isinstance(target, dict):
            raise UsageError(f"{cfg.source}: '{to_section}' must be a mapping")
        if to_key == "precisions":  # export.fp16 / export.int8: whether deploy.precisions lists it
            if not isinstance(value, bool):
                raise UsageError(f"{cfg.source}: '{section}.{key}' must be true or false, got {value!r}")
            if precisions_given:
                raise UsageError(f"{cfg.source}: '{section}.{key}' is the old spelling of an entry of '{to_section}.precisions'; "
                                 f"give only '{to_section}.precisions'")
            precisions = [p for p in target.get("precisions", DEPLOY_PRECISIONS) if p != key or value]
            if value and key not in precisions:
                precisions.append(key)
            target["precisions"] = precisions
            cfg.notes.append(f"'{section}.{key}: {str(value).lower()}' is the old spelling of '{to_section}.precisions' "
                             f"({', '.join(precisions)})")
            continue
        if to_key in target:
            raise UsageError(f"{cfg.source}: '{section}.{key}' and '{to_section}.{to_key}' are the same setting; give only "
                             f"'{to_section}.{to_key}'")
        _check_value_as(_SECTIONS[to_section], to_key, value, f"{section}.{key}", cfg.source)
        target[to_key] = value
        cfg.notes.append(f"'{section}.{key}' is the old spelling of '{to_section}.{to_key}'")
    return raw


def _check_value_as(cls: type, name: str, value: Any, key: str, source: str) -> None:
    """Check ``value`` as field ``name`` of ``cls``, errors naming the key as the YAML wrote it."""
    spec, tp = next((sp, t) for f, sp, t in settings_fields(cls) if f.name == name)
    label = yaml_label(source)
    typed = coerce(tp, value, label(key))
    for i, v in enumerate(typed if isinstance(typed, list) else [typed]):
        check_value(spec, v, label(f"{key}[{i}]" if isinstance(typed, list) else key))
    twice = next((v for i, v in enumerate(typed) if v in typed[:i]), None) if isinstance(typed, list) else None
    if twice is not None:
        raise UsageError(f"{label(key)} lists {twice} twice")


def _refuse_fixed(cls: type, section: Any, source: str, key: str) -> None:
    """A key the pipeline sets itself (``Section.FIXED``) is refused naming who sets it."""
    fixed = getattr(cls, "FIXED", {})
    if not isinstance(section, dict):
        return
    for name in section:
        if fixed.get(name):
            raise UsageError(f"{source}: '{key}.{name}' is set by the pipeline: {fixed[name]}")


def _build_section(raw: Any, source: str) -> dict[str, Any]:
    """``build: {tensorrt: {...}, openvino: {...}}``: each builder's `vitc build` settings."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: 'build' must be a mapping of backend names ({', '.join(BUILDERS)}) to their settings")
    out = {}
    for name, section in raw.items():
        if name not in BUILDERS:
            close = closest(str(name), BUILDERS)
            raise UsageError(f"{source}: unknown key 'build.{name}'" + (f" (did you mean 'build.{close}'?)" if close else
                                                                      f" (builders: {', '.join(BUILDERS)})"))
        cls = BACKENDS[name].build_settings_class()
        out[name] = from_mapping(cls, section, yaml_label(source, f"build.{name}."), where=f"build.{name}.")
    return out


def add_parent_runs(cfg: PipelineConfig, raw: dict[str, Any], inherited: dict[str, Any]) -> None:
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
        run = section_settings(parent_method.settings, section, cfg.source, parent, inherited,
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
            cfg.methods = {parent: MethodStage(parent_method, [Run(run)]), **cfg.methods}
        else:
            existing.runs.append(Run(run))


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
