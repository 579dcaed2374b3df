"""DynamicViT defaults, importable without torch (the CLI's ``--help`` reads them).

Official NeurIPS recipe: 30 epochs with the backbone frozen for the first 5, then 0.01x the
predictors' learning rate, no warm-up; loss weights from the paper (KL 0.5, token 0.5, ratio 2).

Our defaults keep the schedule's shape (frozen for the first sixth, 0.01x afterwards, no warm-up,
the paper's loss weights) but are sized for a small model on a small data set on 2 CPU cores
(vit-micro on ``digits``: 22 steps per epoch instead of ImageNet's ~1,250). ImageNet's
5e-4 * batch / 512 over ~37k steps would leave the predictors near their initialisation in the
~1.3k steps here; 5e-3 over 60 epochs brings the training keep fractions close to rho^s. Measured
on vit-micro/digits (CPU time, one thread): ~11 s per epoch, ~11 min for the 60 epochs.
"""

KEEP_RATIO = 0.7
EPOCHS = 60
FREEZE_EPOCHS = 10
BATCH_SIZE = 64
LR = 5e-3
WARMUP_EPOCHS = 0.0
BACKBONE_LR_SCALE = 0.01
RATIO_WEIGHT = 2.0
KL_WEIGHT = 0.5
TOKEN_WEIGHT = 0.5
