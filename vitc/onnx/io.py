"""Reading and writing vitc ONNX files: validated loading, atomic saving and the ``vitc.*`` metadata.

An exported ONNX carries what later steps need in its ``metadata_props`` (strings):

    vitc.spec        the architecture spec JSON (``ViTSpec.to_json()``): input size, normalisation,
                     token schedule — so ``eval``/``verify``/``quantize`` need no side files
    vitc.precision   fp32 | fp16 | int8 (the precision a strongly typed TensorRT build inherits)
    vitc.kind        the source artifact kind (model | uvc | dynamicvit)
    vitc.keep_ratio  DynamicViT keep ratio rho, when known
    vitc.version     the vitc version that wrote the file; ``vitc.source`` the artifact it came from
    vitc.origin      the original dense model (name, MACs, params) when known, so a latency profile of
                     another model is refused
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitc.core.artifacts import META_SPEC
from vitc.core.errors import UsageError
from vitc.core.fileio import atomic_path

if TYPE_CHECKING:
    import onnx

    from vitc.core.spec import ViTSpec

META_PRECISION = "vitc.precision"
META_KEEP_RATIO = "vitc.keep_ratio"
META_VERSION = "vitc.version"
META_SOURCE = "vitc.source"
META_CALIBRATION = "vitc.calibration"
META_ORIGIN = "vitc.origin"  # the original dense model a compressed file comes from (name, MACs, params; JSON)

PROTOBUF_LIMIT = 2**31 - 1  # bytes; larger models keep their weights in an external-data file
Dim = int | str | None  # static size, symbolic name, or unknown
_FLOAT_PRECISION = {"FLOAT": "fp32", "FLOAT16": "fp16", "BFLOAT16": "bf16"}
_QUANT_PRECISION = {"INT8": "int8", "UINT8": "int8", "FLOAT8E4M3FN": "fp8", "INT4": "int4", "UINT4": "int4"}


def load_onnx(path: str | os.PathLike[str], check: bool = True) -> onnx.ModelProto:
    """Load an ONNX file; a missing, truncated, corrupt or non-ONNX file is a one-line ``UsageError``.

    ``check`` also runs ``onnx.checker`` (graph structure, opset imports, known ops).
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such ONNX file: {path}")
    from vitc.core.filetype import ONNX, UNKNOWN, describe, sniff

    kind = sniff(path)
    if kind not in (ONNX, UNKNOWN):
        raise UsageError(f"{path} is {describe(path)}, not an ONNX model")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError, missing external data, bad paths inside the proto...
        raise UsageError(f"{path} is not a readable ONNX file (truncated or corrupt?): {_first_line(e)}") from None
    if model.ir_version < 1 or not model.HasField("graph") or not model.graph.node:
        raise UsageError(f"{path} is not an ONNX model (no graph; truncated, corrupt or another file type)")
    if not model.graph.input or not model.graph.output:
        raise UsageError(f"{path} is not a usable ONNX model: its graph has no inputs or outputs")
    if check:
        try:
            target: Any = str(path) if model.ByteSize() > PROTOBUF_LIMIT else model
            onnx.checker.check_model(target)
        except Exception as e:  # ValidationError, but corrupt protos also surface as other types
            raise UsageError(f"{path} is not a valid ONNX model: {_first_line(e)}") from None
    return model


def save_onnx(model: onnx.ModelProto, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        write_onnx(model, tmp, final_name=path.name)
    return path


def write_onnx(model: onnx.ModelProto, path: str | os.PathLike[str], final_name: str | None = None) -> Path | None:
    """Write ``model`` to ``path`` (use inside ``atomic_path``; ``final_name`` is the name it will get).

    A model over protobuf's 2 GiB limit keeps its weights in ``<final_name>.data`` beside it; that
    file is written first, so the ``.onnx`` (renamed last) never points at missing weights. Returns
    the external-data file, if any, so a caller that gives up can remove it.
    """
    import onnx

    path = Path(path)
    if model.ByteSize() <= PROTOBUF_LIMIT:
        onnx.save_model(model, str(path))
        return None
    location = (final_name or path.name) + ".data"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location)
    return path.parent / location


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def stamp(model: onnx.ModelProto, entries: dict[str, Any]) -> None:
    """Set ``metadata_props`` keys (replacing existing ones); values that are not strings become JSON."""
    current = metadata(model)
    for key, value in entries.items():
        if value is None:
            current.pop(key, None)
        else:
            current[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    del model.metadata_props[:]
    for key, value in current.items():
        model.metadata_props.add(key=key, value=value)


def onnx_spec(model: onnx.ModelProto, source: str = "ONNX model") -> ViTSpec | None:
    """The vitc spec an exported ONNX carries, or None for a foreign ONNX; a corrupt one is an error."""
    from vitc.core.spec import ViTSpec

    text = metadata(model).get(META_SPEC)
    if text is None:
        return None
    try:
        return ViTSpec.from_json(text)
    except UsageError as e:
        raise UsageError(f"{source}: corrupt {META_SPEC} metadata: {e}") from None


def precision_of(model: onnx.ModelProto) -> str:
    """fp32 | fp16 | bf16 | int8 | fp8 | int4: the precision a strongly typed TensorRT build inherits.

    The exporter's ``vitc.precision`` metadata wins when present. Otherwise Q/DQ nodes mean the
    quantized type of their zero point/input (int8, fp8, int4), and a graph without them takes the
    float type holding most initializer elements (fp32, fp16 or bf16).
    """
    from onnx import TensorProto

    stamped = metadata(model).get(META_PRECISION)
    if stamped:
        return stamped
    init_types = {t.name: t.data_type for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            # QuantizeLinear's zero point (input 2), or DequantizeLinear's quantized input (0) or zero point (2)
            candidates = list(node.input[2:3]) + (list(node.input[:1]) if node.op_type == "DequantizeLinear" else [])
            for name in candidates:
                if name in init_types:
                    quant = _QUANT_PRECISION.get(TensorProto.DataType.Name(init_types[name]))
                    if quant:
                        return quant
            return "int8"  # ONNX's default quantized type when no zero point is given
    counts: Counter[str] = Counter()
    for t in model.graph.initializer:
        name = TensorProto.DataType.Name(t.data_type)
        if name in _FLOAT_PRECISION:
            counts[_FLOAT_PRECISION[name]] += math.prod(int(d) for d in t.dims)
    return counts.most_common(1)[0][0] if counts else "fp32"


def dims(value_info: onnx.ValueInfoProto) -> list[Dim] | None:
    """Dimensions of a tensor: ints (static), names (symbolic), None (unknown); None if rank unknown."""
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    out: list[Dim] = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are fed at run time (not initializers listed as inputs, as old exporters do)."""
    inits = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in inits]


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0][:200] if lines else type(e).__name__
