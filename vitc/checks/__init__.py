"""Checks and measurements through any backend: ``verify`` (ONNX Runtime vs PyTorch), ``export`` (``vitc export``:
the export and its parity check), ``evaluate`` (top-1/top-5), ``bench`` (trtexec-style throughput and A/B
speedups), ``inspect`` (``vitc info``'s record), ``environment`` (what it ran on)."""
