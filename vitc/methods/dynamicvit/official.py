"""Import a checkpoint of the official DynamicViT code (raoyongming/DynamicViT) as a ``dynamicvit`` artifact.

The official DeiT models hold the backbone under timm's own names and one ``PredictorLG`` per stage under
``score_predictor.k``, the layout of vitc's :class:`~vitc.core.token_select.PredictorLG`; only the
predictors' place differs (vitc keeps each ``TokenSelect`` inside ``model.blocks``, before its stage block:
``score_predictor.0.*`` -> ``blocks.3.predictor.*``, ``blocks.3.*`` -> ``blocks.4.*``, ... for stages 3, 6, 9).
:func:`convert_official` is that mapping, a pure function of the state dict and the spec (like timm's
``checkpoint_filter_fn``), refusing in one line the first key or shape that does not fit;
:func:`import_official` reads the file with ``torch.load(weights_only=True)`` (plus the official
``argparse.Namespace`` of ``args``) and writes the artifact, ranking tokens by the official log p(keep).
What is read, what is not imported: docs/methods.md ("Importing an official checkpoint").
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vitc.core.errors import UsageError
from vitc.core.fileio import file_sha256
from vitc.core.spec import ViTSpec, build_model

PREDICTORS = "score_predictor"  # the official ModuleList of PredictorLG
WRAPPERS = ("model", "state_dict", "model_ema")  # checked in this order (vitc.core.models.clean_state_dict)
ORIGIN = "official DynamicViT code (github.com/raoyongming/DynamicViT, VisionTransformerDiffPruning)"


# ------------------------------------------------------------------------------------------------
# the key mapping (pure)
# ------------------------------------------------------------------------------------------------


def official_names(spec: ViTSpec, keys: list[str]) -> dict[str, str]:
    """vitc state-dict key → the official key, for the vitc ``keys`` of a token-selection ``spec``.

    Positions in vitc's ``model.blocks``: a ``TokenSelect`` before each stage block, then the block
    (the module tree of :func:`vitc.core.spec.build_model`). Other keys are the same in both.
    """
    block_at: dict[int, int] = {}  # position in model.blocks -> backbone block index
    stage_at: dict[int, int] = {}  # position in model.blocks -> predictor index
    pos = 0
    for i, b in enumerate(spec.blocks):
        if b.keep_tokens is not None:
            stage_at[pos] = len(stage_at)
            pos += 1
        block_at[pos] = i
        pos += 1
    names: dict[str, str] = {}
    for key in keys:
        parts = key.split(".", 2)
        if parts[0] != "blocks" or len(parts) < 3 or not parts[1].isdigit():
            names[key] = key
            continue
        p, rest = int(parts[1]), parts[2]
        if p in stage_at:
            if not rest.startswith("predictor."):
                raise ValueError(f"unexpected vitc key {key} in a token-selection module")
            names[key] = f"{PREDICTORS}.{stage_at[p]}.{rest[len('predictor.'):]}"
        else:
            names[key] = f"blocks.{block_at[p]}.{rest}"
    return names


def expected_shapes(spec: ViTSpec) -> dict[str, tuple[int, ...]]:
    """vitc state-dict key → shape of the model ``spec`` describes (built on the meta device, no memory)."""
    with torch.device("meta"):
        model = build_model(spec)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def convert_official(state: Mapping[str, torch.Tensor], spec: ViTSpec, *, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The vitc state dict of an official DynamicViT state dict, for token-selection ``spec``.

    Raises :class:`UsageError` with one line naming the first mismatch: a predictor count that is not
    the number of stages, then the first vitc parameter (in model order) whose official key is missing
    or has another shape, then the first key of the checkpoint nothing maps to.
    """
    stages = [i for i, b in enumerate(spec.blocks) if b.keep_tokens is not None]
    what = f"{spec.name} with predictors before blocks {','.join(map(str, stages))}"
    found = sorted({int(k.split(".")[1]) for k in state
                    if k.startswith(PREDICTORS + ".") and k.split(".")[1:2] and k.split(".")[1].isdigit()})
    if not found:
        raise UsageError(f"{source} has no {PREDICTORS}.* weights: not a DynamicViT checkpoint "
                         "(a plain DeiT loads with --checkpoint wherever a model name is taken)")
    if found != list(range(len(stages))):
        raise UsageError(f"{source} has {len(found)} score predictors ({PREDICTORS}.{found[0]}-{found[-1]}) but "
                         f"{what} needs {len(stages)}; give --stages with one block per predictor")
    shapes = expected_shapes(spec)
    names = official_names(spec, list(shapes))
    for key, shape in shapes.items():
        name = names[key]
        if name not in state:
            raise UsageError(f"{source} does not fit {what}: {name} is missing")
        got = tuple(state[name].shape)
        if got != shape:
            raise UsageError(f"{source} does not fit {what}: {name} has shape {list(got)}, expected {list(shape)}")
    known = set(names.values())
    extra = [k for k in state if k not in known]
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise UsageError(f"{source} does not fit {what}: unexpected key {extra[0]}{more}")
    return {key: state[names[key]] for key in shapes}


