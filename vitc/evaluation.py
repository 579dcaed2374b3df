"""Top-1 / top-5 accuracy through any backend: ``predict(images) -> logits``."""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch

from vitc.progress import progress

Predict = Callable[[torch.Tensor], "torch.Tensor | np.ndarray"]


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """Number of samples whose target is in the top-k logits, for each k (k capped at #classes)."""
    maxk = min(max(ks), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices
    hit = pred.eq(targets.view(-1, 1))
    return [int(hit[:, : min(k, maxk)].any(dim=1).sum()) for k in ks]


def evaluate(predict: Predict, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], total: int | None = None,
             description: str = "eval") -> dict[str, float | int]:
    """Run every batch through ``predict``; return ``{"top1": %, "top5": %, "images": n}``."""
    correct1 = correct5 = seen = 0
    with progress(description, total) as bar, torch.inference_mode():
        for images, targets in batches:
            logits = predict(images)
            if isinstance(logits, np.ndarray):
                logits = torch.from_numpy(logits)
            c1, c5 = topk_correct(logits.float().cpu(), targets.cpu())
            correct1, correct5, seen = correct1 + c1, correct5 + c5, seen + len(targets)
            bar.advance()
    if seen == 0:
        return {"top1": 0.0, "top5": 0.0, "images": 0}
    return {"top1": 100.0 * correct1 / seen, "top5": 100.0 * correct5 / seen, "images": seen}


def torch_predict(model: torch.nn.Module, device: torch.device | str = "cpu") -> Predict:
    model = model.to(device).eval()

    def predict(images: torch.Tensor) -> torch.Tensor:
        return model(images.to(device))

    return predict
