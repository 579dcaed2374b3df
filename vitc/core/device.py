"""The machine a step runs on: device choice (cpu, cuda, cuda:N, auto), GPU and CPU descriptions."""

from __future__ import annotations

import os
import platform
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


def cpu_cores() -> int:
    """The cores this process may use (ONNX Runtime's and OpenVINO's default thread count on a small machine)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_int8_dot() -> bool:
    """Whether this CPU multiplies int8 without 16-bit saturation in ONNX Runtime's u8s8 kernels: x86 with VNNI
    (avx512_vnni / avx_vnni), or any non-x86 CPU. Without VNNI (AVX2, AVX-512F), ``vpmaddubsw`` adds pairs of
    u8 x s8 products in int16, which saturate for 8-bit weights."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return True
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_vnni", "avx_vnni", "avx512vnni"})
    except OSError:
        pass
    return True  # not Linux: assume a current CPU


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


def process_running(pid: int) -> bool:
    """Whether process ``pid`` on this host is alive (a zombie — exited, not yet reaped — counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:  # no /proc (macOS): kill(0) answered, so it runs
        return True
