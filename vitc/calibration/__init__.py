"""INT8 Q/DQ quantization of exported ONNX models, calibrated on real images.

    quantize_onnx(onnx_path, calib_data, out, ...)   FP32 ONNX → TensorRT-ready INT8 Q/DQ ONNX
    ImageCalibrationReader                            ONNX Runtime calibration reader over a data source
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "quantize_onnx": "vitc.calibration.quantize",
    "METHODS": "vitc.calibration.quantize",
    "ImageCalibrationReader": "vitc.calibration.reader",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vitc.calibration' has no attribute {name!r}")
