"""DynamicViT defaults, importable without torch (the CLI's ``--help`` reads them).

The official NeurIPS recipe's schedule: 30 epochs, backbone frozen for the first 5, then 0.01x
the predictors' learning rate, no warm-up; the paper's loss weights (KL 0.5, token 0.5, ratio 2).
Only the learning rate is resized: ImageNet's 5e-4 * batch / 512 over ~37k steps would leave the
predictors at their initialisation in the ~660 steps of a small data set (vit-micro on ``digits``:
22 steps per epoch), and 1e-3 brings the training keep fractions near rho^s there (5e-3 makes the
task-loss gradients through the attention gates win and the predictors keep ~90% of the tokens).
"""

KEEP_RATIO = 0.7
EPOCHS = 30
FREEZE_EPOCHS = 5
BATCH_SIZE = 64
LR = 1e-3
WARMUP_EPOCHS = 0.0
BACKBONE_LR_SCALE = 0.01
RATIO_WEIGHT = 2.0
KL_WEIGHT = 0.5
TOKEN_WEIGHT = 0.5
