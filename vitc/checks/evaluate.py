"""``vitc eval``: top-1/top-5 of any target through the backend it ships in (``runner(batch) -> logits``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from vitc.backends import load_runner
from vitc.core.data import make_loader, parse_data
from vitc.core.errors import UsageError
from vitc.core.metrics import topk_correct
from vitc.core.progress import progress

Predict = Callable[[torch.Tensor], "torch.Tensor | np.ndarray"]


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


@dataclass
class EvalResult:
    """Top-1/top-5 (%) of one target on one data split, through the backend named."""

    top1: float
    top5: float
    images: int
    backend: str
    precision: str
    target: str
    data: str
    split: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_text(self) -> str:
        return (f"{self.target} [{self.backend} {self.precision}] on {self.data} ({self.split}, {self.images} images): "
                f"top-1 {self.top1:.2f}%, top-5 {self.top5:.2f}%")


def evaluate_target(target: str, data: str, *, split: str = "val", batch_size: int = 64, backend: str = "auto",
                    device: str = "auto", pretrained: bool = False, checkpoint: str | None = None) -> EvalResult:
    """Top-1/top-5 (%) and image count of ``target`` on ``data``'s ``split``, through the backend it ships in.

    Args:
        target: an artifact, a timm name, an ONNX file, a TensorRT engine or an OpenVINO IR; it must carry a
            vitc spec (input size, normalisation) and a head with the data's number of classes.
        data: a data spec; ``split`` is ``val`` or ``train``.
        backend: a name of :data:`vitc.backends.BACKENDS`, or ``auto`` (by the file's suffix).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        pretrained, checkpoint: weights for a timm name.
    """
    source = parse_data(data)
    opts: dict[str, Any] = {}
    if pretrained or checkpoint:
        opts = {"pretrained": pretrained, "checkpoint": checkpoint}
    with load_runner(target, backend=backend, device=device, **opts) as runner:
        spec = runner.spec
        if spec is None:
            raise UsageError(f"{target} carries no vitc spec, so its input size and normalisation are unknown")
        classes = source.num_classes(spec)
        if classes != spec.num_classes:
            raise UsageError(f"{target} has {spec.num_classes} classes but {source} has {classes}: its head does not fit "
                             "this data (top-1 would be meaningless)")
        dataset = source.dataset(spec, split)
        loader = make_loader(dataset, batch_size, shuffle=False)
        result = evaluate(runner, loader, total=len(loader), description=f"eval {split}")
        return EvalResult(top1=float(result["top1"]), top5=float(result["top5"]), images=int(result["images"]),
                          backend=runner.backend, precision=runner.precision, target=target, data=str(source), split=split)
