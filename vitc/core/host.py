"""The host: its CPU (cores this process may use, model name, int8 dot-product support) and whether a process on it
is alive. Facts are read from the machine each time, never assumed."""

from __future__ import annotations

import os
import platform


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
