"""Settings of ``vitc train`` — and of the optimiser every training step shares (the methods derive theirs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vitc.core.device import DEVICE_HELP, check_device_name
from vitc.core.errors import UsageError
from vitc.core.settings import Label, Settings, setting
from vitc.train import defaults as D


@dataclass(kw_only=True)
class TrainSettings(Settings):
    """Optimisation settings of the shared loop. ``batch_size`` is the global batch (split evenly across ranks)."""

    epochs: int = setting(D.EPOCHS, help="Passes over the training split.", min=0)
    batch_size: int = setting(D.BATCH_SIZE, help="Global batch in images (split evenly across torchrun ranks).", min=1)
    lr: float = setting(D.LR, min=0, min_open=True,
                        help="Peak AdamW learning rate (per-step cosine after a linear warm-up; the default is for "
                             "training from scratch — fine-tuning pretrained weights wants ~5e-4 x batch/512).")
    min_lr: float = setting(D.MIN_LR, help="Learning rate at the end of the cosine schedule.", min=0)
    weight_decay: float = setting(D.WEIGHT_DECAY, min=0,
                                  help="AdamW decoupled weight decay (not applied to biases, norms, tokens, position embeddings).")
    warmup_epochs: float = setting(D.WARMUP_EPOCHS, min=0,
                                   help="Linear learning-rate warm-up, in epochs (fractions allowed). From scratch, a short "
                                        "one can leave the model at chance for many epochs (see vitc/train/defaults.py).")
    label_smoothing: float = setting(D.LABEL_SMOOTHING, min=0, max=1, max_open=True,
                                     help="Label smoothing of the cross-entropy, in [0, 1).")
    max_grad_norm: float | None = setting(None, min=0, none_at_zero=True,
                                          help="Clip the global L2 gradient norm to this value; 0 = no clipping.")
    seed: int = setting(0, min=0, help="Random seed (initial weights, data order, augmentation, dropout).")
    deterministic: bool = setting(False, help="Deterministic algorithms (bit-exact resume tests).")
    amp: bool = setting(True, help="Mixed precision (fp16 autocast with a gradient scaler) on CUDA; no effect on CPU.")
    device: str = setting("auto", help=DEVICE_HELP, parse=check_device_name)

    def rules(self, label: Label) -> None:
        if self.min_lr > self.lr:
            raise UsageError(f"{label('min_lr')} ({self.min_lr:g}) must not exceed {label('lr')} ({self.lr:g})")

    def loop(self, **changes: Any) -> TrainSettings:
        """The plain loop settings (a :class:`TrainSettings`, not a subclass) with ``changes``."""
        from dataclasses import fields

        values = {f.name: getattr(self, f.name) for f in fields(TrainSettings)}
        return TrainSettings(**{**values, **changes})
