"""What a latency model (``vitc profile``) predicts: ``vitc profile --predict`` and ``vitc bench --latency``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vitc.checks.bench import BenchResult
from vitc.core.errors import UsageError
from vitc.core.latency import LatencyModel, load_latency
from vitc.core.progress import log
from vitc.core.spec import ViTSpec


def predict_targets(latency: str | os.PathLike[str], targets: list[str]) -> dict[str, Any]:
    """``vitc profile --predict``: predicted latency and speedup over dense of each target (any vitc model)."""
    model = load_latency(latency)
    rows = []
    for target in targets:
        spec = deployed_spec(target)
        pred = model.predict(spec, target)
        rows.append({"target": target, "latency_ms": pred["latency_ms"], "speedup": pred["speedup"],
                     "latency_ratio": pred["latency_ratio"], "blocks": len(spec.blocks)})
    return {"latency": str(latency), "profile": {"model": model.spec.name, **model.target}, "dense_ms": model.dense_ms,
            "predictions": rows}


def deployed_spec(target: str) -> ViTSpec:
    """The architecture ``target`` computes when deployed: a compressed artifact's materialized spec (UVC sliced,
    token selection at its trained keep ratio), an ONNX file's recorded spec, or a model name's."""
    from vitc.backends import split_target
    from vitc.core.models import is_artifact_path, resolve_spec

    target = split_target(target)[1]
    if Path(target).suffix.lower() == ".onnx":
        from vitc.onnx.io import load_onnx, onnx_spec

        spec = onnx_spec(load_onnx(Path(target)), target)
        if spec is None:
            raise UsageError(f"{target} has no vitc.spec metadata (not exported by vitc); predict from its artifact instead")
        return spec
    if is_artifact_path(target):
        from vitc.onnx.source import load_deployable

        return load_deployable(target).spec
    return resolve_spec(target)


def add_predictions(result: BenchResult, latency: LatencyModel | str | os.PathLike[str]) -> BenchResult:
    """``vitc bench --latency``: the latency model's prediction beside each measurement at the batch size it was
    profiled for (in place; returned): ``predicted_latency_ms`` on every row, and ``predicted_speedup`` (over the
    reference) where there is one. Batch sizes other than the profile's get no prediction (the model speaks for one
    batch size); ``result.prediction`` says which."""
    model = latency if isinstance(latency, LatencyModel) else load_latency(latency)
    batch = int(model.target["batch_size"])
    names = [t.target for t in result.targets]
    predicted = [model.predict(deployed_spec(t), t) for t in names]
    result.prediction = {"latency": model.source, "batch_size": batch, "profile": model.target,
                         "targets": [{"target": t, "latency_ms": p["latency_ms"], "speedup_vs_dense": p["speedup"]}
                                     for t, p in zip(names, predicted)]}
    matched = False
    for res in result.results:
        if res.batch != batch:
            continue
        matched = True
        for row, p in zip(res.rows, predicted):
            row.predicted_latency_ms = p["latency_ms"]
            if result.reference is not None:
                row.predicted_speedup = predicted[0]["latency_ms"] / p["latency_ms"]
    if not matched:
        log(f"warning: {model.source} was profiled at batch {batch}; no batch size measured here matches, so nothing is "
            "predicted")
    return result


__all__ = ["add_predictions", "deployed_spec", "predict_targets"]
