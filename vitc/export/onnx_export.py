"""``vitc export``: a vitc artifact → one TensorRT-ready ONNX file, checked and verified before it is written.

Export path (PyTorch >= 2.5): ``torch.onnx.export(..., dynamo=True)`` at opset 18-20, which gives

* one ``LayerNormalization`` op per LayerNorm (opset >= 17; a decomposed LayerNorm overflows in FP16);
* attention as plain ``MatMul``/``Softmax`` — timm's ``F.scaled_dot_product_attention`` is
  decomposed by the exporter at these opsets (ONNX's ``Attention`` op is opset 23), so TensorRT
  parses it with its own MHA fusion and no ``com.microsoft`` op appears;
* DynamicViT token selection as ``TopK`` with a constant K (``floor(N·rho^s)`` is a Python int in
  the module) followed by ``GatherElements`` — every token count static.

The batch axis is dynamic by default (traced at batch 2, because ``torch.export`` specialises a
size-1 dimension); ``batch=N`` exports a static batch. Every other dimension is static. The file
carries the spec and provenance in ``metadata_props`` (:mod:`vitc.export.onnx_io`), passes the
TensorRT readiness check (:mod:`vitc.export.readiness`) and, unless ``verify=False``, matches PyTorch
through ONNX Runtime (:mod:`vitc.export.verify`) — otherwise nothing is written.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitc import __version__
from vitc.artifacts import META_KIND, META_SPEC
from vitc.errors import CheckFailed, UsageError, VitcError
from vitc.export.graph import name_nodes
from vitc.export.onnx_io import META_KEEP_RATIO, META_PRECISION, META_SOURCE, META_VERSION, dims, stamp, write_onnx
from vitc.export.source import Deployable, load_deployable
from vitc.fileio import atomic_path
from vitc.progress import log

if TYPE_CHECKING:
    import onnx
    from torch import nn

    from vitc.models.spec import ViTSpec

INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
OPSETS = (18, 19, 20)  # dynamo exports opset >= 18; TensorRT 10 parses up to 20
TRACE_BATCH = 2  # torch.export specialises size-1 dims, so trace dynamic-batch exports at 2
MAX_BATCH = 65536
VERIFY_BATCH = 3  # export's own parity check runs at a batch that is neither 1 nor the trace batch
VERIFY_BATCHES = 2


def export_onnx(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    opset: int = 18,
    batch: int | None = None,
    dynamic_batch: bool = True,
    fp16: bool = False,
    verify: bool = True,
    data: str = "random",
    keep_ratio: float | None = None,
    check: bool = True,
    pretrained: bool = False,
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """Export ``source`` (artifact of any kind, timm name or vitc config) to ``out``; return a summary.

    ``batch=N`` fixes the batch; otherwise the batch is dynamic (``dynamic_batch=False`` alone means
    a static batch of 1). ``fp16`` writes the FP16 model of :mod:`vitc.export.fp16`. ``check`` runs
    the TensorRT readiness check, ``verify`` the ONNX Runtime vs PyTorch parity check on ``data``
    (random or a data spec) with the precision's default tolerances; a failure of either raises
    ``CheckFailed`` and writes nothing.
    """
    t0 = time.perf_counter()
    if opset not in OPSETS:
        raise UsageError(f"--opset must be one of {', '.join(map(str, OPSETS))} (dynamo export needs >= 18; TensorRT 10 parses <= 20), got {opset}")
    if batch is not None and batch < 1:
        raise UsageError(f"--batch must be >= 1, got {batch}")
    if batch is None and not dynamic_batch:
        batch = 1
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise UsageError(f"--out must name a .onnx file, got {out}")
    if keep_ratio is not None and not 0 < keep_ratio <= 1:
        raise UsageError(f"--keep-ratio must be in (0, 1], got {keep_ratio}")
    dep = load_deployable(str(source), keep_ratio=keep_ratio, pretrained=pretrained, checkpoint=checkpoint)
    log(f"exporting {dep.spec.name} ({dep.kind}) to ONNX opset {opset}, batch {batch or 'dynamic'}")
    proto = trace_to_onnx(dep.model, dep.spec, opset=opset, batch=batch)
    precision = "fp32"
    if fp16:
        from vitc.export.fp16 import to_fp16

        proto, precision = to_fp16(proto), "fp16"
    stamp(proto, {
        META_SPEC: dep.spec.to_json(),
        META_PRECISION: precision,
        META_KIND: dep.kind,
        META_KEEP_RATIO: repr(float(dep.keep_ratio)) if dep.keep_ratio is not None else None,
        META_VERSION: __version__,
        META_SOURCE: str(source),
    })
    readiness = None
    if check:
        from vitc.export.readiness import check_trt_ready

        readiness = check_trt_ready(proto)
    report = None
    external: Path | None = None
    try:
        with atomic_path(out) as tmp:
            external = write_onnx(proto, tmp, final_name=out.name)
            if verify:
                from vitc.export.verify import verify_onnx

                report = verify_onnx(tmp, dep, data=data, batches=VERIFY_BATCHES, batch_size=batch or VERIFY_BATCH)
                report.onnx = report.onnx_backend["path"] = str(out)  # name the file it becomes, not the temp file
                if not report:
                    raise CheckFailed(f"{out} not written: {report.summary()}")
    except BaseException:
        if external is not None and external.exists():
            external.unlink()  # the weights of a model that was not written
        raise
    inp, outp = proto.graph.input[0], proto.graph.output[0]
    ops = Counter(n.op_type for n in proto.graph.node)
    return {
        "onnx": str(out),
        "source": str(source),
        "kind": dep.kind,
        "precision": precision,
        "opset": opset,
        "batch": batch or "dynamic",
        "input": {"name": inp.name, "shape": dims(inp)},
        "output": {"name": outp.name, "shape": dims(outp)},
        "keep_ratio": dep.keep_ratio,
        "keep_tokens": dep.keep_tokens,
        "nodes": len(proto.graph.node),
        "ops": dict(sorted(ops.items())),
        "bytes": out.stat().st_size,
        "trt_ready": None if readiness is None else readiness["ready"],
        "topk": [] if readiness is None else readiness["topk"],
        "verify": None if report is None else report.to_dict(),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def trace_to_onnx(model: "nn.Module", spec: "ViTSpec", *, opset: int = 18, batch: int | None = None) -> "onnx.ModelProto":
    """``torch.onnx.export(dynamo=True)`` of an eval-mode ViT: input ``pixels`` (B, C, H, W), output ``logits``.

    ``batch=None`` makes axis 0 dynamic (symbol ``batch``); every other dimension is static. Nodes get
    unique names and the exporter's per-node stack traces (local file paths) are dropped.
    """
    import torch

    model = model.eval()
    trace_batch = batch or TRACE_BATCH
    x = torch.randn(trace_batch, *spec.input_shape, generator=torch.Generator().manual_seed(0))
    kwargs: dict[str, Any] = dict(dynamo=True, opset_version=opset, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
    if batch is None:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)
    params = inspect.signature(torch.onnx.export).parameters
    if "optimize" in params:  # torch >= 2.6; on 2.5 the program is optimized below
        kwargs["optimize"] = True
    if "verbose" in params:
        kwargs["verbose"] = False
    try:
        # The exporter prints progress lines on stdout; keep stdout for --json.
        with contextlib.redirect_stdout(sys.stderr), torch.no_grad():
            program = torch.onnx.export(model, (x,), **kwargs)
            if program is None:
                raise RuntimeError("torch.onnx.export returned no program")
            if "optimize" not in params and hasattr(program, "optimize"):
                program.optimize()
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VitcError(f"torch.onnx.export failed for {spec.name}: {first[:300]}") from None
    proto = program.model_proto
    for node in proto.graph.node:
        keep = [p for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
    name_nodes(proto)
    norms = sum(isinstance(m, torch.nn.LayerNorm) for m in model.modules())
    found = sum(n.op_type == "LayerNormalization" for n in proto.graph.node)
    if found != norms:
        raise CheckFailed(f"export produced {found} LayerNormalization ops for {norms} LayerNorm modules (decomposed?); use opset >= 18")
    return proto


__all__ = ["export_onnx", "trace_to_onnx", "INPUT_NAME", "OUTPUT_NAME", "Deployable"]
