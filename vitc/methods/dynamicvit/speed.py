"""The keep ratio that meets a speedup target on a profiled device (``--target-speedup S --latency LATENCY.json``).

Token selection's cost falls monotonically as ρ falls, so the ratio is found by bisection on the latency model's
prediction: the *largest* ρ (the fewest tokens dropped, the least accuracy given up) whose predicted speedup over
the profiled dense model is at least S, rounded down to 0.001. With floor(N·ρ^s) tokens per stage, the landed
speedup is S up to one token's worth of latency above it.
"""

from __future__ import annotations

import math
from typing import Any

from vitc.core.errors import UsageError
from vitc.core.latency import LatencyModel
from vitc.core.spec import ViTSpec
from vitc.methods.dynamicvit.compress import with_token_selection

RESOLUTION = 1e-3


def keep_ratio_for_speedup(spec: ViTSpec, stages: list[int], latency: LatencyModel, target: float, name: str) -> dict[str, Any]:
    """``{"keep_ratio", "predicted_speedup", "target_speedup"}`` for ``spec``'s backbone with selection before ``stages``."""
    base = spec.without_token_selection()

    def speedup(ratio: float) -> float:
        return float(latency.predict(with_token_selection(base, ratio, stages), name)["speedup"])

    lowest = (1.0 / base.num_patches) ** (1.0 / len(stages)) * (1 + 1e-9)  # every stage keeps at least one token
    if speedup(1.0) >= target:
        return {"keep_ratio": 1.0, "predicted_speedup": speedup(1.0), "target_speedup": target}
    if speedup(lowest) < target:
        raise UsageError(f"no keep ratio makes {name} {target:g}x faster than {latency.spec.name} on this profile: keeping "
                         f"one token per stage gives {speedup(lowest):.2f}x; prune the structure too (uvc+dynamicvit)")
    lo, hi = lowest, 1.0
    while hi - lo > RESOLUTION / 4:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if speedup(mid) >= target else (lo, mid)
    ratio = max(math.floor(lo / RESOLUTION) * RESOLUTION, lowest)
    return {"keep_ratio": round(ratio, 6), "predicted_speedup": speedup(ratio), "target_speedup": target}


__all__ = ["keep_ratio_for_speedup"]
