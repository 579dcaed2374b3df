"""Knowledge-distillation helpers shared by the compression methods."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn


def frozen_teacher(model: nn.Module) -> nn.Module:
    """A frozen, eval-mode copy of the dense model (both UVC and DynamicViT distil from it)."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class Renormalized(nn.Module):
    """A teacher normalised differently from its student, fed the student's images re-normalised for it.

    The student's batch is ``(pixels - mean_s) / std_s``; the teacher needs ``(pixels - mean_t) / std_t``,
    i.e. ``x * std_s / std_t + (mean_s - mean_t) / std_t`` per channel: an exact affine map of each batch,
    so the teacher sees the pixels it was trained on (timm's ``forward_features``/``forward_head`` kept).
    """

    def __init__(self, teacher: nn.Module, student_mean: Sequence[float], student_std: Sequence[float],
                 teacher_mean: Sequence[float], teacher_std: Sequence[float]) -> None:
        super().__init__()
        self.teacher = teacher
        s_mean, s_std, t_mean, t_std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1)
                                        for v in (student_mean, student_std, teacher_mean, teacher_std))
        self.scale: torch.Tensor
        self.shift: torch.Tensor
        self.register_buffer("scale", s_std / t_std)
        self.register_buffer("shift", (s_mean - t_mean) / t_std)

    def renormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.teacher.forward_features(self.renormalize(x))  # type: ignore[operator]
        return features

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        logits: torch.Tensor = self.teacher.forward_head(x, pre_logits=pre_logits)  # type: ignore[operator]
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.teacher(self.renormalize(x))
        return logits
