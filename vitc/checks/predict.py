"""What a latency model (``vitc profile``) predicts — ``vitc profile --predict`` and ``vitc bench --latency`` — and
what it may be asked to predict.

An artifact or model name is predicted as it would be deployed on the profile's own backend and precision; an ONNX
file, an OpenVINO IR or a bench run is what it is: a profile of another backend, precision or batch cannot speak
for it (:meth:`vitc.core.latency.LatencyModel.check_deployment`), and is refused in one line (exit 2) instead of
predicting silently. Where the target records the dense model it was compressed from (the artifact's ``origin``,
the ONNX's ``vitc.origin``), the profile must be of that model; a model name is a dense model itself
(:meth:`vitc.core.latency.LatencyModel.check_fits`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitc.backends import ARTIFACT, BACKENDS, ONNX_BACKENDS, detect_backend, split_target
from vitc.checks.bench import BenchResult
from vitc.core.errors import UsageError
from vitc.core.latency import LatencyModel, load_latency
from vitc.onnx.io import META_ORIGIN

if TYPE_CHECKING:
    from vitc.checks.settings import BenchSettings
    from vitc.core.spec import ViTSpec

IR_SUFFIX = ".xml"


@dataclass
class Deployment:
    """A target as a latency profile sees it. ``backends``/``precision``/``static_batch``: None where the target
    does not fix them (an artifact deploys anywhere)."""

    target: str
    spec: ViTSpec
    origin: dict[str, Any] | None = None
    dense: bool = False  # the spec is a dense model itself (a model name)
    backends: tuple[str, ...] | None = None
    precision: str | None = None
    static_batch: int | None = None

    def check(self, model: LatencyModel, *, backend: str | None = None, precision: str | None = None,
              batch_sizes: list[int] | None = None) -> None:
        """Refuse ``model`` for this target: another dense model, or (given or fixed by the file) another backend,
        precision or batch."""
        model.check_fits(self.spec, self.target, self.origin, dense=self.dense)
        backends = (backend,) if backend is not None else self.backends
        if backends is not None and model.target.get("backend") not in backends:
            model.check_deployment(self.target, backend=" or ".join(backends))
        precision = precision if precision is not None else self.precision
        if self.static_batch is not None:
            batch_sizes = [self.static_batch]
        model.check_deployment(self.target, precision=precision, batch_sizes=batch_sizes)


def _origin(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def deployment_of(target: str) -> Deployment:
    """The :class:`Deployment` of ``target``: a compressed artifact's materialized spec (UVC sliced, token selection
    at its trained keep ratio), an ONNX file's or IR's recorded spec, or a model name's."""
    from vitc.core.models import is_artifact_path, resolve_spec

    suffix = Path(target).suffix.lower()
    if suffix == ".onnx":
        from vitc.onnx.io import load_onnx, metadata, onnx_spec, precision_of

        proto = load_onnx(Path(target))
        spec = onnx_spec(proto, target)
        if spec is None:
            raise UsageError(f"{target} has no vitc.spec metadata (not exported by vitc); predict from its artifact instead")
        dims = proto.graph.input[0].type.tensor_type.shape.dim if proto.graph.input else []
        batch = dims[0].dim_value if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
        return Deployment(target, spec, _origin(metadata(proto).get(META_ORIGIN)), backends=ONNX_BACKENDS,
                          precision=precision_of(proto), static_batch=batch)
    if suffix == IR_SUFFIX:
        from vitc.backends.openvino_runner import read_source
        from vitc.core.spec import ViTSpec

        model, meta = read_source(target)
        if not meta.get("vitc.spec"):
            raise UsageError(f"{target} has no vitc metadata (not built by `vitc build`); predict from its artifact instead")
        spec = ViTSpec.from_json(meta["vitc.spec"])
        first = model.input(0).get_partial_shape()[0]
        return Deployment(target, spec, _origin(meta.get(META_ORIGIN)), backends=(detect_backend(target),),
                          precision=meta.get("vitc.precision", "fp32"),
                          static_batch=None if first.is_dynamic else first.get_length())
    if is_artifact_path(target):
        from vitc.onnx.source import load_deployable

        dep = load_deployable(target)
        return Deployment(target, dep.spec, _origin(dep.meta.get("origin")))
    return Deployment(target, resolve_spec(target), dense=True)


