"""Resolve what a user names as a model: a vitc small config, a timm name, or an artifact path.

Small configs (for tests and the demo) are accepted anywhere a timm name is:

    vit-micro   32×32 input, patch 4 (64 patches), 8 blocks of 4 heads × 16, MLP 256, 10 classes
    vit-nano    16×16 input, patch 4 (16 patches), 4 blocks of 2 heads × 16, MLP 64, 10 classes
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitc.core.errors import UsageError
from vitc.core.spec import BlockSpec, ViTSpec, build, spec_from_model


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

    ``num_classes``/``img_size`` resize the head / input of a name (artifacts keep theirs; a
    mismatch is an error). ``checkpoint`` loads a timm-style state dict (.pth/.pt/.bin or
    .safetensors, loaded with ``weights_only=True``) or a vitc artifact's weights.
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
    """The spec of a small-config or timm name, without weights (the model is built on the meta device)."""
    with torch.device("meta"):
        return _from_name(name, False, num_classes, img_size)[1]


def _from_name(name: str, pretrained: bool, num_classes: int | None, img_size: int | None) -> tuple[nn.Module, ViTSpec]:
    if name in SMALL_CONFIGS:
        if pretrained:
            raise UsageError(f"{name} is a vitc test config with no pretrained weights")
        spec = SMALL_CONFIGS[name]
        if num_classes is not None:
            spec = spec.replace(num_classes=num_classes)
        if img_size is not None:
            spec = spec.replace(img_size=img_size)
        return build(spec, init_weights=True), spec
    import timm

    if not timm.is_model(name):
        known = ", ".join(SMALL_CONFIGS)
        raise UsageError(f"unknown model {name!r}: not a timm model name, a vitc config ({known}) or an existing file")
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
    state = clean_state_dict(state)
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


def clean_state_dict(obj: dict) -> dict[str, torch.Tensor]:
    """Unwrap ``model``/``state_dict``/``model_ema`` and strip ``module.``/``_orig_mod.`` prefixes."""
    for key in ("model", "state_dict", "model_ema"):
        if key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    out = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            continue
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out
