"""What a measurement ran on: CPU, GPU, driver, library versions (CUDA, cuDNN, ONNX Runtime providers, timm,
ONNX, OpenVINO, Triton) and thread counts, for every JSON report."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vitc.backends import BACKENDS
from vitc.backends.base import Runner
from vitc.core.device import gpu_info
from vitc.core.host import cpu_model
from vitc.core.version import __version__

PACKAGES = ("timm", "onnx", "onnxscript", "triton")  # versions recorded beside each backend's


def dist_version(*names: str) -> str | None:
    """The installed version of the first of ``names`` (distribution names) that is installed, else None."""
    from importlib import metadata

    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _ort_providers() -> list[str] | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    return list(ort.get_available_providers())


def environment(runners: Sequence[Runner] = ()) -> dict[str, Any]:
    """Device, driver, library versions and thread counts, for the JSON report.

    The GPU is described when one of ``runners`` runs on CUDA, or, with no runners given, when one is visible.
    """
    env: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "platform": platform.platform(),
        "versions": {
            "vitc": __version__, "python": platform.python_version(), "numpy": np.__version__,
            **{name: b.installed_version() for name, b in BACKENDS.items()},
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
            **{d: dist_version(d) for d in PACKAGES},
        },
        "onnxruntime_providers": _ort_providers(),
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
        "gpu": None,
    }
    cuda = [r for r in runners if r.device.startswith("cuda")]
    if cuda:
        env["gpu"] = gpu_info(torch.device(cuda[0].device).index or 0)
    elif not runners and torch.cuda.is_available():
        env["gpu"] = gpu_info(torch.cuda.current_device())
    return env
