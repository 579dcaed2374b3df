"""``vitc compress dynamicvit`` settings (one dataclass for the CLI, the pipeline YAML and the library), and
those of ``vitc import dynamicvit`` (an official checkpoint)."""

from __future__ import annotations

from dataclasses import dataclass

from vitc.core.errors import UsageError
from vitc.core.settings import Label, Settings, derive, setting
from vitc.core.validation import check_latency_file
from vitc.methods.dynamicvit import defaults as D
from vitc.train.settings import TrainSettings

_DynamicViTTrain = derive(
    TrainSettings, "_DynamicViTTrain",
    epochs={"default": D.EPOCHS, "help": "Training epochs (passes over the train split)."},
    batch_size={"default": D.BATCH_SIZE, "help": "Global batch (split across torchrun ranks)."},
    lr={"default": D.LR, "help": "Peak AdamW learning rate of the predictors (per-step cosine)."},
    warmup_epochs={"default": D.WARMUP_EPOCHS, "help": "Linear learning-rate warm-up, in epochs (official NeurIPS recipe: none)."},
    max_grad_norm=D.MAX_GRAD_NORM,
)


@dataclass(kw_only=True)
class DynamicViTSettings(_DynamicViTTrain):  # type: ignore[misc,valid-type]
    """DynamicViT: keep ratio, prediction sites, the frozen-backbone schedule and the loss weights."""

    keep_ratio: float | None = setting(None, min=0, max=1, min_open=True,
                                       help="rho in (0, 1]: stage s keeps floor(N*rho^s) of the N patch tokens [default: "
                                            f"{D.KEEP_RATIO:g}, or what --target-speedup picks].")
    stages: list[int] | None = setting(None, min=1, metavar="I,J,K",
                                       help="Block indices the predictors precede, strictly increasing in [1, depth-1] "
                                            "(default: depth/4, depth/2, 3*depth/4, i.e. 3,6,9 for 12 blocks).")
    freeze_epochs: int = setting(D.FREEZE_EPOCHS, min=0,
                                 help="Epochs with backbone learning rate 0 (then --backbone-lr-scale x the predictors').")
    backbone_lr_scale: float = setting(D.BACKBONE_LR_SCALE, min=0,
                                       help="Backbone learning rate as a fraction of the predictors' after the frozen "
                                            "epochs (official 0.01 for ~37k ImageNet steps; 0.1 here for short small-data runs).")
    ratio_weight: float = setting(D.RATIO_WEIGHT, min=0, help="Weight of the keep-ratio loss (paper: 2; DeiT-B recipe: 5).")
    kl_weight: float = setting(D.KL_WEIGHT, min=0, help="Weight of KL(teacher || student) on the logits (paper: 0.5).")
    token_weight: float = setting(D.TOKEN_WEIGHT, min=0,
                                  help="Weight of the token distillation MSE on kept, final-normed tokens (paper: 0.5).")
    token_score: str = setting(D.TOKEN_SCORE, choices=D.TOKEN_SCORES,
                               help="What inference ranks patch tokens by, recorded in the model: logodds = log p(keep) - "
                                    "log p(drop) (no float32 ties, so every backend keeps the same tokens) or keep = "
                                    "log p(keep), the official code's key (ties at 0.0 where the predictor saturates).")

    target_speedup: float | None = setting(None, min=1, min_open=True,
                                           help="Target speedup over the dense model on the profiled device: train at the "
                                                "largest keep ratio the --latency profile predicts to meet it (replaces "
                                                "--keep-ratio).")
    latency: str | None = setting(None, metavar="LATENCY.json", parse=check_latency_file,
                                  help="Latency profile of the original dense model from `vitc profile`, for --target-speedup.")

    def rules(self, label: Label) -> None:
        super().rules(label)
        _check_stages(self.stages, label)
        if self.target_speedup is not None and self.latency is None:
            raise UsageError(f"{label('target_speedup')} needs {label('latency')} LATENCY.json (measure one with "
                             "`vitc profile MODEL --backend ... -o LATENCY.json`)")
        if self.latency is not None and self.target_speedup is None:
            raise UsageError(f"{label('latency')} is read for {label('target_speedup')} only (it picks the keep ratio); "
                             f"give {label('target_speedup')} S, or leave {label('latency')} out")
        if self.target_speedup is not None and self.keep_ratio is not None:
            raise UsageError(f"give {label('keep_ratio')} or {label('target_speedup')}, not both (a target picks the keep "
                             "ratio its latency profile predicts to meet it)")
        if self.target_speedup is None and self.keep_ratio is None:
            self.keep_ratio = D.KEEP_RATIO  # the default; with a target, the compress step picks it

    @property
    def rho(self) -> float:
        """The keep ratio to plan with: ``keep_ratio`` when set (validated settings without a target always have
        one), else the default (a ``target_speedup`` run's own ratio is picked when it compresses)."""
        return self.keep_ratio if self.keep_ratio is not None else D.KEEP_RATIO


def _check_stages(stages: list[int] | None, label: Label) -> None:
    if stages is not None and any(b <= a for a, b in zip(stages, stages[1:])):
        raise UsageError(f"{label('stages')}: block indices must be strictly increasing, got {','.join(map(str, stages))}")


@dataclass(kw_only=True)
class OfficialImportSettings(Settings):
    """``vitc import dynamicvit``: what the official checkpoint does not say about itself."""

    model: str = setting(metavar="NAME",
                         help="timm name (or vitc config) of the backbone the checkpoint was trained from, e.g. "
                              "deit_small_patch16_224 (the official deit-s); its class count is taken from the checkpoint.")
    keep_ratio: float = setting(min=0, max=1, min_open=True,
                                help="rho the model runs at (the official --base_rate): stage s keeps floor(N*rho^s) of "
                                     "the N patch tokens, as the official int(196*rho^s).")
    stages: list[int] | None = setting(None, min=1, metavar="I,J,K",
                                       help="Blocks the predictors precede (the official pruning_loc), strictly increasing "
                                            "(default: depth/4, depth/2, 3*depth/4, i.e. the official 3,6,9 for 12 blocks).")
    token_score: str = setting("keep", choices=D.TOKEN_SCORES,
                               help="What the imported model ranks patch tokens by: keep = log p(keep), as the official "
                                    "code (reproduces its outputs), or logodds = log p(keep) - log p(drop), vitc's key "
                                    "(no float32 ties where the predictor saturates).")

    def rules(self, label: Label) -> None:
        _check_stages(self.stages, label)
