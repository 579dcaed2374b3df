"""Parameter counts from a spec, without building the weights (``vitc info``'s record is vitc.checks.inspect)."""

from __future__ import annotations

from vitc.core.spec import ViTSpec, build_model


def count_params(spec: ViTSpec) -> int:
    """Parameters of the model ``spec`` describes (built on the meta device: no memory, no init)."""
    import torch

    with torch.device("meta"):
        return sum(p.numel() for p in build_model(spec).parameters())
