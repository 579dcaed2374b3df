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
from typing import Any, ClassVar

from vitc.backends import BACKENDS, BUILDERS, DEFAULT_BENCH_BACKENDS
from vitc.checks.settings import BenchSettings, EvalSettings, VerifySettings
from vitc.core.device import check_device_name
from vitc.core.errors import UsageError
from vitc.core.settings import Label, Settings, check_keys, check_value, closest, coerce, derive, from_mapping, setting, to_dict, yaml_label
from vitc.core.settings import fields as settings_fields
from vitc.core.validation import check_data_spec
from vitc.methods import METHODS, ratio_tag
from vitc.methods.base import Method
from vitc.onnx.settings import ExportSettings, QuantizeSettings
from vitc.train.settings import TrainSettings
from vitc.tune.settings import TuneSettings

INHERITED = ("seed", "device")  # top-level keys every training section inherits unless it sets its own
DEPLOY_PRECISIONS = ("fp32", "fp16", "int8")  # what a run makes unless told (bf16 where listed: torch's compute dtype)


class Section(Settings):
    """A pipeline section that reads a command's settings: ``FIXED`` names the command's fields the pipeline sets
    itself (per file or per run), each with the reason a YAML that gives one is told."""

    FIXED: ClassVar[dict[str, str]] = {}


@dataclass(kw_only=True)
class DistributedStage(Settings):
    nproc_per_node: int = setting(1, min=1, help="Processes per node for the training stages (torchrun).")


@dataclass(kw_only=True)
class DeployStage(Settings):
    """What the pipeline makes of every variant (pipeline-only): the backends it runs on and the ONNX precisions."""

    backends: list[str] = setting(list(DEFAULT_BENCH_BACKENDS), choices=tuple(BACKENDS),
                                  help="Backends to evaluate and bench each variant on (tensorrt only where TensorRT and a "
                                       "GPU are present; openvino runs the ONNX files on the CPU when listed). ONNX Runtime "
                                       "always runs the ONNX files: every one is verified and evaluated through it.")
    precisions: list[str] = setting(list(DEPLOY_PRECISIONS), choices=("fp32", "fp16", "bf16", "int8"),
                                    help="Precisions to deploy at, where a backend runs them: fp32 always (int8 is quantized "
                                         "from it), fp16 (an FP16 ONNX; torch on a GPU), bf16 (torch's compute dtype), int8 "
                                         "(Q/DQ calibrated on the run's data).")

    def rules(self, label: Label) -> None:
        for key, values in (("backends", self.backends), ("precisions", self.precisions)):
            dup = next((v for v in values if values.count(v) > 1), None)
            if dup is not None:
                raise UsageError(f"{label(key)} lists {dup} twice")
        if not self.backends:
            raise UsageError(f"{label('backends')} must list at least one backend")
        if "fp32" not in self.precisions:
            raise UsageError(f"{label('precisions')} must include fp32 (every ONNX is exported at fp32 first)")


@dataclass(kw_only=True)
class ExportStage(ExportSettings, Section):
    """`vitc export`'s settings, applied to every ONNX the run exports."""

    FIXED: ClassVar[dict[str, str]] = {
        "keep_ratio": "a token-selection run is materialized at the ratios its method section lists ('materialize')",
        "verify": "every ONNX is verified in the run's verify stage (the 'verify' section)",
        "data": "every ONNX is verified in the run's verify stage (its images: 'verify.data')",
        "fp16": "",  # the old spelling of deploy.precisions (see ALIASES)
    }


@dataclass(kw_only=True)
class QuantizeStage(QuantizeSettings, Section):
    """`vitc quantize`'s settings, for every INT8 file the run makes."""

    data: str | None = setting(None, parse=check_data_spec, metavar="SPEC",  # type: ignore[assignment]
                               help="Real calibration images (default: the run's data, its train split).")


