"""Token decisions of a DynamicViT ONNX, so verification can tell numerics from selection flips.

A DynamicViT graph keeps ``K`` tokens per stage with ``TopK``. Near a tie at the K-th place, fp16
or int8 rounding upstream of the scores can change *which* tokens are kept, and the logits of that
image then move by much more than the precision's tolerance although every op computed correctly.
Polygraphy's remedy for such graphs is to mark intermediate tensors as outputs
(``--onnx-outputs``); we mark the TopK index outputs of an in-memory copy, read the kept patch
positions per image, and let :mod:`vitc.checks.verify` compare each image against the fp32 model
run with *the same* kept tokens (and count the images whose kept set differs from PyTorch's own).

Shapes: B images, n patch tokens of the input; a *keep mask* is (B, n) in {0, 1}, cumulative over
stages (the masks of :func:`vitc.methods.dynamicvit.forward.masked_forward`).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def topk_index_outputs(model: Any) -> list[str]:
    """Names of the index outputs of the graph's TopK nodes, in graph (stage) order."""
    return [node.output[1] for node in model.graph.node if node.op_type == "TopK" and len(node.output) > 1]


class SelectionProbe:
    """An ONNX Runtime session over a copy of the graph whose TopK indices are graph outputs.

    ``__call__(x)`` → (logits (B, classes) float32, TopK indices: one (B, K_s) int64 per stage,
    pointing into the previous stage's kept list as :func:`keep_masks_from_indices` expects).
    """

    def __init__(self, model: Any, num_patches: int, providers: list[Any], threads: int | None = None) -> None:
        import onnx
        import onnxruntime as ort

        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        self.index_names = topk_index_outputs(probe)
        existing = {o.name for o in probe.graph.output}
        for name in self.index_names:
            if name not in existing:
                probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, None))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(probe.SerializeToString(), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.logits_name = self.session.get_outputs()[0].name
        self.input_type = np.float16 if self.session.get_inputs()[0].type == "tensor(float16)" else np.float32
        self.num_patches = num_patches

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        outs = self.session.run([self.logits_name, *self.index_names], {self.input_name: x.astype(self.input_type)})
        return outs[0].astype(np.float32), [np.asarray(i, dtype=np.int64) for i in outs[1:]]


def keep_masks_from_indices(indices: list[np.ndarray], num_patches: int) -> list[np.ndarray]:
    """Cumulative keep masks over the original patch positions from per-stage TopK indices.

    Stage s's indices (B, K_s) point into the token list stage s-1 kept, in that list's order
    (descending score, as the gather left it); stage 1's point into the n patch tokens.
    """
    masks: list[np.ndarray] = []
    position: np.ndarray | None = None  # (B, K_{s-1}) original patch position of each current token
    for idx in indices:
        idx = idx.astype(np.int64)
        position = idx if position is None else np.take_along_axis(position, idx, axis=1)
        mask = np.zeros((idx.shape[0], num_patches), dtype=np.float32)
        np.put_along_axis(mask, position, 1.0, axis=1)
        masks.append(mask)
    return masks
