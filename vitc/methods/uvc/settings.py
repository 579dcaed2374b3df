"""``vitc compress uvc`` settings: one dataclass for the CLI, the pipeline YAML and the library.

``--preset`` (``small-data``, ``paper``, ``official-code``; :data:`vitc.methods.uvc.defaults.PRESETS`) sets
the defaults of the fields the user did not give, on the command line and in the YAML alike; the preset and
every effective value are recorded in the artifact's metadata and ``metrics.json``. What each preset means:
docs/methods.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from vitc.core.errors import UsageError
from vitc.core.settings import Label, derive, setting
from vitc.core.validation import check_latency_file
from vitc.methods.uvc.defaults import DEFAULTS as D
from vitc.methods.uvc.defaults import OFFICIAL as O
from vitc.methods.uvc.defaults import PRESETS
from vitc.train.settings import TrainSettings


def _official(key: str) -> str:
    value = O[key]
    return ",".join(f"{v:g}" for v in value) if isinstance(value, tuple) else f"{value:g}"


_UVCTrain = derive(
    TrainSettings, "_UVCTrain",
    epochs={"default": D["epochs"], "min": 1, "help": "Stage-1 (search) epochs, fixed-gate warm-up included."},
    batch_size={"default": D["batch_size"], "help": "Global batch (split across torchrun ranks), both stages."},
    lr={"default": D["lr"], "help": "Stage-1 peak AdamW learning rate of the weights (per-step cosine; official 1e-4 for DeiT)."},
    min_lr=D["min_lr"],
    weight_decay=D["weight_decay"],
    warmup_epochs={"default": D["warmup_epochs"], "help": "Stage-1 linear lr warm-up, in epochs."},
    label_smoothing=D["label_smoothing"],
    max_grad_norm={"default": D["max_grad_norm"],
                   "help": "Clip the global L2 gradient norm of both stages to this value before each optimiser "
                           "step (the gate step reads the clipped gate gradient), as the official code does; 0 = no clipping."},
)


@dataclass(kw_only=True)
class UVCSettings(_UVCTrain):  # type: ignore[misc,valid-type]
    """UVC: the budget (MACs, or latency from a profile), the stage-1 search and the stage-2 fine-tuning (weights'
    optimiser inherited)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = PRESETS

    budget: float | None = setting(None, min=0, max=1, min_open=True,
                                   help="Target MACs as a fraction of the dense model's, in (0, 1] (e.g. 0.5).")
    latency_budget: float | None = setting(None, min=0, max=1, min_open=True,
                                           help="Target latency as a fraction of the dense model's measured latency on the "
                                                "--latency profile, in (0, 1] (e.g. 0.5).")
    target_speedup: float | None = setting(None, min=1, min_open=True,
                                           help="Target speedup over the dense model on the profiled device, e.g. 2: the "
                                                "search drives the predicted latency of --latency to 1/S of dense (sets "
                                                "the budget to 1/S; give this or --budget).")
    latency: str | None = setting(None, metavar="LATENCY.json", parse=check_latency_file,
                                  help="Latency profile of the dense model from `vitc profile` (backend, device, precision, "
                                       "batch): the resource R becomes its predicted latency fraction instead of MACs.")
    preset: str = setting("small-data", choices=tuple(PRESETS),
                          help="Defaults to start from: small-data (sized for small data sets), paper (the paper's "
                               "intent at ImageNet scale) or official-code (the released code to the letter, its quirks "
                               "included). Options given explicitly always win.")
    land: bool = setting(True, help="Before fine-tuning, give back removed heads/MLP neurons (most important first, by "
                                    "UVC's own weight-norm ranking) until R lands in [0.95, 1] x budget; whole-block "
                                    "skips otherwise leave it far under (vitc's addition; --no-land hands over the "
                                    "search's state as it is).")
    prune_v: bool = setting(False, help="Also learn V-channel counts inside heads. timm's Attention needs V as wide as "
                                        "Q/K, so the materialized model keeps alive heads' full V and leaves the pruned "
                                        "channels' attn.proj columns at zero: it exports, but does not realise the "
                                        "V-channel MACs the budget counted.")
    finetune_epochs: int = setting(D["finetune_epochs"], min=0,
                                   help="Stage-2 epochs: KD fine-tuning with hard gates and masks re-applied every step.")
    finetune_lr: float = setting(D["finetune_lr"], min=0, min_open=True, help="Stage-2 peak AdamW learning rate.")
    finetune_warmup_epochs: float = setting(D["finetune_warmup_epochs"], min=0, help="Stage-2 linear lr warm-up, in epochs.")
    finetune_min_lr: float | None = setting(D["finetune_min_lr"], min=0,
                                            help="Stage-2 learning rate at the end of its cosine (default: --min-lr; "
                                                 "the official stages end at 0 and 1e-5).")
    kd_alpha: float = setting(D["kd_alpha"], min=0, max=1,
                              help="Weight of the KD term: (1-a)*CE + a*KL(student/T || dense teacher/T)*T^2/numel.")
    kd_tau: float = setting(D["kd_tau"], min=0, min_open=True, help="KD temperature T.")
    gate_warmup_epochs: int = setting(D["gate_warmup_epochs"], min=0,
                                      help="First search epochs with gates fixed at 0.5/0.5 and no count/dual updates "
                                           f"(official {_official('gate_warmup_epochs')} of 30).")
    z_lr_schedule: tuple[float, ...] = setting(D["z_lr_schedule"], min=0, metavar="V1,V2,...",
                                               help="Budget-dual step size eta_z per step, one value per equal slice of "
                                                    "the search epochs (paper's rising schedule; official "
                                                    f"{_official('z_lr_schedule')}, scaled x10 here for short epochs).")
    count_lr: float = setting(D["count_lr"], min=0,
                              help="SGD step of the head/neuron (and V-channel) counts per step, after inf-norm "
                                   f"clipping to 1 (official {_official('count_lr')}).")
    dual_lr: float = setting(D["dual_lr"], min=0,
                             help=f"Ascent step of the group-sparsity duals y, p per step (official {_official('dual_lr')}).")
    gate_lr: float = setting(D["gate_lr"], min=0,
                             help=f"SGD (momentum 0.9) learning rate of the skip-gate logits (official {_official('gate_lr')}).")
    gate_interval: int = setting(D["gate_interval"], min=1,
                                 help="Optimizer steps between gate updates "
                                      f"(official {_official('gate_interval')} for ~5,000 steps/epoch).")
    gate_weight: float = setting(D["gate_weight"], min=0,
                                 help=f"Weight of z * dR/dtheta in the gate gradient (official {_official('gate_weight')}).")
    z_grad_clip: float = setting(D["z_grad_clip"], min=0,
                                 help="R - budget is clipped to +-this before differentiating (no budget gradient beyond it).")
    z_lr_dynamic: bool = setting(D["z_lr_dynamic"],
                                 help="Raise eta_z through --z-lr-schedule (the paper's intent); off, eta_z stays at the "
                                      "schedule's first value, as in the released code whose scheduler never fires.")
    pin_at_upper_bound: bool = setting(D["pin_at_upper_bound"],
                                       help="Official projection quirk: a count that reaches its upper bound ub-1 is reset "
                                            "there after every step and can never decrease (default: project onto [0, ub-1]).")
    decay_all_params: bool = setting(D["decay_all_params"],
                                     help="Official quirk: stage-1 AdamW weight decay on every parameter, biases, norms, "
                                          "tokens and gate logits included (default: timm's rule, none on those; stage 2 "
                                          "always uses timm's rule, as the official post-training does).")

    def rules(self, label: Label) -> None:
        super().rules(label)
        given = [n for n in ("budget", "latency_budget", "target_speedup") if getattr(self, n) is not None]
        if len(given) > 1:
            raise UsageError(f"give {label(given[0])} or {label(given[1])}, not both (a target S is a latency budget of "
                             "1/S of the dense latency)")
        if self.budget is not None and self.latency is not None:
            raise UsageError(f"{label('budget')} is a MACs fraction; with {label('latency')} give {label('latency_budget')} "
                             f"(a fraction of the dense model's measured latency) or {label('target_speedup')}")
        for name in ("target_speedup", "latency_budget"):
            if getattr(self, name) is not None and self.latency is None:
                raise UsageError(f"{label(name)} needs {label('latency')} LATENCY.json (measure one with "
                                 "`vitc profile MODEL --backend ... -o LATENCY.json`)")
        if not given:
            raise UsageError(f"give {label('budget')} (a MACs fraction, e.g. 0.5), or {label('target_speedup')} or "
                             f"{label('latency_budget')} with {label('latency')}")
        if self.epochs <= self.gate_warmup_epochs:
            raise UsageError(f"{label('epochs')} ({self.epochs}) must exceed {label('gate_warmup_epochs')} "
                             f"({self.gate_warmup_epochs}): the search needs at least one epoch with learned gates")
        if not self.z_lr_schedule:
            raise UsageError(f"{label('z_lr_schedule')} needs one or more values >= 0")
        if self.finetune_lr < self.finetune_floor:
            which = "finetune_min_lr" if self.finetune_min_lr is not None else "min_lr"
            raise UsageError(f"{label('finetune_lr')} ({self.finetune_lr:g}) must not be below {label(which)} "
                             f"({self.finetune_floor:g})")

    @property
    def resource_budget(self) -> float:
        """The budget R is driven to: 1/--target-speedup, --latency-budget or --budget (validated settings have one)."""
        if self.target_speedup is not None:
            return 1 / self.target_speedup
        value = self.latency_budget if self.latency_budget is not None else self.budget
        if value is None:
            raise UsageError("UVC settings without a budget: validate them first")
        return value

    @property
    def resource_name(self) -> str:
        """What the budget is a fraction of: ``"macs"`` or ``"latency"`` (a ``vitc profile`` model)."""
        return "latency" if self.latency else "macs"

    @property
    def optimizes_v(self) -> bool:
        """V-channel counts are learned (``--prune-v``)."""
        return self.prune_v

    def search_loop(self) -> TrainSettings:
        return self.loop()

    @property
    def finetune_floor(self) -> float:
        """Stage 2's final learning rate: ``finetune_min_lr``, or ``min_lr`` when that is not given."""
        return self.finetune_min_lr if self.finetune_min_lr is not None else self.min_lr

    def finetune_loop(self) -> TrainSettings:
        return self.loop(epochs=self.finetune_epochs, lr=self.finetune_lr, warmup_epochs=self.finetune_warmup_epochs,
                         min_lr=self.finetune_floor)
