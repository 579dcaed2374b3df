"""Calibration data for INT8: real images through ONNX Runtime's ``CalibrationDataReader`` interface.

Images come from the data source's **train** split (calibrating on the split you evaluate on would
leak it), with the model's eval transforms (no augmentation) and its own normalisation, in a fixed
seeded random order, ``num_samples`` of them (all, if the split is smaller). ``get_next()`` returns
``{input_name: float32 (B, C, H, W)}`` batches, then None.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Any, cast

import numpy as np
import torch
from onnxruntime.quantization import CalibrationDataReader

from vitc.core.data import DataSource
from vitc.core.errors import UsageError
from vitc.core.spec import ViTSpec


class ImageCalibrationReader(CalibrationDataReader):
    """``num_samples`` real images of ``source`` in batches of ``batch_size`` (the last may be smaller,
    unless ``drop_last`` — for a static-batch graph)."""

    def __init__(self, source: DataSource, spec: ViTSpec, input_name: str, num_samples: int = 512,
                 batch_size: int = 32, seed: int = 0, split: str = "train", drop_last: bool = False) -> None:
        if source.kind == "synthetic":
            raise UsageError("calibration needs real images: synthetic data is random noise (use digits or imagefolder:PATH)")
        if num_samples < 1 or batch_size < 1:
            raise UsageError(f"--num-samples and --batch-size must be >= 1, got {num_samples} and {batch_size}")
        self.dataset = source.dataset(spec, split)
        self.input_name = input_name
        order = torch.randperm(len(cast(Sized, self.dataset)), generator=torch.Generator().manual_seed(seed)).tolist()
        chosen = order[: min(num_samples, len(order))]
        stop = len(chosen) - len(chosen) % batch_size if drop_last else len(chosen)
        self.batches = [chosen[i : i + batch_size] for i in range(0, stop, batch_size)]
        if not self.batches:
            raise UsageError(f"not enough calibration images: {len(chosen)} < batch {batch_size}")
        self.num_samples = sum(len(b) for b in self.batches)
        self.bar: Any = None  # a vitc.core.progress bar, advanced once per batch
        self._next = 0

    def __len__(self) -> int:
        return len(self.batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self.batches):
            return None
        images = torch.stack([self.dataset[i][0] for i in self.batches[self._next]])
        self._next += 1
        if self.bar is not None:
            self.bar.advance()
        return {self.input_name: np.ascontiguousarray(images.numpy(), dtype=np.float32)}

    def rewind(self) -> None:
        self._next = 0
