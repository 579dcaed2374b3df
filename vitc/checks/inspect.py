"""``vitc info``: what a model is — architecture, parameters, MACs per block — and, for vitc files, where it came
from. The whole record is assembled here; ``vitc info`` only prints it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitc.core.errors import UsageError

if TYPE_CHECKING:
    from vitc.core.spec import ViTSpec


def summarize(spec: ViTSpec) -> dict[str, Any]:
    """Parameters, MACs and per block: heads, head_dim, mlp_hidden, tokens entering it (prefix included), its MACs."""
    from vitc.core.flops import model_macs, per_block_macs
    from vitc.core.summary import count_params

    blocks: list[dict[str, Any]] = []
    for i, (b, patches, macs) in enumerate(zip(spec.blocks, spec.keep_schedule(), per_block_macs(spec))):
        blocks.append({"index": i, "heads": b.heads, "head_dim": b.head_dim, "mlp_hidden": b.mlp_hidden,
                       "tokens": patches + spec.num_prefix_tokens, "keep_tokens": b.keep_tokens, "macs": macs.total,
                       **({"predictor_macs": macs.predictor} if macs.predictor else {})})
    selection = {"token_score": spec.token_score} if any(b.keep_tokens is not None for b in spec.blocks) else {}
    return {
        "name": spec.name,
        "img_size": spec.img_size,
        "patch_size": spec.patch_size,
        "embed_dim": spec.embed_dim,
        "num_classes": spec.num_classes,
        "prefix_tokens": spec.num_prefix_tokens,
        "patch_tokens": spec.num_patches,
        "depth": spec.depth,
        "params": count_params(spec),
        "macs": model_macs(spec),
        "blocks": blocks,
        **selection,  # the key token selection ranks by (logodds: vitc's; keep: the official log p(keep))
    }


def describe_target(target: str, img_size: int | None = None) -> dict[str, Any]:
    """The ``vitc info`` record of a timm name, a vitc config, an artifact (any kind), a .onnx or an engine.

    A file of another type than its suffix says (an ONNX named .safetensors) is named as what it is.
    """
    from vitc.backends import BACKENDS
    from vitc.core.artifacts import PLAIN, read_header
    from vitc.core.models import is_artifact_path, resolve_spec

    path = Path(target)
    suffix = path.suffix.lower()
    deployed = {s for b in BACKENDS.values() for s in b.suffixes}  # files a backend runs as they are (.onnx, engines, IR)
    if img_size is not None and (is_artifact_path(target) or suffix in deployed):
        what = "an exported file" if suffix in deployed else "an artifact"
        raise UsageError(f"--img-size does not apply to {what} (its input size is fixed)")
    meta: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    built = next((b for b in BACKENDS.values() if b.inspect and suffix in b.suffixes), None)
    if suffix == ".onnx":
        spec, kind, extra = _from_onnx(path)
    elif built is not None:
        spec, extra = built.inspect_file(path)
        kind = PLAIN
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
        spec, kind = resolve_spec(target, img_size=img_size), PLAIN
    result = summarize(spec)
    result.update({"kind": kind, **extra})
    origin = meta.get("origin") if isinstance(meta.get("origin"), dict) else None
    if origin:
        result["origin"] = origin
        result["macs_vs_origin"] = result["macs"] / origin["macs"]
        result["params_vs_origin"] = result["params"] / origin["params"]
    if isinstance(meta.get("provenance"), dict):
        result["provenance"] = meta["provenance"]
    if isinstance(meta.get("budget_asked"), (int, float)):  # UVC: the budget asked and what the handed-over model reached
        result["budget"] = {k: meta.get(m) for k, m in (("kind", "resource_kind"), ("asked", "budget_asked"),
                                                         ("reached", "budget_reached"), ("target_speedup", "target_speedup"),
                                                         ("predicted_speedup", "predicted_speedup"))}
    elif isinstance(meta.get("predicted_speedup"), (int, float)):  # token selection at a speedup target
        result["budget"] = {"kind": "latency", "target_speedup": meta.get("target_speedup"),
                            "predicted_speedup": meta["predicted_speedup"]}
    return result


def _from_onnx(path: Path) -> tuple[Any, str, dict[str, Any]]:
    from vitc.core.filetype import PLAIN
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
    return spec, meta.get("vitc.kind", PLAIN), extra
