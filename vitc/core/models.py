"""Resolve what a user names as a model: a vitc small config, a timm name, or an artifact path.

Small configs (for tests and the demo) are accepted anywhere a timm name is:

    vit-micro   32×32 input, patch 4 (64 patches), 8 blocks of 4 heads × 16, MLP 256, 10 classes
    vit-nano    16×16 input, patch 4 (16 patches), 4 blocks of 2 heads × 16, MLP 64, 10 classes
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitc.core.errors import UsageError
from vitc.core.spec import BlockSpec, ViTSpec, build_model, spec_from_model


def _small(name: str, img: int, patch: int, dim: int, depth: int, heads: int, mlp: int) -> ViTSpec:
    return ViTSpec(
        name=name, img_size=img, patch_size=patch, embed_dim=dim, num_classes=10,
        blocks=[BlockSpec(heads, dim // heads, mlp) for _ in range(depth)],
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear", crop_pct=1.0,
    )


SMALL_CONFIGS: dict[str, ViTSpec] = {
    "vit-micro": _small("vit-micro", img=32, patch=4, dim=64, depth=8, heads=4, mlp=256),
    "vit-nano": _small("vit-nano", img=16, patch=4, dim=32, depth=4, heads=2, mlp=64),
}


def is_artifact_path(name: str) -> bool:
    return name.endswith(".safetensors") or os.sep in name or Path(name).is_file()


def resolve_model(
    name: str,
    *,
    pretrained: bool = False,
    checkpoint: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    img_size: int | None = None,
) -> tuple[nn.Module, ViTSpec]:
    """Return ``(model, spec)`` for a small-config name, a timm name or a vitc artifact path.

    Args:
        name: ``vit-micro``/``vit-nano``, a timm ViT/DeiT name that fits the spec, or a ``.safetensors``
            artifact (loaded as it is).
        pretrained: timm hub weights for a name (needs internet once).
        checkpoint: a timm-style state dict (.pth/.pt/.bin or .safetensors, loaded with
            ``weights_only=True``) or a vitc artifact's weights, for a name.
        num_classes, img_size: resize the head / input of a name; an artifact keeps its own, and a
            mismatch is a ``UsageError``.

    The model is returned in eval mode.
    """
    if is_artifact_path(name):
        from vitc.core.artifacts import load_model

        if pretrained or checkpoint:
            raise UsageError("--pretrained/--checkpoint apply to model names, not to artifact files")
        model, art = load_model(name)
        spec = art.spec
        if num_classes is not None and num_classes != spec.num_classes:
            raise UsageError(f"{name} has {spec.num_classes} classes but the data has {num_classes}")
        if img_size is not None and img_size != spec.img_size:
            raise UsageError(f"{name} takes {spec.img_size}px input; --img-size {img_size} does not apply to an artifact")
        return model, spec

    model, spec = _from_name(name, pretrained, num_classes, img_size)
    if checkpoint is not None:
        load_checkpoint_weights(model, checkpoint)
    model.eval()
    return model, spec


def resolve_spec(name: str, *, num_classes: int | None = None, img_size: int | None = None) -> ViTSpec:
    """The spec of a small-config or timm name, without weights (the model is built on the meta device), or the
    spec a vitc artifact records."""
    if is_artifact_path(name) and Path(name).is_file():  # a vitc artifact: the spec it records
        from vitc.core.artifacts import read_header

        spec = read_header(name, verify=False)[0]
        if img_size is not None and img_size != spec.img_size:
            raise UsageError(f"{name} takes {spec.img_size}px input; --img-size {img_size} does not apply to an artifact")
        return spec if num_classes is None else spec.replace(num_classes=num_classes)
    with torch.device("meta"):
        return _from_name(name, False, num_classes, img_size)[1]


def dense_spec(name: str, *, num_classes: int | None = None) -> ViTSpec:
    """The architecture of a dense model (timm name, vitc config or plain artifact; no weights are read): what
    ``vitc profile`` measures and a pipeline's methods start from. A compressed artifact is refused."""
    if is_artifact_path(name):
        from vitc.core.artifacts import PLAIN, read_header

        spec, kind, _ = read_header(name, verify=False)
        if kind != PLAIN:
            raise UsageError(f"{name} is a {kind} artifact; give the dense model it was compressed from")
        return spec if num_classes is None else spec.replace(num_classes=num_classes)
    return resolve_spec(name, num_classes=num_classes)


