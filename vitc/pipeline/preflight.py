"""Everything a pipeline can be checked for before its first stage: devices, data, and what the model spec
decides — token-selection sites past the model's depth, keep ratios that leave no patch token, a
distillation teacher that cannot see the student's images — each refused in one line naming the YAML key.

Where the model a method works on is made by an earlier stage (UVC+DynamicViT works on the UVC model,
whose depth the UVC search decides), the check takes UVC's worst case. A UVC model keeps between 1 and
all of the dense model's blocks under any budget (a kept block can be pruned to one head and one MLP
neuron, so a budget does not force any number of blocks to stay). So: a site at or past the dense depth
is refused; a site that fits the dense model but needs the UVC model to keep more than one block is
accepted with a note (in ``--dry-run`` and the log) that it fails if the search keeps fewer; the keep
ratios are checked with the most stages the default sites can give.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vitc.core.errors import UsageError
from vitc.core.progress import log
from vitc.core.token_select import default_stages, keep_counts
from vitc.methods import METHODS

if TYPE_CHECKING:
    from vitc.core.spec import ViTSpec
    from vitc.pipeline.config import PipelineConfig
    from vitc.pipeline.plan import Plan
    from vitc.pipeline.runs import MethodStage


def preflight(cfg: PipelineConfig, plan: Plan, *, dry_run: bool = False) -> None:
    """Refuse (one line) what would fail later; add to ``cfg.notes`` what may. Nothing is written."""
    from vitc.core.data import parse_data
    from vitc.core.device import pick_device
    from vitc.pipeline.targets import check_planned

    source = parse_data(cfg.data)
    if not dry_run:
        pick_device(cfg.device)
        if cfg.bench.device != "auto":
            pick_device(cfg.bench.device)
    if "int8" in cfg.deploy.precisions and source.kind == "synthetic" and cfg.quantize.data is None:
        raise UsageError(f"{cfg.source}: 'deploy.precisions' lists int8, which needs real calibration images, and data "
                         f"{cfg.data} is random noise; drop int8 from deploy.precisions, set quantize.data, or use real data")
    if cfg.verify.data is None and source.kind == "synthetic" and not dry_run:
        log("warning: verifying on synthetic data (random images); set verify.data to real images for the "
            "token-selection top-1 check")
    spec = model_spec(cfg, source.head_classes())
    if spec is not None:
        for stage in cfg.methods.values():
            if stage.method.token_selection:
                check_token_selection(cfg, stage, spec)
            check_speed(cfg, stage, spec)
    if cfg.tune is not None:  # what the tune may try must run here (a backend it lists, say)
        from vitc.core.settings import yaml_label
        from vitc.tune.candidates import candidate_pairs, device_name

        candidate_pairs(cfg.tune, device_name(cfg.tune.device), yaml_label(cfg.source, "tune."))
    plan.build()
    check_planned(cfg.targets, [(r.variant, r.format) for r in plan.rows], f"{cfg.source}: 'targets'")


def model_spec(cfg: PipelineConfig, classes: int | None) -> ViTSpec:
    """The architecture of the run's dense model (:func:`vitc.core.models.dense_spec`), errors naming the key."""
    from vitc.core.models import dense_spec, is_artifact_path

    try:
        return dense_spec(cfg.model, num_classes=None if is_artifact_path(cfg.model) else classes)
    except UsageError as e:
        raise UsageError(f"{cfg.source}: 'model': {e}") from None


