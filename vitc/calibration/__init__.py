"""INT8 Q/DQ quantization of exported ONNX models, calibrated on real images.

    quantize_onnx(onnx_path, calib_data, out, ...)   FP32 ONNX → TensorRT-ready INT8 Q/DQ ONNX
    ImageCalibrationReader                            ONNX Runtime calibration reader over a data source
"""

from __future__ import annotations

from vitc.lazy import lazy_getattr

_LAZY = {
    "quantize_onnx": "vitc.calibration.quantize",
    "METHODS": "vitc.calibration.quantize",
    "ImageCalibrationReader": "vitc.calibration.reader",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
