"""DynamicViT defaults, importable without torch (the CLI's ``--help`` reads them).

The official NeurIPS schedule (30 epochs, backbone frozen for the first 5, no warm-up) and the paper's loss
weights (KL 0.5, token 0.5, ratio 2). Resized for small data sets: batch 16 with predictor lr 2e-3, the
backbone at 0.1x the predictors' lr (official 0.01x), and a gradient-norm clip at 1 (not official). Tokens
are ranked by the log-odds, not the official log p(keep). Why: docs/methods.md; the measurements:
benchmarks/README.md ("DynamicViT's small-data recipe").
"""

KEEP_RATIO = 0.7
EPOCHS = 30
FREEZE_EPOCHS = 5
BATCH_SIZE = 16
LR = 2e-3
WARMUP_EPOCHS = 0.0
BACKBONE_LR_SCALE = 0.1
# Global gradient-norm clip. The straight-through gradient of a keep decision through the masked
# attention is heavy-tailed (spikes of ~1e4 where a dropped key was a row's largest logit); the
# spikes inflate Adam's second moment and the first-stage predictor then never leaves p(keep) = 0.5
# (its weights stay at their init; scores spread 0.016 across tokens — near-random selection). With
# the clip it learns: on a 96.94% vit-micro baseline, rho 0.7 went from 94.17 to 95.83 and rho 0.5
# from 90.00 to 92.78, ahead of class-token attention at every ratio. (Not in the official recipe,
# whose ImageNet run has neither so few steps nor such peaked attention; its issue tracker suggests
# clipping against NaN losses.)
MAX_GRAD_NORM = 1.0
RATIO_WEIGHT = 2.0
KL_WEIGHT = 0.5
TOKEN_WEIGHT = 0.5
# Ranking key at inference (vitc.core.token_select.TOKEN_SCORES, repeated here so that --help needs no torch).
TOKEN_SCORE = "logodds"
TOKEN_SCORES = ("logodds", "keep")