@dataclass(kw_only=True)
class VerifyStage(VerifySettings, Section):
    """`vitc verify`'s settings, for every ONNX the run makes, at each of ``batch_sizes``."""

    FIXED: ClassVar[dict[str, str]] = {"batch_size": "the run verifies at each of 'verify.batch_sizes'"}
    data: str | None = setting(None, parse=check_data_spec,  # type: ignore[assignment]
                               help="Real images to verify on (default: the run's data); random inputs are checked too.")
    batches: int | None = setting(2, min=1, help="Batches to compare at each batch size (random and real images each).")
    batch_sizes: list[int] = setting([1, 32], min=1, help="Batch sizes to verify at (random and real images each).")

    def rules(self, label: Label) -> None:
        if not self.batch_sizes:
            raise UsageError(f"{label('batch_sizes')} must list at least one batch size")


@dataclass(kw_only=True)
class EvalStage(EvalSettings, Section):
    """`vitc eval`'s settings, for every deployed file."""

    FIXED: ClassVar[dict[str, str]] = {"backend": "each file is evaluated through the backend it is deployed to ('deploy.backends')"}


_BenchDefaults = derive(BenchSettings, "_BenchDefaults", batch_sizes=[1, 32], device="cpu", warmup_ms=200.0, min_iters=10,
                        min_seconds=1.0)


@dataclass(kw_only=True)
class BenchStage(_BenchDefaults, Section):  # type: ignore[misc,valid-type]
    """`vitc bench`'s settings, for every deployed file."""

    FIXED: ClassVar[dict[str, str]] = {
        "backend": "each file is benched on the backends 'deploy.backends' lists",
        "precision": "each file runs at its own precision ('deploy.precisions')",
    }
    paired: bool = setting(True, help="Bench each compressed format alternately with the dense one (paired speedup); "
                                      "false: each on its own (images/s only; speedups from separate runs).")

    def rules(self, label: Label) -> None:
        if not self.batch_sizes:
            raise UsageError(f"{label('batch_sizes')} must list at least one batch size")

    def settings(self, backend: str, precision: str | None) -> BenchSettings:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(BenchSettings)}
        return BenchSettings(**{**values, "backend": backend, "precision": precision})


@dataclass(kw_only=True)
class TuneStage(TuneSettings, Section):
    """`vitc tune`'s settings: the run tunes its dense model and reports the tuned file as one more row."""


@dataclass(kw_only=True)
class SubsetStage(Settings):
    train: int | None = setting(None, min=1, help="Use only the first N training images (fashion-mnist data).")
    val: int | None = setting(None, min=1, help="Use only the first N validation (test) images (fashion-mnist data).")

    @property
    def active(self) -> bool:
        return self.train is not None or self.val is not None


# old spellings: (section, key) -> (section, key it became); export.fp16/int8 become entries of deploy.precisions
ALIASES: dict[tuple[str, str], tuple[str, str]] = {
    ("bench", "backends"): ("deploy", "backends"),
    ("export", "calib_samples"): ("quantize", "num_samples"),
    ("export", "calib_method"): ("quantize", "method"),
    ("export", "fp16"): ("deploy", "precisions"),
    ("export", "int8"): ("deploy", "precisions"),
}


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
    cfg.baseline = _settings(TrainSettings, raw.get("baseline"), source, "baseline", inherited)
    if raw.get("tune") is not None:
        cfg.tune = _settings(TuneStage, raw["tune"], source, "tune", inherited)
    for kind, method in METHODS.items():
        if kind in raw:
            cfg.methods[kind] = _method_stage(method, raw[kind], source, inherited)
    _add_parent_runs(cfg, raw, inherited)
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
    runs: list[Run] = []
    for i, value in enumerate(values):
        def label(name: str, i: int = i) -> str:
            return base(f"{sweep_key}[{i}]") if name == sweep else base(name)

        typed = coerce(tp, value, label(sweep))
        runs.append(Run(_settings(method.settings, raw, source, kind, inherited, fixed={sweep: typed}, extra=tuple(extra),
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

        stage.runs.append(Run(_settings(method.settings, merged, source, kind, inherited, extra=tuple(extra), label=label),
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
