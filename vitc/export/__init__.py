"""ONNX export, TensorRT readiness checks and ONNX Runtime vs PyTorch verification.

    export_onnx(source, out, ...)        artifact → TensorRT-ready ONNX (checked, verified, atomic)
    check_trt_ready(model_or_path)       CheckFailed naming the first node TensorRT would refuse
    verify_onnx(onnx, against, ...)      Polygraphy-style parity report (truthy when it passed)
    load_onnx(path)                      validated load; one-line UsageError for a bad file

Names are imported on first use, so ``import vitc.export`` stays cheap.
"""

from __future__ import annotations

from vitc.lazy import lazy_getattr

_LAZY = {
    "export_onnx": "vitc.export.onnx_export",
    "trace_to_onnx": "vitc.export.onnx_export",
    "check_trt_ready": "vitc.export.readiness",
    "verify_onnx": "vitc.export.verify",
    "VerifyReport": "vitc.export.verify",
    "compare_outputs": "vitc.export.verify",
    "load_onnx": "vitc.export.onnx_io",
    "save_onnx": "vitc.export.onnx_io",
    "to_fp16": "vitc.export.fp16",
    "load_deployable": "vitc.export.source",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