# ------------------------------------------------------------------------------------------------
# reading the file, writing the artifact
# ------------------------------------------------------------------------------------------------


def read_official(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], str | None]:
    """(state dict, the key it was stored under or None) of an official checkpoint; never runs pickled code."""
    from vitc.core.models import clean_state_dict, load_torch_file

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such checkpoint: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: dict[str, Any] = dict(load_file(str(path)))
        except Exception as e:
            raise UsageError(f"{path} is not a readable safetensors file: {str(e).splitlines()[0] if str(e) else e}") from None
    else:
        with torch.serialization.safe_globals([argparse.Namespace]):  # the official checkpoints' `args`
            obj = load_torch_file(path)
    wrapper = next((k for k in WRAPPERS if isinstance(obj.get(k), dict)), None)
    state = clean_state_dict(obj, str(path))
    if not state:
        raise UsageError(f"{path} holds no tensors" + (f" under '{wrapper}'" if wrapper else "")
                         + f" (expected a state dict, bare or under {', '.join(WRAPPERS)})")
    return state, wrapper


def import_official(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], settings: Any) -> dict[str, Any]:
    """``vitc import dynamicvit``: write the ``dynamicvit`` artifact ``out`` of an official checkpoint.

    ``settings``: :class:`~vitc.methods.dynamicvit.settings.OfficialImportSettings` (validated here):
    the backbone's model name, the keep ratio ρ, the stages (default depth/4, depth/2, 3·depth/4 — the
    official 3, 6, 9 for DeiT) and the ranking key (default ``keep``, the official one). The head's
    class count is taken from the checkpoint's ``head.weight`` (the rest of the architecture from the
    name). Returns a summary.
    """
    from vitc.core.artifacts import load_state_dict_strict, save_artifact
    from vitc.core.fileio import check_output_file
    from vitc.core.flops import model_macs
    from vitc.core.models import resolve_spec
    from vitc.core.provenance import origin, provenance
    from vitc.core.settings import validate
    from vitc.core.summary import count_params
    from vitc.methods.dynamicvit.compress import check_dense, dense_macs, resolve_stages, with_token_selection

    validate(settings)
    t0 = time.perf_counter()
    out = Path(out)
    if out.suffix != ".safetensors":
        raise UsageError(f"--out {out}: name the .safetensors artifact to write")
    check_output_file(out)
    state, wrapper = read_official(checkpoint)
    head = state.get("head.weight")
    num_classes = int(head.shape[0]) if head is not None and head.ndim == 2 else None
    if head is not None and num_classes == 0:
        raise UsageError(f"{checkpoint} has a 0-class head (head.weight of shape {list(head.shape)}); a classifier needs at "
                         "least one class")
    dense = resolve_spec(settings.model, num_classes=num_classes)
    check_dense(dense, settings.model)
    stages = resolve_stages(dense, settings.stages)
    spec = with_token_selection(dense.replace(token_score=settings.token_score), settings.keep_ratio, stages)
    tensors = convert_official(state, spec, source=str(checkpoint))
    model = build_model(spec)
    load_state_dict_strict(model, tensors, str(checkpoint))

    keep_tokens = [b.keep_tokens for b in spec.blocks if b.keep_tokens is not None]
    digest = file_sha256(checkpoint)
    imported = {"from": ORIGIN, "checkpoint": str(checkpoint), "sha256": digest, "wrapper": wrapper}
    meta = {
        "method": "dynamicvit",
        "keep_ratio": settings.keep_ratio,
        "stages": stages,
        "keep_tokens": keep_tokens,
        "token_score": spec.token_score,
        "source": settings.model,
        "imported": imported,
        "origin": origin(spec),
        "provenance": provenance("import dynamicvit", settings, checkpoint=imported),
    }
    save_artifact(out, spec, model.state_dict(), kind="dynamicvit", meta=meta)
    return {
        "artifact": str(out),
        "checkpoint": str(checkpoint),
        "sha256": digest,
        "wrapper": wrapper,
        "model": settings.model,
        "num_classes": spec.num_classes,
        "keep_ratio": settings.keep_ratio,
        "stages": stages,
        "keep_tokens": keep_tokens,
        "token_score": spec.token_score,
        "tensors": len(tensors),
        "params": count_params(spec),
        "macs": model_macs(spec),
        "dense_macs": dense_macs(spec),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def describe(r: dict[str, Any]) -> str:
    """The human-readable summary of :func:`import_official`."""
    held = f" (under '{r['wrapper']}')" if r["wrapper"] else ""
    return (f"wrote {r['artifact']}  from {r['checkpoint']}{held}: {r['tensors']} tensors\n"
            f"{r['model']} keep ratio {r['keep_ratio']:g}: tokens {'/'.join(map(str, r['keep_tokens']))} before blocks "
            f"{','.join(map(str, r['stages']))}, ranked by {r['token_score']}\n"
            f"MACs {r['macs'] / r['dense_macs']:.3f}x dense ({r['seconds']:.1f}s)")


__all__ = ["convert_official", "describe", "expected_shapes", "import_official", "official_names", "read_official"]
