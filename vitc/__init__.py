"""vitc: compress Vision Transformers (UVC, DynamicViT) and deploy them through ONNX, OpenVINO and TensorRT.

The steps are functions of :mod:`vitc.api`, reachable from here: ``vitc.compress``, ``vitc.materialize``,
``vitc.export``, ``vitc.quantize``, ``vitc.verify``, ``vitc.evaluate``, ``vitc.bench``, ``vitc.profile``,
``vitc.deploy``, ``vitc.run`` and ``vitc.tune``. They load on first use (PEP 562), so ``import vitc`` and
``vitc --help`` import no torch.
"""

from __future__ import annotations

from typing import Any

from vitc.core.version import __version__ as __version__

API = ("bench", "compress", "deploy", "evaluate", "export", "materialize", "profile", "quantize", "run", "tune", "verify")


def __getattr__(name: str) -> Any:
    if name in API:
        import importlib

        return getattr(importlib.import_module("vitc.api"), name)
    raise AttributeError(f"module 'vitc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *API])
