"""DynamicViT (Rao et al., NeurIPS 2021): learned token sparsification with prediction modules between
blocks; static per-stage token counts floor(N·ρ^s) at inference (TopK + gather).

Modules: ``settings``/``defaults`` (options, torch-free), ``forward`` (the masked training forward and
the gathered inference forward), ``compress`` (losses, the objective, the step, the artifact).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitc.methods.base import Materialized, Method, ratio_tag
from vitc.methods.dynamicvit.settings import DynamicViTSettings

if TYPE_CHECKING:
    from torch import nn

    from vitc.core.artifacts import Artifact


class DynamicViT(Method):
    """Loss CE + 0.5 KL(teacher||student) + 0.5 token distillation + ratio loss against rho^s; the teacher
    is the frozen dense model. Writes OUT/compressed.safetensors (`vitc eval` runs it at the trained
    ratio; `vitc materialize --keep-ratios` fixes other ratios) and OUT/metrics.json (per epoch: each loss
    term, kept fraction per stage, val top-1 of the inference path).
    """

    kind = "dynamicvit"
    title = "DynamicViT"
    summary = "train token-keep predictors; keep floor(N*rho^s) patch tokens at stage s"
    settings = DynamicViTSettings
    token_selection = True
    name_field = "keep_ratio"

    def keep_ratio_for_speedup(self, art: Artifact, latency: Any, target: float) -> dict[str, Any]:
        from vitc.methods.dynamicvit.compress import keep_ratio_for_speedup, stage_blocks

        root = art.meta.get("origin")
        if isinstance(root, dict):  # the profile must be of the dense model the artifact was compressed from
            return keep_ratio_for_speedup(art.spec, stage_blocks(art.spec), latency, target, str(art.path), root)
        return keep_ratio_for_speedup(art.spec, stage_blocks(art.spec), latency, target, str(art.path),
                                      dense=self.parent is None)  # without a record: its backbone is that model

    def check_target(self, settings: Any, spec: Any, latency: Any, label: Any) -> None:
        """A speed target no keep ratio reaches on the dense model's backbone (one token per stage at the least)."""
        from vitc.core.errors import UsageError
        from vitc.methods.dynamicvit.compress import keep_ratio_for_speedup, resolve_stages

        if settings.target_speedup is None or latency is None:
            return
        try:
            keep_ratio_for_speedup(spec, resolve_stages(spec, settings.stages), latency, settings.target_speedup, spec.name,
                                   dense=True)
        except UsageError as e:
            raise UsageError(f"{label('target_speedup')}: {e}") from None

    def trial_settings(self, **values: Any) -> Any:
        """A short try: the backbone frozen for the first half of its epochs at most (the default 5 of 30)."""
        from vitc.methods.dynamicvit import defaults as D

        epochs = values.get("epochs") or D.EPOCHS
        return super().trial_settings(**{"freeze_epochs": min(D.FREEZE_EPOCHS, epochs // 2), **values})

    def compress(self, model: str, data: str, out: Path, settings: Any, *, pretrained: bool = False,
                 checkpoint: str | None = None, resume: bool = False) -> dict[str, Any] | None:
        from vitc.methods.dynamicvit.compress import compress_dynamicvit

        return compress_dynamicvit(model, data, out, settings, pretrained=pretrained, checkpoint=checkpoint,
                                   resume=resume)

    def variant_value(self, settings: Any) -> Any:
        """The keep ratio; ``x1.50`` for a speed target (its ratio is picked when it compresses, on its profile)."""
        return f"x{ratio_tag(settings.target_speedup)}" if settings.target_speedup is not None else settings.rho

    def resolve(self, settings: Any, spec: Any, name: str = "", origin: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """The concrete settings a run trains with (stages placed, a target's keep ratio picked), as a copy, and the
        choice made: :func:`vitc.methods.dynamicvit.compress.resolve_run`."""
        from vitc.methods.dynamicvit.compress import resolve_run

        return resolve_run(settings, spec, name or spec.name, origin)

    def load(self, art: Artifact) -> nn.Module:
        from vitc.methods.dynamicvit.compress import model_from_artifact

        return model_from_artifact(art)

    def materialize(self, art: Artifact, keep_ratio: float | None = None) -> Materialized:
        from vitc.methods.dynamicvit.compress import materialize_ratio

        ratio = keep_ratio if keep_ratio is not None else self.trained_keep_ratio(art)
        if ratio is None:
            from vitc.core.errors import UsageError

            raise UsageError(f"{art.path} records no trained keep ratio; give --keep-ratios")
        model, spec = materialize_ratio(art, ratio)
        return Materialized(model, spec, keep_ratio=ratio, meta={"keep_ratio": ratio})

    def describe(self, r: dict[str, Any]) -> str:
        return f"{self._tokens_line(r)}\n{self._training_line(r)}  MACs {r['macs'] / r['dense_macs']:.3f}x dense  ({r['seconds']:.1f}s)"

    @staticmethod
    def _tokens_line(r: dict[str, Any]) -> str:
        return (f"wrote {r['artifact']}  keep ratio {r['keep_ratio']:g}: tokens {'/'.join(map(str, r['keep_tokens']))} "
                f"before blocks {','.join(map(str, r['stages']))}")

    @staticmethod
    def _training_line(r: dict[str, Any]) -> str:
        kept = "/".join(f"{f:.3f}" if f is not None else "-" for f in r["kept_fraction"])
        top1 = f"{r['val_top1']:.2f}%" if r["val_top1"] is not None else "-"
        return f"val top-1 {top1}  kept fraction (train) {kept}"
