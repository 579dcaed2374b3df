"""UVC + DynamicViT in one model: UVC prunes the structure (blocks, heads, MLP neurons), DynamicViT then
learns to drop tokens in what is left, and their savings multiply.

The input is a UVC artifact — the compressed one ``vitc compress uvc`` writes (sliced here) or its
materialized model. Prediction modules go before the blocks at 1/4, 1/2 and 3/4 of the *kept* depth
(``--stages`` to choose), trained with DynamicViT's losses and schedule; the frozen teacher is the UVC
model by default, or any model with the same input, width and classes (``--teacher``, e.g. the original
dense model). The artifact (kind ``uvc+dynamicvit``) materializes at any keep ratio like a DynamicViT
one, and records its parent and the original dense model's MACs, so ``vitc info`` reports the cost
against both.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitc.methods.base import ratio_tag
from vitc.methods.dynamicvit import DynamicViT
from vitc.methods.uvc_dynamicvit.settings import UVCDynamicViTSettings

if TYPE_CHECKING:
    from torch import nn

    from vitc.core.spec import ViTSpec


class UVCDynamicViT(DynamicViT):
    """Trains DynamicViT prediction modules on a UVC model (its blocks, heads and widths kept as they are).
    Writes OUT/compressed.safetensors (kind uvc+dynamicvit: `vitc eval` runs it at the trained ratio,
    `vitc materialize --keep-ratios` fixes others) and OUT/metrics.json; the summary gives MACs against
    the UVC input and against the original dense model.
    """

    kind = "uvc+dynamicvit"
    title = "UVC+DynamicViT"
    summary = "token selection (DynamicViT) on a UVC-pruned model: fewer blocks, heads, neurons and tokens"
    settings = UVCDynamicViTSettings
    parent = "uvc"
    parent_key = "budget"
    input_help = ("MODEL is a UVC artifact: the compressed.safetensors of `vitc compress uvc`, or the model "
                  "`vitc materialize` made from it.")

    def compress(self, model: str, data: str, out: Path, settings: Any, *, pretrained: bool = False,
                 checkpoint: str | None = None, resume: bool = False) -> dict[str, Any] | None:
        from vitc.core.data import parse_data
        from vitc.core.errors import UsageError
        from vitc.core.settings import validate
        from vitc.methods.dynamicvit.compress import train_token_selection
        from vitc.train.loop import seed_everything

        validate(settings)
        if pretrained or checkpoint:
            raise UsageError("--pretrained/--checkpoint apply to model names; give the UVC artifact as MODEL")
        student, spec, parent_meta = uvc_model(model)
        source = parse_data(data)
        classes = source.head_classes()
        if classes is not None and classes != spec.num_classes:
            raise UsageError(f"{model} has {spec.num_classes} classes but {source} has {classes}")
        teacher = resolve_teacher(settings.teacher, spec) if settings.teacher else None
        seed_everything(settings.seed)  # the predictors' initial weights
        uvc_info = {k: parent_meta[k] for k in ("budget", "resource") if k in parent_meta}
        result = train_token_selection(
            student, spec, source, out, settings, source_name=model, teacher=teacher, kind=self.kind,
            parent_meta=parent_meta, resume=resume,
            extra_meta={"uvc": uvc_info, "teacher": settings.teacher or "the UVC model (input)"},
        )
        if result is not None:
            from vitc.core.artifacts import read_header

            origin = read_header(result["artifact"], verify=False)[2]["origin"]
            result.update({"origin": origin, "macs_vs_origin": result["macs"] / origin["macs"],
                           "macs_vs_input": result["macs"] / result["dense_macs"], "uvc": uvc_info})
        return result

    def check_target(self, settings: Any, spec: Any, latency: Any, label: Any) -> None:
        """Only what is certainly out of reach before the UVC search decides the model: a target beyond the dense
        time over the profile's fixed part (patch embedding and head), which no model beats."""
        from vitc.core.errors import UsageError

        target = settings.target_speedup
        if target is None or latency is None:
            return
        best = latency.dense_ms / latency.fixed_ms if latency.fixed_ms > 0 else float("inf")
        if target > best:
            raise UsageError(f"{label('target_speedup')}: {target:g} is out of reach: {settings.latency} predicts no model "
                             f"of {spec.name} faster than {best:.2f}x (its fixed part alone, patch embedding and head, "
                             f"takes {latency.fixed_ms:.3g} of the dense {latency.dense_ms:.3g} ms)")

    def run_name(self, settings: Any, parent: str | None = None) -> str:
        value = self.variant_value(settings)
        tag = value if isinstance(value, str) else ratio_tag(value)
        return f"{parent}+dynamicvit-{tag}" if parent else f"{self.kind}-{tag}"

    def variant_name(self, settings: Any, keep_ratio: float | None, parent: str | None = None) -> str:
        if keep_ratio is None and settings.target_speedup is not None:  # at the ratio its target picked
            return self.run_name(settings, parent)
        ratio = settings.rho if keep_ratio is None else keep_ratio
        return f"{parent}+dynamicvit-keep{ratio_tag(ratio)}" if parent else f"{self.kind}-keep{ratio_tag(ratio)}"

    def describe(self, r: dict[str, Any]) -> str:
        return (f"{self._tokens_line(r)} (UVC model)\n{self._training_line(r)}  ({r['seconds']:.1f}s)\n"
                f"MACs {r['macs'] / 1e6:.2f} M: {r['macs_vs_input']:.3f}x its UVC input, {r['macs_vs_origin']:.3f}x the "
                f"original dense {r['origin']['name']} ({r['origin']['macs'] / 1e6:.2f} M)")


