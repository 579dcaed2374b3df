"""What gets exported (and what an ONNX is verified against): the deployable module of a source.

* ``model`` artifacts (dense or already materialized) load as they are;
* ``uvc`` artifacts (masks + gates) are sliced with :func:`vitc.compress.uvc.materialize_uvc`, so the
  ONNX is physically smaller; slicing refuses if the sliced model differs from the masked one;
* ``dynamicvit`` artifacts keep their trained keep ratio, or take another one through
  :func:`vitc.compress.dynamicvit.materialize_ratio` (token counts ``floor(N·rho^s)``);
* a timm name or vitc config goes through :func:`vitc.models.registry.resolve_model`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from vitc.errors import UsageError
from vitc.models.spec import ViTSpec


@dataclass
class Deployable:
    model: nn.Module
    spec: ViTSpec
    kind: str  # the source's artifact kind: model | uvc | dynamicvit
    source: str
    keep_ratio: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def keep_tokens(self) -> list[int]:
        return [b.keep_tokens for b in self.spec.blocks if b.keep_tokens is not None]


def load_deployable(source: str, *, keep_ratio: float | None = None, pretrained: bool = False,
                    checkpoint: str | None = None, strict_ratio: bool = True) -> Deployable:
    """The eval-mode module to export for ``source`` (artifact path, timm name or vitc config).

    ``keep_ratio`` re-materializes a ``dynamicvit`` artifact at another rho. For any other source it
    must be None or equal the ratio the artifact was materialized with (``strict_ratio``), or it is
    ignored (``strict_ratio=False``: verification passes the ONNX's ratio whatever the reference is).
    """
    if not strict_ratio and keep_ratio is not None:
        from vitc.models.registry import is_artifact_path

        if not is_artifact_path(source) or _kind(source) != "dynamicvit":
            keep_ratio = None
    from vitc.models.registry import is_artifact_path, resolve_model

    if not is_artifact_path(source):
        if keep_ratio is not None:
            raise UsageError("--keep-ratio applies to DynamicViT artifacts, not to model names")
        model, spec = resolve_model(source, pretrained=pretrained, checkpoint=checkpoint)
        return Deployable(model.eval(), spec, "model", source)
    if pretrained or checkpoint:
        raise UsageError("--pretrained/--checkpoint apply to model names, not to artifact files")
    from vitc.artifacts import load_artifact, load_model, read_header

    _, kind, meta = read_header(source, verify=False)
    trained_ratio = _ratio(meta.get("keep_ratio"))
    if kind == "uvc":
        if keep_ratio is not None:
            raise UsageError(f"--keep-ratio applies to DynamicViT artifacts; {source} is a UVC artifact")
        from vitc.compress.uvc import materialize_uvc

        model, spec, _ = materialize_uvc(load_artifact(source))
        return Deployable(model.eval(), spec, kind, source, None, meta)
    if kind == "dynamicvit" and keep_ratio is not None and keep_ratio != trained_ratio:
        from vitc.compress.dynamicvit import materialize_ratio

        model, spec = materialize_ratio(load_artifact(source), keep_ratio)
        return Deployable(model.eval(), spec, kind, source, keep_ratio, meta)
    if keep_ratio is not None and keep_ratio != trained_ratio:
        what = f"was materialized at keep ratio {trained_ratio:g}" if trained_ratio is not None else "has no token selection to re-ratio"
        raise UsageError(f"{source} {what}; --keep-ratio {keep_ratio:g} needs the DynamicViT (kind dynamicvit) artifact")
    model, art = load_model(source)
    return Deployable(model.eval(), art.spec, art.kind, source, trained_ratio, art.meta)


def _kind(source: str) -> str:
    from vitc.artifacts import read_header

    return read_header(source, verify=False)[1]


def _ratio(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
