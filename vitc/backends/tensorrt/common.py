"""What every TensorRT module needs: the availability check with its one-line message, and a logger.

TensorRT is imported lazily, inside the functions that use it, so ``vitc`` imports and runs
everything up to ONNX Runtime on a machine without it. Note that the ``tensorrt-stubs`` package
installs a bare ``tensorrt/`` folder of ``.pyi`` files, which Python imports as an empty namespace
package: a successful ``import tensorrt`` therefore does not prove that TensorRT is installed, and
the check below looks for the real module's ``Builder`` and ``__version__``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vitc.core.errors import VitcError

if TYPE_CHECKING:
    import tensorrt as trt

INSTALL_HINT = ("TensorRT is not installed: pip install 'vitc[gpu]' "
                "(tensorrt>=10 from NVIDIA's index, on a machine with an NVIDIA GPU)")
MIN_MAJOR = 10


class TensorRTUnavailable(VitcError):
    """TensorRT >= 10 cannot be imported here (exit 1: the step cannot run on this machine)."""


def tensorrt_version() -> str | None:
    """The installed TensorRT version (``"10.13.0.35"``), or None when the real package is absent."""
    try:
        import tensorrt
    except (ImportError, OSError):  # OSError: the wheel is there but libnvinfer cannot be loaded
        return None
    if not hasattr(tensorrt, "Builder"):  # a namespace package made of type stubs only
        return None
    return str(getattr(tensorrt, "__version__", "0"))


def unavailable() -> str | None:
    """Why TensorRT cannot run here (not installed, too old, or no CUDA GPU), or None."""
    try:
        require_tensorrt()
    except TensorRTUnavailable as e:
        return str(e)
    import torch

    return None if torch.cuda.is_available() else "TensorRT needs an NVIDIA GPU, and none is visible here"


def require_tensorrt() -> str:
    """Return the TensorRT version, or raise :class:`TensorRTUnavailable` with a one-line hint."""
    version = tensorrt_version()
    if version is None:
        raise TensorRTUnavailable(INSTALL_HINT)
    major = version.split(".")[0]
    if not major.isdigit() or int(major) < MIN_MAJOR:
        raise TensorRTUnavailable(f"TensorRT {version} is too old: vitc uses the TensorRT >= {MIN_MAJOR} API "
                                  "(pip install 'tensorrt>=10')")
    return version


def make_logger(verbose: bool = False) -> trt.ILogger:
    """TensorRT's stock logger (stderr): warnings and errors, or everything with ``verbose``."""
    import tensorrt as trt

    return trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
