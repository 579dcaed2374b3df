"""Checks and measurements through any backend: ``verify`` (ONNX Runtime vs PyTorch), ``evaluate``
(top-1/top-5), ``bench`` (trtexec-style throughput and A/B speedups), ``environment`` (what it ran on)."""
