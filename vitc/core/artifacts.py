"""One-file model artifacts: safetensors weights with the JSON spec in the safetensors metadata.

Loading never unpickles anything: safetensors stores raw tensors, the spec is JSON. A SHA-256
digest over the metadata and every tensor (name, dtype, shape, bytes) is stored in the metadata too,
so a truncated or corrupted file is refused with one line instead of loading wrong weights. An artifact has
a ``kind``: ``model`` (a plain, possibly materialized, timm ViT), ``uvc`` (a UVC-compressed model with
masks and gates, evaluated as masked) or ``dynamicvit`` (a ViT with trained token predictors).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitc.core.errors import CheckFailed, UsageError
from vitc.core.fileio import atomic_path
from vitc.core.filetype import PLAIN
from vitc.core.spec import ViTSpec, build_model
from vitc.core.version import __version__

META_SPEC = "vitc.spec"
META_KIND = "vitc.kind"
META_EXTRA = "vitc.meta"
META_VERSION = "vitc.version"
META_DIGEST = "vitc.sha256"



@dataclass
class Artifact:
    path: Path
    spec: ViTSpec
    kind: str
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)


def save_artifact(
    path: str | os.PathLike[str],
    spec: ViTSpec,
    tensors: dict[str, torch.Tensor],
    kind: str = PLAIN,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``tensors`` (e.g. a ``state_dict``) and the spec to ``path`` atomically.

    Args:
        path: the ``.safetensors`` file; written to a temporary file beside it and renamed.
        spec: the architecture, stored as JSON in the file's metadata.
        tensors: the weights (and a method's state: masks, gates...); NaN/Inf refuses the write
            (``CheckFailed``).
        kind: the artifact kind that :data:`vitc.methods.METHODS` dispatches on (``model`` for a plain one).
        meta: provenance and method metadata (JSON), covered by the file's SHA-256 digest with the tensors.
    """
    from safetensors.torch import save_file

    clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    check_finite(clean, f"{path} not written", error=CheckFailed)
    metadata = {
        META_SPEC: spec.to_json(),
        META_KIND: kind,
        META_EXTRA: json.dumps(meta or {}, sort_keys=True),
        META_VERSION: __version__,
    }
    metadata[META_DIGEST] = content_digest(metadata, clean)
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp), metadata=metadata)
    return path


def save_model(path: str | os.PathLike[str], model: nn.Module, spec: ViTSpec, meta: dict[str, Any] | None = None) -> Path:
    return save_artifact(path, spec, model.state_dict(), kind=PLAIN, meta=meta)


