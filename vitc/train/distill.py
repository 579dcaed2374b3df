"""Knowledge-distillation helpers shared by the compression methods."""

from __future__ import annotations

import copy

from torch import nn


def frozen_teacher(model: nn.Module) -> nn.Module:
    """A frozen, eval-mode copy of the dense model (both UVC and DynamicViT distil from it)."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher
