"""Runners behind one interface (torch, onnxruntime, tensorrt), evaluation and benchmarking."""

from vitc.engines.base import Runner, load_runner

__all__ = ["Runner", "load_runner"]
