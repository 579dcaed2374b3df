"""What gets exported (and what an ONNX is verified against): the deployable module of a source.

A plain artifact loads as it is; a compressed one is materialized by its method (``vitc.methods``):
UVC artifacts are sliced (refused if the slice differs from the masked model), token-selection
artifacts keep their trained keep ratio or take another one. A timm name or vitc config goes through
:func:`vitc.core.models.resolve_model`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from vitc.core.artifacts import PLAIN
from vitc.core.errors import UsageError
from vitc.core.spec import ViTSpec


@dataclass
class Deployable:
    model: nn.Module
    spec: ViTSpec
    kind: str  # the source's artifact kind
    source: str
    keep_ratio: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def keep_tokens(self) -> list[int]:
        return [b.keep_tokens for b in self.spec.blocks if b.keep_tokens is not None]


def load_deployable(source: str, *, keep_ratio: float | None = None, pretrained: bool = False,
                    checkpoint: str | None = None, strict_ratio: bool = True) -> Deployable:
    """The eval-mode module to export for ``source`` (artifact path, timm name or vitc config).

    ``keep_ratio`` re-materializes a token-selection artifact at another rho. For any other source it
    must be None or equal the ratio the artifact was materialized with (``strict_ratio``), or it is
    ignored (``strict_ratio=False``: verification passes the ONNX's ratio whatever the reference is).
    """
    from vitc.core.artifacts import load_artifact
    from vitc.core.models import is_artifact_path, resolve_model
    from vitc.methods import METHODS, plain_module

    if not is_artifact_path(source):
        if keep_ratio is not None and strict_ratio:
            raise UsageError("--keep-ratio applies to token-selection artifacts, not to model names")
        model, spec = resolve_model(source, pretrained=pretrained, checkpoint=checkpoint)
        return Deployable(model.eval(), spec, PLAIN, source)
    if pretrained or checkpoint:
        raise UsageError("--pretrained/--checkpoint apply to model names, not to artifact files")
    art = load_artifact(source)
    if not strict_ratio and keep_ratio is not None:
        takes_ratio = art.kind in METHODS and METHODS[art.kind].token_selection
        if not takes_ratio:
            keep_ratio = None
    model, spec, ratio = plain_module(art, keep_ratio)
    return Deployable(model, spec, art.kind, source, ratio, art.meta)