def check_bench_predictions(model: LatencyModel, targets: list[str], settings: BenchSettings) -> list[Deployment]:
    """Before ``vitc bench --latency`` measures anything: every target must be of the profiled model and run as the
    profile was measured (its backend: ``BACKEND:PATH``, else ``--backend``, else the file's; its precision: an
    ONNX/IR file's own, else ``--precision`` or fp32 for torch; at least one batch size the profile's)."""
    out = []
    for target in targets:
        named, path = split_target(target)
        backend = named or (settings.backend if settings.backend != "auto" else detect_backend(path))
        dep = deployment_of(path)
        dep.target = target
        precision = settings.precision or (BACKENDS[backend].precisions[0] if BACKENDS[backend].reads == ARTIFACT else None)
        dep.check(model, backend=backend, precision=dep.precision or precision, batch_sizes=list(settings.batch_sizes))
        out.append(dep)
    return out




def predict_targets(latency: str | os.PathLike[str], targets: list[str]) -> dict[str, Any]:
    """``vitc profile --predict``: predicted latency and speedup over dense of each target (any vitc model)."""
    model = load_latency(latency)
    rows = []
    for target in targets:
        dep = deployment_of(target)
        dep.check(model)  # of the profiled model, and a file runs as the profile was measured
        spec = dep.spec
        pred = model.predict(spec, target)
        rows.append({"target": target, "latency_ms": pred["latency_ms"], "speedup": pred["speedup"],
                     "latency_ratio": pred["latency_ratio"], "blocks": len(spec.blocks)})
    return {"latency": str(latency), "profile": {"model": model.spec.name, **model.target}, "dense_ms": model.dense_ms,
            "predictions": rows}


def deployed_spec(target: str) -> ViTSpec:
    """The architecture ``target`` computes when deployed: a compressed artifact's materialized spec (UVC sliced,
    token selection at its trained keep ratio), an ONNX file's or IR's recorded spec, or a model name's."""
    return deployment_of(split_target(target)[1]).spec


def add_predictions(result: BenchResult, latency: LatencyModel | str | os.PathLike[str]) -> BenchResult:
    """``vitc bench --latency``: the latency model's prediction beside each measurement at the batch size it was
    profiled for (in place; returned): ``predicted_latency_ms`` on every row, and ``predicted_speedup`` (over the
    reference) where there is one. Batch sizes other than the profile's get no prediction (the model speaks for one
    batch size); ``result.prediction`` says which."""
    model = latency if isinstance(latency, LatencyModel) else load_latency(latency)
    for t in result.targets:  # each runner's own backend and precision (an engine's or IR's are known once open)
        model.check_deployment(t.target, backend=t.backend, precision=t.precision)
    model.check_deployment(", ".join(t.target for t in result.targets), batch_sizes=[r.batch for r in result.results])
    batch = int(model.target["batch_size"])
    names = [t.target for t in result.targets]
    predicted = [model.predict(deployed_spec(t), t) for t in names]
    result.prediction = {"latency": model.source, "batch_size": batch, "profile": model.target,
                         "targets": [{"target": t, "latency_ms": p["latency_ms"], "speedup_vs_dense": p["speedup"]}
                                     for t, p in zip(names, predicted)]}
    for res in result.results:
        if res.batch != batch:
            continue
        for row, p in zip(res.rows, predicted):
            row.predicted_latency_ms = p["latency_ms"]
            if result.reference is not None:
                row.predicted_speedup = predicted[0]["latency_ms"] / p["latency_ms"]
    return result


__all__ = ["Deployment", "add_predictions", "check_bench_predictions", "deployed_spec", "deployment_of", "predict_targets"]