def read_header(path: str | os.PathLike[str], verify: bool = True) -> tuple[ViTSpec, str, dict[str, Any]]:
    """Spec, kind and extra metadata of an artifact.

    With ``verify`` (the default) the content digest is checked, which reads every tensor once;
    ``verify=False`` reads only the header.
    """
    path, metadata, _ = _read(path, tensors=verify)
    return _parse_metadata(path, metadata)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The raw safetensors metadata of a vitc artifact (header only, not digest-checked)."""
    return _read(path, tensors=False)[1]


def load_artifact(path: str | os.PathLike[str]) -> Artifact:
    """Read and verify an artifact; any truncated, corrupt, foreign or self-contradicting file (a spec that
    does not describe its tensors, NaN/Inf weights) is a one-line ``UsageError``."""
    path, metadata, tensors = _read(path, tensors=True)
    spec, kind, meta = _parse_metadata(path, metadata)
    check_spec_matches_tensors(spec, tensors, str(path))
    check_finite(tensors, str(path))
    return Artifact(path=path, spec=spec, kind=kind, tensors=tensors, meta=meta)


def content_digest(metadata: dict[str, str], tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex) over the metadata (except the digest itself) and each tensor's name, dtype, shape, bytes."""
    h = hashlib.sha256()
    for key in sorted(metadata):
        if key != META_DIGEST:
            h.update(json.dumps([key, metadata[key]]).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def _read(path: str | os.PathLike[str], tensors: bool) -> tuple[Path, dict[str, str], dict[str, torch.Tensor]]:
    """Metadata (and tensors, digest-checked, when ``tensors``) of a vitc safetensors file."""
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            if META_SPEC not in metadata:
                raise UsageError(f"{path} is a safetensors file without a vitc spec (not a vitc artifact)")
            loaded = {k: fh.get_tensor(k) for k in fh.keys()} if tensors else {}
    except UsageError:
        raise
    except Exception as e:  # safetensors raises several types for truncated/corrupt files
        from vitc.core.filetype import SAFETENSORS, describe, sniff

        if sniff(path) != SAFETENSORS:
            raise UsageError(f"{path} is {describe(path)}, not a vitc artifact (.safetensors)") from None
        raise UsageError(f"{path} is not a readable safetensors file (truncated or corrupt): {_first_line(e)}") from None
    if tensors:
        expected = metadata.get(META_DIGEST)
        if expected is None:
            raise UsageError(f"{path} has no {META_DIGEST} content digest (corrupt, or not written by vitc.core.artifacts)")
        if content_digest(metadata, loaded) != expected:
            raise UsageError(f"{path} is corrupt: its content does not match its {META_DIGEST} digest")
    return path, metadata, loaded


def check_finite(tensors: dict[str, torch.Tensor], source: str, error: type[Exception] = UsageError) -> None:
    """Refuse weights with NaN or Inf values (or complex ones), naming the first tensor that has them."""
    for name, t in tensors.items():
        if t.is_complex():
            raise error(f"{source}: tensor {name} holds complex numbers ({str(t.dtype).removeprefix('torch.')}); "
                        "a ViT's weights are real")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise error(f"{source}: tensor {name} has {bad} non-finite (NaN/Inf) value{'s' if bad > 1 else ''}")


def check_spec_matches_tensors(spec: ViTSpec, tensors: dict[str, torch.Tensor], source: str) -> None:
    """The spec must describe the tensors (checked on the meta device, so nothing is allocated): an edited spec
    (a larger img_size, more heads...) is refused here, before a model or a data set of its size is built."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_model(spec).state_dict().items()}
    for name, shape in expected.items():
        got = tensors.get(name)
        if got is None:
            raise UsageError(f"{source}: its spec does not match its tensors: {name} is missing")
        if tuple(got.shape) != shape:
            raise UsageError(f"{source}: its spec does not match its tensors: {name} has shape {list(got.shape)}, the "
                             f"spec implies {list(shape)}")


def load_model(path: str | os.PathLike[str]) -> tuple[nn.Module, Artifact]:
    """Build the plain timm ViT a ``model`` artifact describes and load its weights (eval mode).

    Compressed artifacts (masks, gates, predictors to re-ratio) load through their method:
    :func:`vitc.methods.load_any`.
    """
    art = load_artifact(path)
    return plain_model(art), art


def plain_model(art: Artifact) -> nn.Module:
    """The model of a plain artifact; a compressed one is refused, naming its kind."""
    if art.kind != PLAIN:
        raise UsageError(f"{art.path} is a compressed artifact (kind {art.kind!r}); this step takes a plain model "
                         "(run `vitc materialize` on it first)")
    model = build_model(art.spec)
    load_state_dict_strict(model, art.tensors, str(art.path))
    return model.eval()


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load weights; any missing, unexpected or mis-shaped tensor is a one-line ``UsageError``."""
    own = model.state_dict()
    odd = next((k for k in state if not isinstance(k, str)), None)
    if odd is not None:
        raise UsageError(f"{source} has a tensor under the {type(odd).__name__} key {odd!r}, not a parameter name")
    complex_ = next((k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_complex()), None)
    if complex_ is not None:
        raise UsageError(f"{source}: tensor {complex_} holds complex numbers; a ViT's weights are real")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items() if k in state and state[k].shape != v.shape]
    empty_head = next((k for k in ("head.weight", "head.bias") if k in state and state[k].numel() == 0
                       and (k not in own or own[k].numel() > 0)), None)
    if empty_head is not None:  # else reported as an unexpected or mis-shaped key
        raise UsageError(f"{source} has a 0-class head ({empty_head} of shape {list(state[empty_head].shape)}); a "
                         "classifier needs at least one class")
    if mismatched:
        k, got, want = mismatched[0]
        more = f" (and {len(mismatched) - 1} more)" if len(mismatched) > 1 else ""
        raise UsageError(f"{source} does not match the model: {k} has shape {list(got)}, model expects {list(want)}{more}")
    if set(missing) == {"head.weight", "head.bias"} and not unexpected:
        raise UsageError(f"{source} has no classifier head (no head.weight, head.bias: saved from a num_classes=0 feature "
                         f"extractor?); the model has {own['head.weight'].shape[0]} classes")
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {missing[0]}" + (f" (+{len(missing) - 1})" if len(missing) > 1 else ""))
        if unexpected:
            parts.append(f"unexpected {unexpected[0]}" + (f" (+{len(unexpected) - 1})" if len(unexpected) > 1 else ""))
        raise UsageError(f"{source} does not match the model: {', '.join(parts)}")
    model.load_state_dict(state, strict=True)


def _existing(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    return path


def _parse_metadata(path: Path, metadata: dict[str, str]) -> tuple[ViTSpec, str, dict[str, Any]]:
    try:
        spec = ViTSpec.from_json(metadata[META_SPEC])
    except UsageError as e:
        raise UsageError(f"{path}: {e}") from None
    try:
        meta = json.loads(metadata.get(META_EXTRA, "{}"))
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict):
        raise UsageError(f"{path}: corrupt vitc metadata ({META_EXTRA} is not a JSON object)")
    return spec, metadata.get(META_KIND, PLAIN), meta


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
