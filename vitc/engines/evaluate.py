"""``vitc eval``: accuracy of any target through the backend it ships in."""

from __future__ import annotations

from typing import Any

from vitc.data import make_loader, parse_data
from vitc.engines.base import load_runner
from vitc.evaluation import evaluate


def evaluate_target(target: str, data: str, *, split: str = "val", batch_size: int = 64, backend: str = "auto",
                    device: str = "auto", pretrained: bool = False, checkpoint: str | None = None) -> dict[str, Any]:
    """Top-1/top-5 (%) and image count of ``target`` on ``data``'s ``split``."""
    source = parse_data(data)
    opts: dict[str, Any] = {}
    if pretrained or checkpoint:
        opts = {"pretrained": pretrained, "checkpoint": checkpoint}
    with load_runner(target, backend=backend, device=device, **opts) as runner:
        spec = runner.spec
        if spec is None:
            from vitc.errors import UsageError

            raise UsageError(f"{target} carries no vitc spec, so its input size and normalisation are unknown")
        dataset = source.dataset(spec, split)
        loader = make_loader(dataset, batch_size, shuffle=False)
        result = evaluate(runner, loader, total=len(loader), description=f"eval {split}")
        return {**result, "backend": runner.backend, "precision": runner.precision, "target": target, "data": str(source), "split": split}
