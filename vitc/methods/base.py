"""What a compression method is to the rest of vitc: one object per artifact kind.

A method owns its settings (one dataclass: the CLI's ``vitc compress KIND`` options and the pipeline's
``KIND:`` section derive from it), its compression step, how its artifact loads as an evaluable model,
and how it materializes into a plain timm ViT. Everything outside ``vitc.methods`` reaches a method
through :data:`vitc.methods.METHODS`; nothing else switches on a kind string.

Adding a method: a sub-package of ``vitc.methods`` with a :class:`Method` subclass, and one line in
``vitc/methods/__init__.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from torch import nn

    from vitc.core.artifacts import Artifact
    from vitc.core.spec import ViTSpec


def ratio_tag(value: float) -> str:
    """A file/folder name part for a ratio: two decimals (``0.70``), more when two would round (``0.701``),
    so two different ratios never share a name."""
    text = f"{value:.2f}"
    return text if float(text) == value else f"{value:.6g}"


@dataclass
class Materialized:
    """A plain timm ViT made from a compressed artifact, with what ``vitc materialize`` reports about it."""

    model: nn.Module
    spec: ViTSpec
    keep_ratio: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # recorded in the written artifact
    report: dict[str, Any] = field(default_factory=dict)  # e.g. the sliced-vs-masked check


class Method(ABC):
    """A compression method. Subclasses set the class attributes and implement the four hooks."""

    kind: ClassVar[str]  # the artifact kind this method writes (its registry key)
    title: ClassVar[str]  # how people and reports name it
    summary: ClassVar[str]  # one line for listings (`vitc compress --help`)
    settings: ClassVar[type]  # the compress step's settings dataclass
    sweep: ClassVar[str | None] = None  # a field the pipeline YAML may list several values of ("budget" → "budgets")
    name_field: ClassVar[str] = "seed"  # the settings field that names a run in a pipeline (its folder)
    parent: ClassVar[str | None] = None  # the kind of the method whose output this one compresses further
    parent_key: ClassVar[str | None] = None  # the pipeline key choosing that parent run (its sweep value)
    token_selection: ClassVar[bool] = False  # True: materialized once per keep ratio
    input_help: ClassVar[str] = "MODEL is a timm name (with --pretrained/--checkpoint), a vitc config or a dense artifact."

    @abstractmethod
    def compress(self, model: str, data: str, out: Path, settings: Any, *, pretrained: bool = False,
                 checkpoint: str | None = None, resume: bool = False) -> dict[str, Any] | None:
        """Write ``out/compressed.safetensors`` and ``out/metrics.json``; return a summary (None off rank 0)."""

    @abstractmethod
    def load(self, art: Artifact) -> nn.Module:
        """The evaluable model of a compressed artifact (what ``vitc eval`` measures), in eval mode."""

    @abstractmethod
    def materialize(self, art: Artifact, keep_ratio: float | None = None) -> Materialized:
        """A physically smaller plain timm ViT (at ``keep_ratio`` for token-selection methods)."""

    def trained_keep_ratio(self, art: Artifact) -> float | None:
        """The keep ratio the artifact was trained at (token-selection methods)."""
        value = art.meta.get("keep_ratio")
        return float(value) if isinstance(value, (int, float)) else None

    def keep_ratio_for_speedup(self, art: Artifact, latency: Any, target: float) -> dict[str, Any]:
        """Token-selection methods: the keep ratio whose predicted speedup (``latency``: a
        :class:`vitc.core.latency.LatencyModel`) meets ``target``; ``{"keep_ratio", "predicted_speedup", ...}``."""
        from vitc.core.errors import UsageError

        raise UsageError(f"--target-speedup picks a keep ratio, and {art.path} is a {self.title} model without token "
                         f"selection (size it with `vitc compress {self.kind} --target-speedup`)")

    def resolve(self, settings: Any, spec: ViTSpec, name: str = "", origin: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """The concrete settings a run trains with — a speed target turned into its concrete value on ``spec`` (the
        model the run starts from) and its latency profile — as a copy, and the choice made (empty when nothing was
        chosen). The one place a method resolves a target; the caller's validated settings are never rewritten."""
        return settings, {}

    def check_target(self, settings: Any, spec: ViTSpec, latency: Any, label: Any) -> None:  # noqa: B027 (optional hook)
        """Refuse, before any training, a budget or speed target this method cannot reach on ``spec`` (the dense
        model it starts from) by ``latency`` (a :class:`vitc.core.latency.LatencyModel`, or None); ``label`` names
        the settings fields (a CLI flag or a YAML key). The default accepts everything."""

    def trial_settings(self, **values: Any) -> Any:
        """The settings of a short try (``vitc tune``): ``values`` (target_speedup, latency, epochs, finetune_epochs,
        batch_size, lr, seed, device; None = the method's default) where this method's settings have the field;
        a method adds what makes a few epochs enough (UVC: a fast search)."""
        import dataclasses

        names = {f.name for f in dataclasses.fields(self.settings)}
        cls: Any = self.settings
        return cls.with_options(**{k: v for k, v in values.items() if k in names and v is not None})

    def effective_spec(self, path: str | Path) -> ViTSpec | None:
        """The architecture the artifact really computes, when its spec describes something larger
        (UVC's masked dense model); None when the spec already is it."""
        return None

    def describe(self, result: dict[str, Any]) -> str:
        """The human-readable summary of a compress result."""
        return "\n".join(f"{k}: {v}" for k, v in result.items())

    def variant_value(self, settings: Any) -> Any:
        """The value that names a pipeline run (its ``name_field``)."""
        return getattr(settings, self.name_field)

    def run_name(self, settings: Any, parent: str | None = None) -> str:
        """The pipeline folder of one run: ``uvc-0.50``, ``dynamicvit-0.70`` (``parent``: the run it builds on)."""
        value = self.variant_value(settings)
        return f"{self.kind}-{ratio_tag(value) if isinstance(value, float) else value}"

    def variant_name(self, settings: Any, keep_ratio: float | None, parent: str | None = None) -> str:
        """The report's name of one materialized model of a run."""
        return self.run_name(settings) if keep_ratio is None else f"{self.kind}-keep{ratio_tag(keep_ratio)}"
