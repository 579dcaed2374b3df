"""ONNX: export (``export``), FP16 (``fp16``), INT8 Q/DQ with calibration (``quantize``, ``calibration``),
the TensorRT readiness check against the parser's own support matrix (``readiness``, ``trt_ops``), what a
TensorRT build reads from a file (``profile``), file I/O and metadata (``io``) and graph queries (``graph``,
``selection``). Nothing here needs TensorRT; torch and onnx are imported by the modules that use them.
"""
