"""UVC (Yu et al., ICLR 2022): structured pruning of heads and MLP neurons plus Gumbel skip gates on whole
blocks, under a MACs budget enforced by a primal–dual loop; knowledge distillation from the dense model.

Modules: ``settings``/``defaults`` (options and presets, torch-free), ``model`` (gates, ranking, masks),
``resource`` (R), ``objectives`` (the two training stages), ``slice`` (materialization), ``compress``
(the step and the artifact).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from vitc.methods.base import Materialized, Method, ratio_tag
from vitc.methods.uvc.settings import UVCSettings

if TYPE_CHECKING:
    from torch import nn

    from vitc.core.artifacts import Artifact
    from vitc.core.spec import ViTSpec

SLICE_ATOL = 1e-4  # sliced vs masked model, max abs logit difference
# what a materialized model keeps of its UVC artifact's record: the budget asked and reached, and with a latency
# profile the target and the predicted speedup (the pipeline report shows them beside the measured one)
_INHERITED = ("budget", "resource", "resource_kind", "budget_asked", "budget_reached", "target_speedup", "predicted_speedup",
              "latency", "latency_target")


class UVC(Method):
    """Stage 1 searches per-block counts of heads and MLP neurons (weight-norm ranked), Gumbel skip gates
    and duals under R <= budget, distilling from the dense model; the state whose hard-gated MACs ratio
    meets the budget most closely is fine-tuned in stage 2. Writes OUT/compressed.safetensors (`vitc eval`
    runs it masked; `vitc materialize` slices it) and OUT/metrics.json (per epoch: loss terms, R, z, kept
    blocks/heads/neurons, val top-1, stage).
    """

    kind = "uvc"
    title = "UVC"
    summary = "prune heads and MLP neurons and skip whole blocks down to a MACs budget"
    settings = UVCSettings
    sweep = "budget"
    name_field = "budget"

    def compress(self, model: str, data: str, out: Path, settings: Any, *, pretrained: bool = False,
                 checkpoint: str | None = None, resume: bool = False) -> dict[str, Any] | None:
        from vitc.methods.uvc.compress import compress_uvc

        return compress_uvc(model, data, out, settings, pretrained=pretrained, checkpoint=checkpoint, resume=resume)

    def load(self, art: Artifact) -> nn.Module:
        from vitc.methods.uvc.compress import model_from_artifact

        return model_from_artifact(art)

    def materialize(self, art: Artifact, keep_ratio: float | None = None) -> Materialized:
        from vitc.methods.uvc.compress import materialize_uvc

        model, spec, check = materialize_uvc(art, atol=SLICE_ATOL)
        return Materialized(model, spec, meta={k: art.meta[k] for k in _INHERITED if k in art.meta},
                            report={"max_abs_diff": check["max_abs_diff"], "atol": SLICE_ATOL, "blocks_kept": spec.depth})

    def effective_spec(self, path: str | Path) -> ViTSpec | None:
        """The sliced architecture: kept blocks, with their alive heads and MLP neurons."""
        from vitc.core.artifacts import load_artifact
        from vitc.methods.uvc.compress import gates_and_masks
        from vitc.methods.uvc.slice import sliced_spec

        art = load_artifact(path)
        gates, masks = gates_and_masks(art)
        return sliced_spec(art.spec, masks, (gates[:, 1] > gates[:, 0]).tolist())

    # a search that reaches its budget in a few epochs (benchmarks/shapes.py's short DeiT-S search): no gate warm-up,
    # a steep budget dual and a fast gate; the fine-tuning stage recovers the accuracy
    FAST_SEARCH: ClassVar[dict[str, Any]] = {"gate_warmup_epochs": 0, "z_lr_schedule": (2000.0,), "gate_lr": 5.0,
                                              "gate_interval": 1}

    def check_target(self, settings: Any, spec: ViTSpec, latency: Any, label: Any) -> None:
        """A budget or target beyond the fastest model UVC can make (one block, one head, one MLP neuron)."""
        from vitc.methods.uvc.resource import LatencyResource, ResourceModel, check_reachable

        resource = LatencyResource(spec, latency) if latency is not None else ResourceModel(spec)
        check_reachable(resource, spec, settings.resource_budget, settings.target_speedup, settings.optimizes_v, label)

    def trial_settings(self, **values: Any) -> Any:
        """A short try: the fast search (:attr:`FAST_SEARCH`) with ``values`` on top."""
        return super().trial_settings(**{**self.FAST_SEARCH, **values})

    def variant_value(self, settings: Any) -> Any:
        """The MACs budget; ``x2.00`` for a speedup target and ``lat0.50`` for a latency budget, so a pipeline never
        mistakes one for a MACs budget of the same number."""
        if settings.latency is not None:
            return self.run_name(settings).removeprefix(f"{self.kind}-")
        return settings.budget

    def run_name(self, settings: Any, parent: str | None = None) -> str:
        """``uvc-0.50`` for a MACs budget, ``uvc-x2.00`` for a speedup target, ``uvc-lat0.50`` for a latency budget."""
        if settings.target_speedup is not None:
            return f"{self.kind}-x{ratio_tag(settings.target_speedup)}"
        if settings.latency is not None:
            return f"{self.kind}-lat{ratio_tag(settings.resource_budget)}"
        return super().run_name(settings, parent)

    def describe(self, r: dict[str, Any]) -> str:
        heads = "/".join(str(h) if g else "-" for h, g in zip(r["heads_kept"], r["gates"]))
        top1 = f"{r['val_top1']:.2f}%" if r.get("val_top1") is not None else "-"
        when = f"epoch {r['picked_epoch']}" + (f" step {r['picked_step']}" if r.get("picked_step") else " end")
        return (
            f"wrote {r['artifact']}\n"
            f"MACs {r['macs_compressed'] / r['macs_dense']:.3f}x dense; {r.get('resource_kind', 'macs')} budget "
            f"{r['budget']:g}, reached {r.get('budget_reached', r['resource']):.3f} (search state of {when}"
            f"{', units given back' if r.get('landing') and r['landing']['resource'] != r['landing']['resource_before'] else ''})\n"
            + (f"predicted speedup {r['predicted_speedup']:.2f}x (target {r['target_speedup']:g}x)\n"
               if r.get("predicted_speedup") and r.get("target_speedup") else "")
            + f"blocks kept {r['blocks_kept']}/{len(r['gates'])}  heads per block {heads}  "
            f"neurons kept {sum(n for n, g in zip(r['neurons_kept'], r['gates']) if g)}\n"
            f"val top-1 {top1}  ({r['seconds']:.1f}s)"
        )
