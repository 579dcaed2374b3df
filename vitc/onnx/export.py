"""``vitc export``: a vitc artifact → one TensorRT-ready ONNX file, checked and verified before it is written.

``torch.onnx.export(..., dynamo=True)`` at opset 18-20: one ``LayerNormalization`` per LayerNorm, attention
as plain ``MatMul``/``Softmax`` (no ``com.microsoft`` ops), DynamicViT token selection as a constant-K
``TopK`` + ``GatherElements``. The batch axis is dynamic (traced at batch 2) unless ``static_batch=N``;
every other dimension is static. The file carries the spec and provenance in its metadata
(:mod:`vitc.onnx.io`), passes the TensorRT readiness check (:mod:`vitc.onnx.readiness`) and the caller's
parity check (``vitc export``: ONNX Runtime vs PyTorch) — otherwise nothing is written. See
docs/deployment.md.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from vitc.core.artifacts import META_KIND, META_SPEC
from vitc.core.errors import CheckFailed, UsageError, VitcError
from vitc.core.fileio import atomic_path, check_output_file
from vitc.core.progress import log
from vitc.core.version import __version__
from vitc.onnx.graph import name_nodes
from vitc.onnx.io import META_KEEP_RATIO, META_ORIGIN, META_PRECISION, META_SOURCE, META_VERSION, dims, stamp, write_onnx
from vitc.onnx.settings import ExportSettings
from vitc.onnx.source import Deployable, load_deployable

if TYPE_CHECKING:
    import onnx
    from torch import nn

    from vitc.core.spec import ViTSpec

INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
TRACE_BATCH = 2  # torch.export specialises size-1 dims, so trace dynamic-batch exports at 2
MAX_BATCH = 65536
# A check of the written file before it takes its name: (temporary path, what was exported, final path) →
# a JSON-ready report; it raises CheckFailed to stop the write.
Parity = Callable[[Path, Deployable, Path], "dict[str, Any]"]


def export_onnx(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    settings: ExportSettings | None = None,
    *,
    pretrained: bool = False,
    checkpoint: str | None = None,
    parity: Parity | None = None,
    exporter: str = "dynamo",
    **options: Any,
) -> dict[str, Any]:
    """Export ``source`` (artifact of any kind, timm name or vitc config) to ``out``; return a summary.

    Args:
        source: a vitc artifact (compressed ones are materialized first), a timm name or a vitc config.
        out: the ``.onnx`` file to write, atomically.
        settings: ``vitc export``'s settings: ``static_batch=N`` fixes the batch (default dynamic),
            ``fp16`` writes the FP16 model of :mod:`vitc.onnx.fp16`, ``check`` runs the TensorRT readiness
            check, ``keep_ratio`` picks a token-selection artifact's ratio. ``settings.verify`` is the
            caller's: it decides whether to pass ``parity``.
        pretrained, checkpoint: weights for a timm name, as ``--pretrained`` / ``--checkpoint``.
        parity: called on the finished file before it takes its name (``vitc export`` passes the ONNX
            Runtime vs PyTorch check); it raises ``CheckFailed`` to stop the write.
        exporter: ``dynamo`` (``torch.onnx.export(dynamo=True)``, what vitc deploys) or ``torchscript`` (the older
            exporter, ~10x faster: used for latency probes, where only shapes matter; falls back to dynamo where
            this torch has no TorchScript exporter).
        **options: replace fields of ``settings``.

    Returns:
        A JSON-ready summary: path, kind, precision, opset, batch, input/output shapes, op counts,
        readiness and parity reports, seconds.

    Raises:
        UsageError: a bad ``out`` or ``source``. CheckFailed: readiness or parity failed (nothing written).
    """
    t0 = time.perf_counter()
    settings = ExportSettings.with_options(settings, **options)
    batch, keep_ratio = settings.static_batch, settings.keep_ratio
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise UsageError(f"--out must name a .onnx file, got {out}")
    check_output_file(out)
    opset = settings.opset
    dep = load_deployable(str(source), keep_ratio=keep_ratio, pretrained=pretrained, checkpoint=checkpoint)
    log(f"exporting {dep.spec.name} ({dep.kind}) to ONNX opset {opset}, batch {batch or 'dynamic'}")
    proto = (_trace_torchscript(dep.model, dep.spec, opset, batch) if exporter == "torchscript" else None) \
        or trace_to_onnx(dep.model, dep.spec, opset=opset, batch=batch)
    precision = "fp32"
    if settings.fp16:
        from vitc.onnx.fp16 import to_fp16

        proto, precision = to_fp16(proto), "fp16"
    stamp(proto, {
        META_SPEC: dep.spec.to_json(),
        META_PRECISION: precision,
        META_KIND: dep.kind,
        META_KEEP_RATIO: repr(float(dep.keep_ratio)) if dep.keep_ratio is not None else None,
        META_VERSION: __version__,
        META_SOURCE: str(source),
        META_ORIGIN: _origin_record(dep),
    })
    readiness = None
    if settings.check:
        from vitc.onnx.readiness import check_trt_ready

        readiness = check_trt_ready(proto)
    report = None
    external: Path | None = None
    try:
        with atomic_path(out) as tmp:
            external = write_onnx(proto, tmp, final_name=out.name)
            if parity is not None:
                report = parity(tmp, dep, out)
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
        "verify": report,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _origin_record(dep: Deployable) -> dict[str, Any] | None:
    """The original dense model of an exported source: a compressed artifact's record, a model name itself; None for
    an artifact that records none (it may be compressed already, so it is not taken for the original)."""
    from vitc.core.models import is_artifact_path
    from vitc.core.provenance import origin

    recorded = dep.meta.get("origin")
    if isinstance(recorded, dict):
        return recorded
    return None if is_artifact_path(dep.source) else origin(dep.spec)


def trace_to_onnx(model: nn.Module, spec: ViTSpec, *, opset: int = 18, batch: int | None = None) -> onnx.ModelProto:
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


def _trace_torchscript(model: nn.Module, spec: ViTSpec, opset: int, batch: int | None) -> onnx.ModelProto | None:
    """The TorchScript exporter's graph (0.3-0.6 s instead of 5-10 s: the same MatMul/Softmax/LayerNormalization
    graph with other reshapes), or None where this torch no longer has that exporter."""
    import io
    import warnings

    import onnx
    import torch

    buffer = io.BytesIO()
    dynamic = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if batch is None else None
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(model.eval(), (torch.randn(batch or TRACE_BATCH, *spec.input_shape),), cast(Any, buffer), dynamo=False,
                              opset_version=opset, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=dynamic)
        return onnx.load_from_string(buffer.getvalue())
    except Exception:  # a torch without the TorchScript exporter: the caller takes the dynamo path
        return None


__all__ = ["INPUT_NAME", "OUTPUT_NAME", "Deployable", "export_onnx", "trace_to_onnx"]
