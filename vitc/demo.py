"""The built-in pipeline behind ``vitc demo``: digits, vit-micro, every stage, CPU only.

Default (< 20 min on 2 CPU cores): train the baseline, UVC at budget 0.5, DynamicViT trained at
ρ = 0.7 and materialized at 0.5/0.7/0.9, export fp32/fp16 ONNX, INT8 Q/DQ, verify, eval, bench on
CPU, report. ``fast`` (< 3 min) runs the same stages with a handful of epochs — a smoke test of the
toolchain, not an accuracy result.
"""

from __future__ import annotations

from vitc.pipeline_config import PipelineConfig, config_from_dict


def demo_config(fast: bool = False) -> PipelineConfig:
    raw: dict = {
        "model": "vit-micro",
        "data": "digits",
        "seed": 0,
        "device": "cpu",
        # 50 baseline epochs and 30 UVC fine-tune epochs (the commands' defaults are 60 and 60) keep
        # the default demo under 20 minutes on 2 CPU cores; DynamicViT runs its defaults.
        "baseline": {"epochs": 50},
        "uvc": {"budgets": [0.5], "finetune_epochs": 30},
        "dynamicvit": {"keep_ratio": 0.7, "materialize": [0.5, 0.7, 0.9]},
        "export": {"opset": 18, "fp16": True, "int8": True, "calib_samples": 512, "calib_method": "minmax"},
        "verify": {"batch_sizes": [1, 32], "batches": 2},
        "bench": {"backends": ["torch", "onnxruntime"], "device": "cpu", "batch_sizes": [1, 32],
                  "warmup_ms": 200, "min_iters": 10, "min_seconds": 0.5},
    }
    if fast:
        # A smoke run: 12 epochs with a 2-epoch warm-up (the 5-epoch default would leave all 12 at chance).
        raw["baseline"].update({"epochs": 12, "warmup_epochs": 2.0})
        # No fixed-gate warm-up and a steep z schedule so three search epochs reach the budget.
        raw["uvc"].update({"epochs": 3, "finetune_epochs": 2,
                           "options": {"gate_warmup_epochs": 0, "z_lr_schedule": [2000.0]}})
        raw["dynamicvit"].update({"epochs": 2, "options": {"freeze_epochs": 1}})
        raw["export"]["calib_samples"] = 64
        raw["verify"]["batches"] = 1
        raw["bench"].update({"warmup_ms": 50, "min_iters": 5, "min_seconds": 0.2})
    return config_from_dict(raw, source="vitc demo")
