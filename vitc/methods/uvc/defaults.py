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
* every gradient is clipped at global L2 norm 1.0 in both stages, as both official stages do
  (``joint_train.py`` and ``post_train.py`` call ``clip_grad_norm_(model.parameters(),
  max_grad_norm=1.0)`` after ``backward`` and before ``optimizer.step()``). The clip covers the gate
  logits, and the gate step reads their gradient afterwards (the official ``uvc_optimizer`` runs
  after ``optimizer.step()``; vitc's ``UVCSearch.after_step`` after the shared loop's in-place
  clip), so the gates see the clipped task gradient; their budget term z·gate_weight·∂R/∂θ is added
  unclipped, as officially. ``--max-grad-norm 0`` turns clipping off (vitc's default before
  issue 15). The digits figures above were measured without the clip: with it the gates' task
  gradient is smaller whenever the global norm exceeds 1, so the z at which the budget term wins
  may move.

``PRESETS`` (``--preset``): ``small-data`` is ``DEFAULTS``; ``paper`` and ``official-code`` share the
DeiT-T ImageNet recipe of the released run (``_IMAGENET``) and differ in the released code's quirks,
three flags that ``official-code`` turns on and ``paper`` off:

* ``z_lr_dynamic`` False: η_z stays at the schedule's first value, 1, for the whole run — the
  official ``PresetLRScheduler`` looks for a ``zlr`` key no parameter group has (the released logs
  show no "Schduler Working" line); ``paper`` raises it 1 → 5 → 9 → 13 → 17 as intended;
* ``pin_at_upper_bound`` True: the official projection resets every count that was at its upper
  bound ub − 1 before the step back to it, so such a count never decreases;
* ``decay_all_params`` True: stage 1's AdamW is built on ``model.parameters()`` with weight decay
  0.05, so biases, norms, tokens, position embeddings and gate logits decay too. Stage 2
  (``post_train.py``) uses timm's ``create_optimizer``, which exempts 1-d parameters and the
  tokens; vitc does so in stage 2 under every preset.

Both ImageNet presets learn the V-channel counts r (``prune_v``): the released code always
optimises them (there is no switch), and the paper prunes V channels by design. Both decay the
stage-1 learning rate to 0 (the official ``WarmupCosineSchedule``; ``min_lr`` 0) and stage 2's to
1e-5 (timm's scheduler, ``--min-lr 1e-5``; ``finetune_min_lr``). Not reproduced by any preset:
the official stage-1 loop runs ``num_epochs + 1`` epochs (``while epoch <= num_epochs`` from 0,
incrementing first: 31 for 30, the last one past the cosine's end); stage 2 steps timm's scheduler
per epoch with a 1e-6 warm-up start (vitc: per step from 0); mixup/cutmix; the README command's
batch of 512 per process (the released DeiT-T log ran 2 × 128 = 256, used here); and
``run_uvc_train.sh``'s ``--enable_patch_gating 1`` (a patch mask whose resource gradient is
computed but never used; the released logs ran without it).
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
    "official-code": {**_IMAGENET, "z_lr_dynamic": False, "pin_at_upper_bound": True, "decay_all_params": True},
}