def _from_name(name: str, pretrained: bool, num_classes: int | None, img_size: int | None) -> tuple[nn.Module, ViTSpec]:
    if name in SMALL_CONFIGS:
        if pretrained:
            raise UsageError(f"{name} is a vitc test config with no pretrained weights")
        spec = SMALL_CONFIGS[name]
        if num_classes is not None:
            spec = spec.replace(num_classes=num_classes)
        if img_size is not None:
            spec = spec.replace(img_size=img_size)
        return build_model(spec, init_weights=True), spec
    import timm

    if not timm.is_model(name):
        close = suggest(name)
        hint = f"; did you mean {', '.join(close)}?" if close else f" (vitc configs: {', '.join(SMALL_CONFIGS)})"
        raise UsageError(f"unknown model {name!r}: not a timm model name, a vitc config or an existing file{hint} "
                         "(`vitc models` lists the accepted names)")
    kwargs: dict[str, Any] = {}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if img_size is not None:
        kwargs["img_size"] = img_size
    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except (RuntimeError, OSError, ValueError, TypeError, AssertionError) as e:
        what = "download pretrained weights for" if pretrained else "create"
        raise UsageError(f"could not {what} {name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return model, spec_from_model(model, name)


TIMM_MODULES = ("vision_transformer", "deit")  # the timm model files whose architectures vitc can describe


def timm_names() -> list[str]:
    """Architecture names of timm's ViT/DeiT model files (not all of them fit the spec; see :func:`list_models`)."""
    import timm

    return sorted(timm.list_models(module=list(TIMM_MODULES)))


def suggest(name: str, n: int = 3) -> list[str]:
    """The accepted names closest to a misspelled one: names that contain it, else the most similar."""
    import difflib

    names = [*SMALL_CONFIGS, *timm_names()]
    stem = name.lower().strip()
    containing = sorted((m for m in names if stem and stem in m.lower()), key=len)
    return containing[:n] or difflib.get_close_matches(name, names, n=n, cutoff=0.6)


def list_models(pattern: str = "") -> list[dict[str, Any]]:
    """Small configs and timm ViT/DeiT architectures that fit the spec, matching ``pattern``.

    ``pattern``: a substring, or a shell pattern with ``*``/``?``. Each timm name is checked by building
    it on the meta device (no memory, no download); the results are cached per timm version in
    ``$XDG_CACHE_HOME/vitc`` (``~/.cache/vitc``), since checking all of them takes ~30 s.
    """
    import fnmatch
    import warnings

    import timm

    from vitc.core.flops import model_macs
    from vitc.core.progress import progress
    from vitc.core.summary import count_params

    def matches(name: str) -> bool:
        if not pattern:
            return True
        return fnmatch.fnmatch(name, pattern) if any(c in pattern for c in "*?[") else pattern in name

    def row(name: str, spec: ViTSpec, source: str, tags: int) -> dict[str, Any]:
        return {"name": name, "source": source, "img_size": spec.img_size, "patch_size": spec.patch_size,
                "depth": spec.depth, "embed_dim": spec.embed_dim, "params": count_params(spec), "macs": model_macs(spec),
                "pretrained_tags": tags}

    rows = [row(n, s, "vitc config", 0) for n, s in SMALL_CONFIGS.items() if matches(n)]
    cache_file = _cache_dir() / f"models-timm-{timm.__version__}.json"
    cache, problem = _read_cache(cache_file)
    tags: dict[str, int] = {}
    for full in timm.list_models(module=list(TIMM_MODULES), pretrained=True):
        arch = full.split(".")[0]
        tags[arch] = tags.get(arch, 0) + 1
    todo = [n for n in timm_names() if matches(n)]
    changed = False
    stale = 0
    with progress("checking timm models", len(todo)) as bar:
        for name in todo:
            spec = _cached_spec(cache.get(name))
            if spec is None and not _cached_refusal(cache.get(name)):
                stale += name in cache  # an entry this version cannot read: checked again
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        spec = resolve_spec(name)
                        cache[name] = {"spec": spec.to_dict()}
                except Exception as e:  # a refusal (UsageError) or a model timm cannot build here
                    cache[name] = {"refused": str(e).splitlines()[0] if str(e) else type(e).__name__}
                changed = True
            bar.advance()
            if spec is not None:
                rows.append(row(name, spec, "timm", tags.get(name, 0)))
    if problem or stale:
        from vitc.core.progress import log

        log(f"note: rebuilt the model cache {cache_file} ({problem or f'{stale} stale entries'})")
    if changed:
        _write_cache(cache_file, cache)
    return rows


def _cached_spec(entry: Any) -> ViTSpec | None:
    """The spec of a cache entry, or None when it is a refusal or cannot be read (stale or corrupt)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("spec"), dict):
        return None
    try:
        return ViTSpec.from_dict(entry["spec"])
    except Exception:  # written by another vitc version, or edited: recomputed
        return None


def _cached_refusal(entry: Any) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get("refused"), str) and "spec" not in entry


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vitc"


def _read_cache(path: Path) -> tuple[dict[str, Any], str | None]:
    """The cache's entries and, when it exists but cannot be used, why (it is then rebuilt)."""
    import json

    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}, None
    except (OSError, UnicodeDecodeError) as e:
        return {}, f"it could not be read: {e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__}"
    try:
        data = json.loads(text)
    except ValueError:
        return {}, "it was not valid JSON"
    if not isinstance(data, dict):
        return {}, "it was not a JSON object"
    return data, None


