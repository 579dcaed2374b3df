"""Compression methods and the one registry of artifact kinds.

``METHODS`` maps an artifact kind to its :class:`~vitc.methods.base.Method`. Loading any artifact,
materializing it, exporting it, ``vitc info``, the pipeline and the CLI's ``compress`` commands go
through it; no other module switches on a kind string. To add a method, write a sub-package with a
``Method`` subclass and add it to the tuple below.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitc.core.errors import UsageError
from vitc.core.filetype import PLAIN
from vitc.methods.base import Materialized, Method, ratio_tag
from vitc.methods.dynamicvit import DynamicViT
from vitc.methods.uvc import UVC
from vitc.methods.uvc_dynamicvit import UVCDynamicViT

if TYPE_CHECKING:
    from torch import nn

    from vitc.core.artifacts import Artifact
    from vitc.core.spec import ViTSpec


METHODS: dict[str, Method] = {m.kind: m for m in (UVC(), DynamicViT(), UVCDynamicViT())}


def method_of(kind: str, source: str | os.PathLike[str] = "") -> Method:
    """The method that owns artifact ``kind``; an unknown kind is a one-line error naming the file."""
    try:
        return METHODS[kind]
    except KeyError:
        where = f"{source}: " if source else ""
        raise UsageError(f"{where}unknown artifact kind {kind!r} (known: {', '.join([PLAIN, *METHODS])})") from None


def load_any(path: str | os.PathLike[str]) -> tuple[nn.Module, Artifact]:
    """The evaluable model of an artifact of any kind (eval mode) and the artifact."""
    from vitc.core.artifacts import load_artifact, plain_model

    art = load_artifact(path)
    model = plain_model(art) if art.kind == PLAIN else method_of(art.kind, art.path).load(art)
    return model.eval(), art


def resolve_any(name: str, *, pretrained: bool = False, checkpoint: str | os.PathLike[str] | None = None,
                num_classes: int | None = None) -> tuple[nn.Module, ViTSpec]:
    """Like :func:`vitc.core.models.resolve_model`, but an artifact may be of any kind."""
    from vitc.core.models import is_artifact_path, resolve_model

    if is_artifact_path(name):
        if pretrained or checkpoint:
            raise UsageError("--pretrained/--checkpoint apply to model names, not to artifact files")
        model, art = load_any(name)
        if num_classes is not None and num_classes != art.spec.num_classes:
            raise UsageError(f"{name} has {art.spec.num_classes} classes but the data has {num_classes}")
        return model, art.spec
    return resolve_model(name, pretrained=pretrained, checkpoint=checkpoint, num_classes=num_classes)


def plain_module(art: Artifact, keep_ratio: float | None = None) -> tuple[nn.Module, ViTSpec, float | None]:
    """The plain module to export or verify for an artifact: a plain one as it is, a compressed one
    materialized (at ``keep_ratio`` for token-selection methods, else its trained ratio).

    Returns (model, spec, keep ratio or None).
    """
    from vitc.core.artifacts import plain_model

    recorded = art.meta.get("keep_ratio")
    trained = float(recorded) if isinstance(recorded, (int, float)) else None
    if art.kind == PLAIN:
        if keep_ratio is not None and keep_ratio != trained:
            what = (f"was materialized at keep ratio {trained:g}" if trained is not None
                    else "has no token selection to re-ratio")
            raise UsageError(f"{art.path} {what}; --keep-ratio {keep_ratio:g} needs the DynamicViT (token-selection) artifact it came from")
        return plain_model(art), art.spec, trained
    method = method_of(art.kind, art.path)
    _check_ratio_applies(method, art, keep_ratio)
    m = method.materialize(art, keep_ratio)
    return m.model.eval(), m.spec, m.keep_ratio


def _check_ratio_applies(method: Method, art: Artifact, keep_ratio: float | None) -> None:
    if keep_ratio is not None and not method.token_selection:
        raise UsageError(f"--keep-ratio applies to token-selection artifacts; {art.path} is a {method.title} artifact")


def materialize(path: str | os.PathLike[str], out: str | os.PathLike[str],
                keep_ratios: list[float] | None = None, *, target_speedup: float | None = None,
                latency: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """``vitc materialize``: write a plain, physically smaller model per keep ratio; return the summary.

    Args:
        out: a ``.safetensors`` file (one model), or a folder — ``materialized.safetensors`` in it, or
            ``materialized-keepR.safetensors`` per ratio for token-selection methods.
        target_speedup: token-selection artifacts: materialize at the largest keep ratio that the ``latency``
            profile (``vitc profile``) predicts to be this much faster than its dense model (instead of ``keep_ratios``).
    """
    from vitc.core.artifacts import load_artifact, save_model
    from vitc.core.flops import model_macs
    from vitc.core.provenance import origin, provenance
    from vitc.core.summary import count_params

    art = load_artifact(path)
    if art.kind == PLAIN:
        raise UsageError(f"{path} is a plain model artifact (kind {PLAIN!r}); nothing to materialize")
    method = method_of(art.kind, art.path)
    chosen: dict[str, Any] = {}
    if target_speedup is not None or latency is not None:
        keep_ratios, chosen = _ratio_for_target(method, art, keep_ratios, target_speedup, latency)
    for r in keep_ratios or []:
        _check_ratio_applies(method, art, r)
    if keep_ratios and len({ratio_tag(r) for r in keep_ratios}) != len(keep_ratios):
        raise UsageError(f"--keep-ratios lists a ratio twice: {','.join(map(str, keep_ratios))}")
    ratios: list[float | None] = list(keep_ratios) if keep_ratios else [None]
    targets = _targets(Path(out), method, ratios, art)
    from vitc.core.fileio import refuse_overwriting_inputs

    refuse_overwriting_inputs([("--out", t) for t in targets], [art.path])  # before the first variant is written
    root = origin(art.spec, art.meta)
    before = model_macs(art.spec.without_token_selection())
    made: list[tuple[Materialized, Path]] = [(method.materialize(art, r), t) for r, t in zip(ratios, targets)]
    variants = []
    for m, target in made:
        meta = {"method": method.kind, **m.meta, "origin": root,
                "provenance": provenance("materialize", {"keep_ratio": m.keep_ratio}, parent=art.path)}
        save_model(target, m.model, m.spec, meta=meta)
        macs, params = model_macs(m.spec), count_params(m.spec)
        variants.append({
            "artifact": str(target), "keep_ratio": m.keep_ratio,
            "keep_tokens": [b.keep_tokens for b in m.spec.blocks if b.keep_tokens is not None],
            "macs": macs, "params": params, "macs_ratio": macs / before, "macs_ratio_origin": macs / root["macs"],
            **m.report, **chosen,
        })
    summary: dict[str, Any] = {"kind": method.kind, "method": method.title, "source": str(art.path),
                               "macs_before": before, "params_before": count_params(art.spec), "origin": root,
                               "variants": variants}
    if len(variants) == 1:
        v = variants[0]
        summary.update({"artifact": v["artifact"], "macs_after": v["macs"], "params_after": v["params"],
                        **{k: v[k] for k in made[0][0].report}})
    return summary


def _ratio_for_target(method: Method, art: Artifact, keep_ratios: list[float] | None, target_speedup: float | None,
                      latency: str | os.PathLike[str] | None) -> tuple[list[float], dict[str, Any]]:
    """The keep ratio a speedup target asks for (``--target-speedup S --latency LATENCY.json``)."""
    if target_speedup is None or latency is None:
        raise UsageError("--target-speedup and --latency go together: the target is read off the latency profile")
    if keep_ratios:
        raise UsageError("give --keep-ratios or --target-speedup, not both")
    if not (math.isfinite(target_speedup) and target_speedup > 1):  # nan passes a range check, inf is unreachable
        raise UsageError(f"--target-speedup must be a finite number > 1, got {target_speedup:g}")
    from vitc.core.latency import load_latency

    choice = method.keep_ratio_for_speedup(art, load_latency(latency), target_speedup)
    return [choice["keep_ratio"]], {**choice, "latency": str(latency)}


def _targets(out: Path, method: Method, ratios: list[float | None], art: Artifact) -> list[Path]:
    from vitc.core.fileio import check_output_dir, check_output_file

    if out.suffix == ".safetensors":
        check_output_file(out)
        if len(ratios) > 1:
            raise UsageError("--out must be a folder when several --keep-ratios are given")
        if out.exists() and out.is_dir():
            raise UsageError(f"--out {out} is a folder; name the .safetensors file to write, or give the folder without the suffix")
        return [out]
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is an existing file, not a folder (give a .safetensors path or a folder)")
    check_output_dir(out)
    if not method.token_selection:
        return [out / "materialized.safetensors"]
    resolved = [r if r is not None else method.trained_keep_ratio(art) for r in ratios]
    return [out / (f"materialized-keep{ratio_tag(r)}.safetensors" if r is not None else "materialized.safetensors")
            for r in resolved]


__all__ = [
    "METHODS",
    "Materialized",
    "Method",
    "load_any",
    "materialize",
    "method_of",
    "plain_module",
    "ratio_tag",
    "resolve_any",
]
