"""The built-in pipeline behind ``vitc demo``: digits, vit-micro, every stage, CPU only.

Default (~14 min on 2 CPU cores): train the baseline, UVC at budget 0.5, DynamicViT trained at
ρ = 0.7 and UVC+DynamicViT (on the UVC model, ρ = 0.7), both materialized at 0.5/0.7/0.9, export
fp32/fp16 ONNX, INT8 Q/DQ, verify, eval, bench on CPU, report. ``fast`` (< 4 min) runs the same
stages with a handful of epochs — a smoke test of the toolchain, not an accuracy result.
"""

from __future__ import annotations

from typing import Any

from vitc.pipeline.config import PipelineConfig, config_from_dict

# The demo is a pipeline YAML like any user's (`vitc demo --dry-run` lists its stages).
DEMO_YAML = """
model: vit-micro
data: digits
seed: 0
device: cpu
# 50 baseline epochs and 30 UVC fine-tune epochs (the commands' defaults are 60 and 60) keep the
# default demo under 20 minutes on 2 CPU cores; DynamicViT runs its defaults.
baseline: {epochs: 50}
uvc: {budgets: [0.5], finetune_epochs: 30}
dynamicvit: {keep_ratio: 0.7, materialize: [0.5, 0.7, 0.9]}
# both at once: DynamicViT token selection on the UVC budget-0.5 model above
uvc+dynamicvit: {budget: 0.5, keep_ratio: 0.7, materialize: [0.5, 0.7, 0.9]}
export: {opset: 18, fp16: true, int8: true, calib_samples: 512, calib_method: minmax}
verify: {batch_sizes: [1, 32], batches: 2}
bench: {backends: [torch, onnxruntime], device: cpu, batch_sizes: [1, 32], warmup_ms: 200, min_iters: 10, min_seconds: 0.5}
"""

# --fast: a smoke run of the same stages, merged over DEMO_YAML section by section.
FAST_YAML = """
# 12 epochs at batch 16 (twice the steps of the default batch 32) with a 2-epoch warm-up, so the smoke
# model leaves chance (~69% top-1; at batch 32 it often sat at chance for all 12 epochs, and every
# check of the models made from it then compared near-flat logits).
baseline: {epochs: 12, warmup_epochs: 2.0, batch_size: 16}
# Three search epochs with no fixed-gate warm-up and a steep z schedule. The gates are held (gate_lr 0)
# and the counts move fast (count_lr 4), at budget 0.7: on a barely trained model every block's skip
# gate sees the same resource gradient, so under a steep schedule they all flip together (8 blocks
# -> 1 in one step), leaving nothing for token selection; pruning heads and neurons keeps all 8 blocks.
# The fine-tune warms up over half an epoch (the preset's 2 would cover both epochs and never decay).
uvc: {budgets: [0.7], epochs: 3, finetune_epochs: 2, finetune_warmup_epochs: 0.5, gate_warmup_epochs: 0,
      z_lr_schedule: [2000.0], gate_lr: 0.0, count_lr: 4.0}
dynamicvit: {epochs: 2, freeze_epochs: 1}
uvc+dynamicvit: {budget: 0.7, epochs: 2, freeze_epochs: 1}
export: {calib_samples: 64}
verify: {batches: 1}
bench: {warmup_ms: 50, min_iters: 5, min_seconds: 0.2}
"""


def demo_raw(fast: bool = False) -> dict[str, Any]:
    """The demo pipeline as a mapping (``fast``: with the smoke-run overrides)."""
    import yaml

    raw: dict[str, Any] = yaml.safe_load(DEMO_YAML)
    if fast:
        for key, section in yaml.safe_load(FAST_YAML).items():
            raw[key] = {**raw.get(key, {}), **section}
    return raw


def demo_config(fast: bool = False) -> PipelineConfig:
    return config_from_dict(demo_raw(fast), source="vitc demo" + (" --fast" if fast else ""))