def _write_cache(path: Path, cache: dict[str, Any]) -> None:
    from vitc.core.errors import VitcError
    from vitc.core.fileio import write_json

    with contextlib.suppress(VitcError, OSError):  # a cache only: an unwritable home costs time, not correctness
        write_json(path, cache)


def load_checkpoint_weights(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a foreign or vitc checkpoint into ``model``; never unpickles code."""
    from vitc.core.artifacts import load_state_dict_strict

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such checkpoint: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as e:
            raise UsageError(f"{path} is not a readable safetensors file: {str(e).splitlines()[0]}") from None
    else:
        state = load_torch_file(path)
    state = clean_state_dict(state, str(path))
    load_state_dict_strict(model, state, str(path))


def load_torch_file(path: str | os.PathLike[str]) -> dict:
    """``torch.load(weights_only=True)``: a pickle that would run code is refused with one line."""
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing them
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UsageError(f"{path} was refused: not a plain-weights checkpoint (pickled code or custom objects, "
                         f"or a corrupt file; loading it could run code): {_unpickling_reason(e)}") from None
    except Exception:  # the restricted unpickler and the zip reader raise many types on corrupt files
        raise UsageError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?)") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{path} does not contain a state dict")
    return obj


def _unpickling_reason(e: BaseException) -> str:
    """The informative line of torch's weights-only refusal (it names the blocked global or opcode)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if "unsupported" in ln.lower() and "weights_only" not in ln:
            return ln[:160]
    return "unsupported pickle content"


def clean_state_dict(obj: dict, source: str = "the checkpoint") -> dict[str, torch.Tensor]:
    """Unwrap ``model``/``state_dict``/``model_ema`` and strip ``module.``/``_orig_mod.`` prefixes.

    Refused in one line, naming the tensor by the checkpoint's own key: a key that is not a name, a complex
    tensor (a ViT's weights are real; loading one would drop the imaginary part), NaN/Inf values.
    """
    for key in ("model", "state_dict", "model_ema"):
        if key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    out = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            continue
        if not isinstance(k, str):
            raise UsageError(f"{source} has a tensor under the {type(k).__name__} key {k!r}, not a parameter name "
                             "(a state dict maps names to tensors)")
        if v.is_complex():
            raise UsageError(f"{source}: tensor {k} holds complex numbers ({str(v.dtype).removeprefix('torch.')}); "
                             "a ViT's weights are real")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            bad = int((~torch.isfinite(v)).sum())
            raise UsageError(f"{source}: tensor {k} has {bad} non-finite (NaN/Inf) value{'s' if bad > 1 else ''}")
        name = k
        for prefix in ("module.", "_orig_mod."):
            if name.startswith(prefix):
                name = name[len(prefix):]
        out[name] = v
    return out
