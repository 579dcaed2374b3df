"""UVC defaults, importable without torch (the CLI's ``--help`` reads them).

``OFFICIAL``: the stage-1 constants of the released code (``run_uvc_train.sh``: DeiT-T, 30 ImageNet
epochs of ~5,000 steps at batch 256, 5 warm-up epochs with fixed gates).

``DEFAULTS``: what ``vitc compress uvc`` uses, sized for vit-micro on digits (22 steps per epoch at
batch 64) so that search + fine-tune finish in well under 15 minutes on 2 CPU cores. UVC's update
rules are unchanged; three constants are rescaled because they are tied to the number of steps
and to the scale of the weights:

* ``gate_interval`` 50 → 5: ~4 gate updates per epoch instead of less than one. (The gradient is
  accumulated with weight (step mod interval) and averaged, so a gate's movement per epoch is
  roughly independent of the interval; only the granularity changes.)
* ``z_lr_schedule`` x10 (10, 50, 90, 130, 170): z grows by η_z·(R - B) per step, so ~5,000
  increments per epoch in the official run and 22 here. The gates' budget gradient
  z·gate_weight·∂R/∂θ overtakes their task gradient only once z is in the thousands (~4,000
  measured on digits); x10 gets there about half-way through a 30-epoch search, the official
  values (z ~2,400 after 30 epochs of 22 steps) not within the run.
* ``dual_lr`` 1e-4 → 1.0: the push-back on a count is y·v_{k+1} with y += dual_lr·LS. Both LS and
  v are *squared* group norms, so at equal dual_lr the push-back scales with (norm²)²: DeiT-T
  heads have squared norms ~21 (comment in the official ``yloss``), a digits vit-micro's ~0.7, a
  factor (21/0.7)² ≈ 900 from the norms alone; the remaining ~10x was set on digits. With 0.1, z
  empties every block down to one head (20 % val top-1 before fine-tuning); with 1.0 the widths
  barely move and the budget is met by skipping blocks, as in the official runs.
* official values for ``count_lr``, ``gate_lr``, ``gate_weight``, ``z_grad_clip`` and KD; the
  fixed-gate warm-up is 3 of 30 epochs (official 5 of 30). The weight lr is ~1/10 of the
  baseline's training lr, as 1e-4 is for DeiT; stage 2 uses a larger lr over 60 epochs to recover
  the removed blocks.
* every gradient is clipped at norm 1.0 in both stages, as both official stages do
  (``joint_train.py``, ``post_train.py``); ``--max-grad-norm 0`` turns it off.
"""

from typing import Any

OFFICIAL: dict[str, Any] = {
    "gate_warmup_epochs": 5,
    "kd_alpha": 0.1,
    "kd_tau": 1.0,
    "z_lr_schedule": (1.0, 5.0, 9.0, 13.0, 17.0),
    "count_lr": 0.02,
    "dual_lr": 1e-4,
    "gate_lr": 0.1,
    "gate_interval": 50,
    "gate_weight": 5e-4,
    "z_grad_clip": 0.5,
}

DEFAULTS: dict[str, Any] = {
    "epochs": 30,
    "finetune_epochs": 60,
    "batch_size": 64,
    "lr": 2e-4,
    "finetune_lr": 5e-4,
    "weight_decay": 0.05,
    "warmup_epochs": 1.0,
    "finetune_warmup_epochs": 2.0,
    "label_smoothing": 0.1,
    "min_lr": 1e-5,
    "gate_warmup_epochs": 3,
    "kd_alpha": 0.1,
    "kd_tau": 1.0,
    "z_lr_schedule": (10.0, 50.0, 90.0, 130.0, 170.0),
    "count_lr": 0.02,
    "dual_lr": 1.0,
    "gate_lr": 0.1,
    "gate_interval": 5,
    "gate_weight": 5e-4,
    "z_grad_clip": 0.5,
    "z_lr_dynamic": True,
    "pin_at_upper_bound": False,
    "decay_all_params": False,
    "max_grad_norm": None,
}

# The ImageNet recipe of the released DeiT-T run: stage 1 from ``run_uvc_train.sh`` and its log (2 GPUs x 128,
# ~5,000 steps per epoch, AdamW lr 1e-4 with 500 warm-up steps ~ 0.1 epoch), stage 2 from ``run_post_train.sh``
# (120 epochs, lr 5e-5 after the batch scaling, 5 warm-up epochs, KD alpha 0.1). V-channel counts are learned.
_IMAGENET: dict[str, Any] = {
    **OFFICIAL,
    "epochs": 30,
    "batch_size": 256,
    "lr": 1e-4,
    "warmup_epochs": 0.1,
    "finetune_epochs": 120,
    "finetune_lr": 5e-5,
    "finetune_warmup_epochs": 5.0,
    "weight_decay": 0.05,
    "min_lr": 1e-5,
    "prune_v": True,
    "max_grad_norm": 1.0,
}

#: ``--preset NAME``: defaults for the fields a user does not give (see :mod:`vitc.methods.uvc.settings`).
PRESETS: dict[str, dict[str, Any]] = {
    "small-data": {},
    "paper": {**_IMAGENET, "z_lr_dynamic": True, "pin_at_upper_bound": False, "decay_all_params": False},
    "official-code": {**_IMAGENET, "z_lr_dynamic": False, "pin_at_upper_bound": True, "decay_all_params": True},
}
