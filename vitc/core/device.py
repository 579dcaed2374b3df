"""The device a step runs on: the choice (cpu, cuda, cuda:N, auto) and the GPU's description. The host's CPU and
processes are :mod:`vitc.core.host`."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import TYPE_CHECKING, Any

from vitc.core.errors import UsageError

if TYPE_CHECKING:
    import torch

DEVICE_HELP = "cpu, cuda, cuda:N or auto (this rank's GPU when CUDA is available, else cpu)."


def check_device_name(name: str) -> str:
    """Syntax of a device string, checked before any work (availability is checked when it is used)."""
    text = str(name).strip()
    if text in ("auto", "cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise UsageError(f"unknown device {name!r} (expected cpu, cuda, cuda:N or auto)")


def pick_device(name: str | None = None) -> torch.device:
    """``auto`` → this rank's GPU if CUDA is available, else CPU; ``cuda`` → ``cuda:LOCAL_RANK``.

    An unknown or unavailable device is a one-line ``UsageError``.
    """
    import torch

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if name in (None, "auto"):
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UsageError(f"--device: unknown device {name!r} (expected cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: no CUDA device is available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif device.type != "cpu":
        raise UsageError(f"--device {name}: only cpu and cuda are supported")
    return device


def gpu_info(index: int = 0) -> dict[str, Any]:
    """Name, compute capability, memory (GiB), CUDA runtime, and driver/clocks (MHz) from nvidia-smi if present."""
    import torch

    props = torch.cuda.get_device_properties(index)
    info: dict[str, Any] = {
        "name": props.name,
        "capability": f"{props.major}.{props.minor}",
        "memory_gib": round(props.total_memory / 2**30, 1),
        "cuda_runtime": torch.version.cuda,
        "driver": None, "sm_clock_mhz": None, "max_sm_clock_mhz": None,
    }
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=driver_version,clocks.sm,clocks.max.sm", "--format=csv,noheader,nounits",
                                  "-i", str(index)], capture_output=True, text=True, timeout=10, check=True).stdout
            driver, sm, max_sm = (v.strip() for v in out.strip().splitlines()[0].split(","))
            info.update(driver=driver, sm_clock_mhz=_int_or_none(sm), max_sm_clock_mhz=_int_or_none(max_sm))
        except (subprocess.SubprocessError, OSError, ValueError, IndexError):
            pass
    return info


def _int_or_none(text: str) -> int | None:
    try:
        return int(float(text))
    except ValueError:
        return None