def check_token_selection(cfg: PipelineConfig, stage: MethodStage, spec: ViTSpec) -> None:
    """Sites, keep ratios and teacher of every run of a token-selection section, against the model they get."""
    method = stage.method
    depth, n = spec.depth, spec.num_patches
    on_parent = method.parent is not None  # the model is the parent run's output: any depth in [1, depth]
    parent = METHODS[method.parent].title if method.parent is not None else ""
    for i, run in enumerate(stage.runs):
        settings = run.settings

        def key(name: str, i: int = i) -> str:
            return f"{cfg.source}: '{stage.key(i, name)}'"

        stages = settings.stages
        if stages is not None:
            past = [s for s in stages if s >= depth]
            if past:
                model = f"any {parent} model of {spec.name}" if on_parent else spec.name
                raise UsageError(f"{key('stages')}: block {past[0]} is past the kept depth: {model} has at most {depth} "
                                 f"blocks, so a stage sits before block 1..{depth - 1}")
            if on_parent and max(stages) > 1:
                cfg.notes.append(f"{stage.key(i, 'stages')} puts a stage before block {max(stages)}: the "
                                 f"{parent} model must keep at least {max(stages) + 1} of {spec.name}'s {depth} "
                                 "blocks, which its search decides (if it keeps fewer, this run fails after that stage)")
            count = len(stages)
        else:
            sites = default_stages(depth)  # the most sites any kept depth <= depth gets
            if not sites:
                raise UsageError(f"{key('stages')}: {spec.name} has {depth} block; a token-selection stage sits between "
                                 "two blocks")
            count = len(sites)
        ratios = [("keep_ratio", settings.keep_ratio)] if settings.keep_ratio is not None else []  # a target: check_speed
        ratios += [("materialize", r) for r in stage.ratios_of(i) or []]
        for name, ratio in ratios:
            kept = keep_counts(n, ratio, count)
            if kept[-1] < 1:
                s = next(k for k, c in enumerate(kept, 1) if c < 1)
                raise UsageError(f"{key(name)}: {ratio:g} leaves 0 of the {n} patch tokens after stage {s} "
                                 f"(floor({n}*{ratio:g}^{s})); use a larger ratio or fewer stages")
        teacher = getattr(settings, "teacher", None)
        if teacher and not run.dense_teacher:
            check_teacher(teacher, spec, key("teacher"), f"the {parent} model" if on_parent else spec.name)


def check_speed(cfg: PipelineConfig, stage: MethodStage, spec: ViTSpec) -> None:
    """The latency profile and the budget or speed target of every run of a section, before any training: the
    file must be a readable profile of the run's dense model, and the target within what the method can reach
    (UVC: one block with one head and one MLP neuron at most; DynamicViT: one token per stage; UVC+DynamicViT:
    no model is faster than the profile's fixed part alone)."""
    method = stage.method
    for i, run in enumerate(stage.runs):
        settings = run.settings

        def key(name: str, i: int = i, run: Any = run) -> str:
            if name == method.sweep and not run.keys:  # a swept value: `uvc.budgets[i]`
                return f"{cfg.source}: '{method.kind}.{name}s[{i}]'"
            return f"{cfg.source}: '{stage.key(i, name)}'"

        path = getattr(settings, "latency", None)
        latency = None
        if path is not None:
            from vitc.core.latency import load_latency

            try:
                latency = load_latency(path)
                latency.check_fits(spec, spec.name, dense=True)
            except UsageError as e:
                raise UsageError(f"{key('latency')}: {e}") from None
        method.check_target(settings, spec, latency, key)


def check_teacher(teacher: str, spec: ViTSpec, key: str, student: str) -> None:
    """A distillation teacher sees the student's images and gives comparable tokens and logits."""
    from vitc.core.artifacts import read_header
    from vitc.core.filetype import SAFETENSORS, describe, sniff
    from vitc.core.models import is_artifact_path, resolve_spec

    if is_artifact_path(teacher):
        if sniff(teacher) != SAFETENSORS:
            raise UsageError(f"{key}: {teacher} is {describe(teacher)}; the teacher runs in PyTorch while training: give "
                             "a dense vitc artifact or a timm name")
        try:
            tspec = read_header(teacher, verify=False)[0]
        except UsageError as e:
            raise UsageError(f"{key}: {e}") from None
    else:
        tspec = resolve_spec(teacher)  # as training builds it: with its own head
    if any(b.keep_tokens is not None for b in tspec.blocks):
        raise UsageError(f"{key}: {teacher} selects tokens itself; give a model that keeps every token")
    checks: list[tuple[str, Any, Any]] = [
        ("input size", tspec.img_size, spec.img_size), ("input channels", tspec.in_chans, spec.in_chans),
        ("patch size", tspec.patch_size, spec.patch_size), ("embedding width", tspec.embed_dim, spec.embed_dim),
        ("classes", tspec.num_classes, spec.num_classes), ("prefix tokens", tspec.num_prefix_tokens, spec.num_prefix_tokens),
    ]
    for what, a, b in checks:
        if a != b:
            raise UsageError(f"{key}: {teacher} has {what} {a} but {student} has {b}; the teacher must "
                             "see the same images and give comparable tokens and logits")