def uvc_model(path: str) -> tuple[nn.Module, ViTSpec, dict[str, Any]]:
    """The plain (sliced) UVC model of ``path`` — a compressed UVC artifact or its materialized model —,
    its spec and the metadata to inherit (origin, budget)."""
    from vitc.core.artifacts import PLAIN, load_artifact, plain_model
    from vitc.core.errors import UsageError
    from vitc.core.models import is_artifact_path
    from vitc.methods.uvc import UVC

    uvc = UVC()
    if not is_artifact_path(path):
        raise UsageError(f"{path} is not an artifact file; give the output of `vitc compress uvc` (or its materialized model)")
    art = load_artifact(path)
    if art.kind == uvc.kind:
        from vitc.core.provenance import origin

        m = uvc.materialize(art)  # a compressed UVC artifact's spec is the dense model it pruned
        return m.model.train(), m.spec, {**art.meta, **m.meta, "origin": origin(art.spec, art.meta)}
    if art.kind == PLAIN and art.meta.get("method") == uvc.kind:
        return plain_model(art).train(), art.spec, art.meta
    raise UsageError(f"{path} is not a UVC model (kind {art.kind!r}, made by {art.meta.get('method', 'training')}); give "
                     "the compressed.safetensors of `vitc compress uvc` or the model `vitc materialize` made from it")


def resolve_teacher(name: str, spec: ViTSpec) -> nn.Module:
    """The teacher model; it must see the same images and produce comparable tokens and logits.

    Refused in one line: another input size, patch size, number of input channels, embedding width,
    class count or prefix-token count, a teacher that selects tokens itself, a file that is not a
    model artifact (an ONNX). A teacher normalised with another mean/std (e.g. ImageNet's vs the
    student's) is fed each batch re-normalised for it (:class:`vitc.train.distill.Renormalized`), as the
    log says: an exact per-channel affine map of the same pixels.
    """
    from vitc.core.errors import UsageError
    from vitc.core.models import resolve_model
    from vitc.core.progress import log
    from vitc.train.distill import Renormalized

    if name.lower().endswith((".onnx", ".engine", ".plan", ".trt")):
        raise UsageError(f"--teacher {name} is an exported file; the teacher runs in PyTorch during training: give its "
                         "artifact (.safetensors) or timm name")
    teacher, tspec = resolve_model(name)  # a plain model: a compressed artifact is refused, naming its kind
    mismatch = [(what, a, b) for what, a, b in (
        ("input size", tspec.img_size, spec.img_size), ("input channels", tspec.in_chans, spec.in_chans),
        ("patch size", tspec.patch_size, spec.patch_size),
        ("embedding width", tspec.embed_dim, spec.embed_dim), ("classes", tspec.num_classes, spec.num_classes),
        ("prefix tokens", tspec.num_prefix_tokens, spec.num_prefix_tokens),
    ) if a != b]
    if any(b.keep_tokens is not None for b in tspec.blocks):
        raise UsageError(f"--teacher {name} selects tokens itself; give a model that keeps every token")
    if mismatch:
        what, a, b = mismatch[0]
        raise UsageError(f"--teacher {name} has {what} {a} but the UVC model has {b}; the teacher must see the same "
                         "images and produce comparable tokens")
    if tuple(tspec.mean) != tuple(spec.mean) or tuple(tspec.std) != tuple(spec.std):
        log(f"--teacher {name} is normalised with mean {_triple(tspec.mean)} std {_triple(tspec.std)}, the UVC model "
            f"with mean {_triple(spec.mean)} std {_triple(spec.std)}: each batch is re-normalised for the teacher")
        return Renormalized(teacher, spec.mean, spec.std, tspec.mean, tspec.std)
    return teacher


def _triple(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"
