"""UVC defaults, importable without torch (the CLI's ``--help`` reads them).

``OFFICIAL``: the stage-1 constants of the released DeiT-T run (``run_uvc_train.sh``). ``DEFAULTS``: what
``vitc compress uvc`` uses (the ``small-data`` preset, sized for vit-micro on digits: ``gate_interval``,
``z_lr_schedule`` and ``dual_lr`` rescaled for ~20 steps per epoch and small weight norms). ``PRESETS``:
``--preset`` ``small-data``, ``paper`` and ``official-code``. Why each value, and what no preset reproduces:
docs/methods.md ("Presets and the small-data constants"); the measurements: benchmarks/README.md.
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
    "max_grad_norm": 1.0,
    "finetune_min_lr": None,  # None: stage 2 decays to min_lr too
}

# The ImageNet recipe of the released DeiT-T run: stage 1 from ``run_uvc_train.sh`` and its log (2 GPUs x 128,
# ~5,000 steps per epoch, AdamW lr 1e-4 with 500 warm-up steps ~ 0.1 epoch, cosine to 0), stage 2 from
# ``run_post_train.sh`` (120 epochs, lr 1e-4 x 256/512 = 5e-5, 5 warm-up epochs, min lr 1e-5, KD alpha 0.1).
# V-channel counts are learned; every gradient is clipped at norm 1 in both stages.
_IMAGENET: dict[str, Any] = {
    **OFFICIAL,
    "epochs": 30,
    "batch_size": 256,
    "lr": 1e-4,
    "warmup_epochs": 0.1,
    "min_lr": 0.0,
    "finetune_epochs": 120,
    "finetune_lr": 5e-5,
    "finetune_warmup_epochs": 5.0,
    "finetune_min_lr": 1e-5,
    "weight_decay": 0.05,
    "prune_v": True,
    "max_grad_norm": 1.0,
}

#: ``--preset NAME``: defaults for the fields a user does not give (see :mod:`vitc.methods.uvc.settings`).
PRESETS: dict[str, dict[str, Any]] = {
    "small-data": {},
    "paper": {**_IMAGENET, "z_lr_dynamic": True, "pin_at_upper_bound": False, "decay_all_params": False},
    "official-code": {**_IMAGENET, "z_lr_dynamic": False, "pin_at_upper_bound": True, "decay_all_params": True,
                      "land": False},  # the released code fine-tunes the checkpoint it picked, as it is
}
