"""``vitc info``: what a model is — architecture, parameters, MACs per block — and, for vitc files, where it came from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitc.core.errors import UsageError


def describe_target(target: str, img_size: int | None = None) -> dict[str, Any]:
    """The ``vitc info`` record of a timm name, a vitc config, an artifact (any kind), a .onnx or an engine.

    A file of another type than its suffix says (an ONNX named .safetensors) is named as what it is.
    """
    from vitc.core.artifacts import PLAIN, read_header
    from vitc.core.models import is_artifact_path, resolve_spec
    from vitc.core.summary import summarize

    path = Path(target)
    suffix = path.suffix.lower()
    if img_size is not None and (is_artifact_path(target) or suffix in (".onnx", ".engine", ".plan", ".trt")):
        what = "an artifact" if suffix == ".safetensors" or suffix not in (".onnx", ".engine", ".plan", ".trt") else "an exported file"
        raise UsageError(f"--img-size does not apply to {what} (its input size is fixed)")
    meta: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if suffix == ".onnx":
        spec, kind, extra = _from_onnx(path)
    elif suffix in (".engine", ".plan", ".trt"):
        spec, kind, extra = _from_engine(path)
    elif is_artifact_path(target):
        spec, kind, meta = read_header(target)
        if kind != PLAIN:
            from vitc.methods import method_of

            method = method_of(kind, target)
            extra["method"] = method.title
            shown = method.effective_spec(target)
            if shown is not None:
                extra["compressed_from"] = summarize(spec)["macs"]
                spec = shown
    else:
        spec, kind = resolve_spec(target, img_size=img_size), "model"
    result = summarize(spec)
    result.update({"kind": kind, **extra})
    origin = meta.get("origin") if isinstance(meta.get("origin"), dict) else None
    if origin:
        result["origin"] = origin
        result["macs_vs_origin"] = result["macs"] / origin["macs"]
        result["params_vs_origin"] = result["params"] / origin["params"]
    if isinstance(meta.get("provenance"), dict):
        result["provenance"] = meta["provenance"]
    return result


def _from_onnx(path: Path) -> tuple[Any, str, dict[str, Any]]:
    from vitc.onnx.io import META_KEEP_RATIO, load_onnx, metadata, onnx_spec, precision_of

    model = load_onnx(path, check=False)
    spec = onnx_spec(model, str(path))
    if spec is None:
        raise UsageError(f"{path} is an ONNX file without vitc metadata (not exported by vitc export); its "
                         "architecture is unknown")
    meta = metadata(model)
    extra: dict[str, Any] = {"format": "onnx", "precision": precision_of(model)}
    if META_KEEP_RATIO in meta:
        extra["keep_ratio"] = float(meta[META_KEEP_RATIO])
    return spec, meta.get("vitc.kind", "model"), extra


def _from_engine(path: Path) -> tuple[Any, str, dict[str, Any]]:
    from vitc.backends.tensorrt.build import read_sidecar
    from vitc.core.spec import ViTSpec

    if not path.is_file():
        raise UsageError(f"no such engine file: {path}")
    sidecar = read_sidecar(path)
    if not sidecar or not sidecar.get("spec"):
        raise UsageError(f"{path} has no vitc sidecar ({path.name}.json), so its architecture is unknown")
    return ViTSpec.from_dict(sidecar["spec"]), "model", {"format": "tensorrt", "precision": sidecar.get("precision"),
                                                         "tensorrt": sidecar.get("tensorrt")}
