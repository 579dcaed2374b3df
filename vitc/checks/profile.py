"""``vitc profile``: measure a latency model (:mod:`vitc.core.latency`) on the backend a model will be deployed to.

Probes are small ViTs of the profiled model's width, head size and patch size, each compiled for the target
backend exactly as a deployed model would be (an artifact for torch, vitc's ONNX export for ONNX backends, an
engine for engine backends) and timed with the bench protocol (:func:`vitc.checks.bench.measure_group`), each
**alternately with one reference probe** (1 full block at every token) that stays open throughout: a probe's
latency is the median of its per-round ratios to the reference times the reference's median over the whole
profile, so a slow drift of the machine (other load, clocks) cancels instead of skewing the probes measured
while it lasted (on the shared 2-core build machine, unpaired probes of one profile disagreed by up to 40%
with the same shapes timed side by side). Token counts
come from the input size: a probe at grid side g has g² patch tokens, so the grid of tokens is (1 .. full side)².
Per token count: 1 and 3 full blocks, 2 blocks at each grid head count, 2 at each grid MLP width, and a
token-selection module before 1 full block; plus the dense model itself, which calibrates the sum.

Every measured probe is written to ``OUT.partial.json`` at once: a killed run resumes from there when the same
model, backend, device, precision, batch, threads and grid are asked for again, and starts afresh (saying so)
otherwise.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from vitc.backends import BACKENDS, check_backend, load_runner
from vitc.checks.bench import measure, measure_group
from vitc.checks.environment import environment
from vitc.checks.settings import ProfileSettings
from vitc.core.errors import UsageError
from vitc.core.fileio import atomic_path, check_output_dir, check_output_file, write_json
from vitc.core.latency import LatencyModel, fit_tables, load_latency, probe_key
from vitc.core.progress import log, progress
from vitc.core.spec import BlockSpec, ViTSpec

PROTOCOL = "paired/1"  # every probe timed alternately with the reference probe (1 full block, all tokens)

# ------------------------------------------------------------------------------------------------
# the grid
# ------------------------------------------------------------------------------------------------

def _spread(low: int, high: int, points: int) -> list[int]:
    """``points`` distinct integers from ``low`` to ``high`` inclusive, evenly spread (fewer if the range is short)."""
    if high <= low:
        return [high]
    values = {round(low + (high - low) * i / (points - 1)) for i in range(points)}
    return sorted(values)


@dataclass
class Grid:
    sides: list[int]  # grid sides g: g² patch tokens
    heads: list[int]
    mlp: list[int]

    def tokens(self, spec: ViTSpec) -> list[int]:
        return [g * g + spec.num_prefix_tokens for g in self.sides]

    def to_dict(self, spec: ViTSpec) -> dict[str, Any]:
        return {"sides": self.sides, "tokens": self.tokens(spec), "heads": self.heads, "mlp": self.mlp}


def plan_grid(spec: ViTSpec, settings: ProfileSettings) -> Grid:
    """The coarse grid for a dense ``spec`` whose blocks all share one shape (as timm ViTs do)."""
    shapes = {(b.heads, b.head_dim, b.mlp_hidden) for b in spec.blocks}
    if len(shapes) != 1 or any(b.keep_tokens is not None for b in spec.blocks):
        raise UsageError(f"{spec.name} is not a dense model with one block shape (heads/head_dim/MLP {sorted(shapes)}); "
                         "profile the dense model it was compressed from")
    heads, _, hidden = shapes.pop()
    mlp_low = max(1, hidden // 8)
    return Grid(sides=_spread(1, spec.grid, settings.token_points), heads=_spread(1, heads, settings.head_points),
                mlp=_spread(mlp_low, hidden, settings.mlp_points))


@dataclass
class Probe:
    key: str
    spec: ViTSpec
    kind: str
    tokens: int
    heads: int
    mlp: int
    blocks: int


def probes(spec: ViTSpec, grid: Grid) -> list[Probe]:
    """Every probe the grid needs, the dense model first (it sizes the time estimate and calibrates the fit)."""
    ref = spec.blocks[0]
    full_h, full_m = ref.heads, ref.mlp_hidden
    out = [Probe("dense", spec, "dense", spec.num_patches + spec.num_prefix_tokens, full_h, full_m, spec.depth)]

    def probe(kind: str, side: int, blocks: list[BlockSpec]) -> None:
        s = spec.replace(img_size=side * spec.patch_size, blocks=blocks)
        n = side * side + spec.num_prefix_tokens
        out.append(Probe(probe_key(kind, n), s, kind, n, blocks[-1].heads, blocks[-1].mlp_hidden, len(blocks)))

    def block(h: int, m: int) -> BlockSpec:
        return BlockSpec(heads=h, head_dim=ref.head_dim, mlp_hidden=m)

    for side in sorted(grid.sides, reverse=True):
        probe("ref1", side, [block(full_h, full_m)])
        probe("ref3", side, [block(full_h, full_m)] * 3)
        probe("select", side, [BlockSpec(heads=full_h, head_dim=ref.head_dim, mlp_hidden=full_m, keep_tokens=side * side)])
        for h in grid.heads[:-1]:
            probe(f"heads{h}", side, [block(h, full_m)] * 2)
        for m in grid.mlp[:-1]:
            probe(f"mlp{m}", side, [block(full_h, m)] * 2)
    return out


# ------------------------------------------------------------------------------------------------
# measuring
# ------------------------------------------------------------------------------------------------

def deployable(spec: ViTSpec, backend: str, precision: str, folder: Path, calib_data: str | None,
               cache: Path | None = None, probe_kind: str = "", quick: bool = False) -> str:
    """Write ``spec`` (seeded random weights: latency depends on shapes) in the form ``backend`` opens; return its path.

    The form comes from the registry: a backend without file suffixes opens artifacts, one that reads ``.onnx``
    gets vitc's ONNX export (FP16 or INT8 Q/DQ as asked), any other an engine built from that ONNX by the
    backend's builder. ``cache``: a folder where compiled probes are kept by shape and precision, so profiles
    at other batch sizes or thread counts skip the export.
    """
    import hashlib

    b = BACKENDS[backend]
    form = "artifact" if not b.suffixes else ("onnx" if ".onnx" in b.suffixes else b.name)
    suffix = ".safetensors" if form == "artifact" else (".onnx" if form == "onnx" else b.suffixes[0])
    export = "quick" if quick and probe_kind != "dense" and form != "artifact" else "deployed"
    name = f"{hashlib.sha256(spec.to_json().encode()).hexdigest()[:16]}-{precision}-{export}{suffix}"
    if cache is not None and (cache / name).is_file():
        return str(cache / name)
    target = _compile_probe(spec, form, precision, folder, calib_data, backend, probe_kind, quick)
    if cache is None:
        return str(target)
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache / name) as tmp:
        shutil.copyfile(target, tmp)
    return str(cache / name)


def _trace(model: Any, spec: ViTSpec, quick: bool) -> Any:
    """The ONNX graph of a probe, exported exactly as ``vitc export`` does (dynamo) — or, with ``quick``, through
    TorchScript's exporter when this torch still has it (0.3-0.6 s instead of 5-10 s each; the same MatMul/Softmax/
    LayerNormalization graph, with other reshapes), leaving the calibration on the deployed dense model to absorb
    the exporters' difference."""
    import io
    import warnings

    import onnx
    import torch

    from vitc.onnx.export import INPUT_NAME, OUTPUT_NAME, TRACE_BATCH, trace_to_onnx

    if quick:
        buffer = io.BytesIO()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (torch.randn(TRACE_BATCH, *spec.input_shape),), cast(Any, buffer), dynamo=False, opset_version=18,
                                  input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                  dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
            return onnx.load_from_string(buffer.getvalue())
        except Exception:  # a torch without the TorchScript exporter: the deployed path below
            pass
    return trace_to_onnx(model, spec)


def _compile_probe(spec: ViTSpec, form: str, precision: str, folder: Path, calib_data: str | None, backend: str,
                   probe_kind: str = "", quick: bool = False) -> Path:
    import torch

    from vitc.core.artifacts import save_model
    from vitc.core.spec import build_model

    torch.manual_seed(0)
    model = build_model(spec, init_weights=True).eval()
    if form == "artifact":
        return save_model(folder / "probe.safetensors", model, spec, meta={"method": "latency-probe"})
    from vitc.onnx.io import META_PRECISION, META_SPEC, stamp, write_onnx

    proto = _trace(model, spec, quick=quick and probe_kind != "dense")
    if precision == "fp16":
        from vitc.onnx.fp16 import to_fp16

        proto = to_fp16(proto)
    stamp(proto, {META_SPEC: spec.to_json(), META_PRECISION: "fp16" if precision == "fp16" else "fp32"})
    onnx_path = folder / "probe.onnx"
    write_onnx(proto, onnx_path)
    if precision == "int8":
        from vitc.onnx.quantize import quantize_onnx

        quantize_onnx(onnx_path, str(calib_data), folder / "probe.int8.onnx", num_samples=32, check=False)
        onnx_path = folder / "probe.int8.onnx"
    if form == "onnx":
        return onnx_path
    engine = folder / f"probe{BACKENDS[backend].suffixes[0]}"
    build_engine(backend, onnx_path, engine)
    return engine


def build_engine(backend: str, onnx_path: Path, engine: Path) -> None:
    """Build ``engine`` from ``onnx_path`` with the registry's builder for ``backend`` (its default build settings)."""
    BACKENDS[backend].build(onnx_path, engine)


def _fingerprint(spec: ViTSpec, settings: ProfileSettings, grid: Grid) -> dict[str, Any]:
    keys = ("backend", "device", "batch_size", "precision", "calib_data", "threads", "warmup_ms", "min_iters", "min_seconds",
            "quick_export")
    return {"spec": spec.to_dict(), "grid": grid.to_dict(spec), "protocol": PROTOCOL, **{k: getattr(settings, k) for k in keys}}


def on_common_time_base(measurements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each probe's ``median_ms`` = its paired ratio to the reference probe x the reference's median over the whole
    profile: slow drifts of the machine (other load, clocks) cancel in the ratios instead of skewing one probe."""
    reference = float(np.median([m["reference_ms"] for m in measurements]))
    return [{**m, "median_ms": m["ratio_to_reference"] * reference} for m in measurements]


def _host() -> str:
    import socket

    return socket.gethostname().replace("/", "_")


def _remove_stale_probe_folders(folder: Path) -> None:
    """The probe folders of a profile killed outright (SIGKILL: its ``finally`` never ran), once the process that
    made them is gone; the next profile in that folder removes them (its own host's only)."""
    import re

    from vitc.core.device import process_running

    for d in folder.glob(".vitc-profile-*"):
        m = re.fullmatch(r"\.vitc-profile-(\d+)@(.+)-[^-]+", d.name)
        if d.is_dir() and m and m.group(2) == _host() and not process_running(int(m.group(1))):
            shutil.rmtree(d, ignore_errors=True)


def _partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial.json")


def _load_partial(path: Path, fingerprint: dict[str, Any]) -> list[dict[str, Any]]:
    import json

    if not path.is_file():
        return []
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        log(f"{path} is unreadable; starting the profile afresh")
        return []
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        log(f"{path} is from a profile with other settings; starting afresh")
        return []
    stored = state.get("measurements")
    stored = stored if isinstance(stored, list) else []
    done = [m for m in stored if _valid_probe(m)]
    if len(done) < len(stored):
        log(f"{path}: {len(stored) - len(done)} stored probe(s) are not valid timings (edited or damaged); measuring them again")
    log(f"resuming the profile: {len(done)} probe(s) already measured in {path}")
    return done


def _valid_probe(m: Any) -> bool:
    """A stored probe resumes only with a key and positive, finite timings (anything else is measured again)."""
    import math

    def positive(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0

    return isinstance(m, dict) and isinstance(m.get("key"), str) and all(
        positive(m.get(k)) for k in ("ratio_to_reference", "reference_ms"))


def profile_latency(model: str, out: str | os.PathLike[str], settings: ProfileSettings, *, pretrained: bool = False,
                    checkpoint: str | None = None, probe_cache: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Measure the latency model of ``model`` on ``settings.backend`` and write it to ``out``; return the model's dict.

    ``probe_cache``: a folder that keeps the compiled probes (see :func:`deployable`).
    """
    out = Path(out)
    probe_cache = Path(probe_cache) if probe_cache is not None else None
    if out.suffix.lower() != ".json":
        raise UsageError(f"-o must name a .json file, got {out}")
    check_output_file(out)
    if probe_cache is not None:
        if probe_cache.resolve() in (out.resolve(), _partial_path(out).resolve()):
            raise UsageError(f"--probe-cache {probe_cache} is the profile's own path (-o {out}); give the cache another folder")
        try:
            check_output_dir(probe_cache)  # a file, or a folder that cannot be made or written: before any probe
        except UsageError as e:
            raise UsageError(f"--probe-cache: {e}") from None
    check_backend(settings.backend)
    settings.validate()
    if pretrained or checkpoint:
        log("the profile depends on shapes only; --pretrained/--checkpoint weights are not needed and not used")
    spec = dense_spec(model)
    grid = plan_grid(spec, settings)
    plan = probes(spec, grid)
    fingerprint = _fingerprint(spec, settings, grid)
    partial = _partial_path(out)
    done = {m["key"]: m for m in _load_partial(partial, fingerprint) if m["key"] in {p.key for p in plan}}
    options: dict[str, Any] = {}
    threads = settings.threads
    if threads is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = int(os.environ["OMP_NUM_THREADS"])
    if threads is not None and "threads" in BACKENDS[settings.backend].options:
        options["threads"] = threads
    elif threads is not None and settings.backend == "torch":
        import torch

        torch.set_num_threads(threads)
    compute = settings.precision if settings.backend == "torch" and settings.precision != "int8" else None
    bench = settings.bench()
    log(f"profiling {spec.name} on {settings.backend} ({settings.device}, {settings.precision}, batch {settings.batch_size}"
        f"{f', {threads} threads' if threads else ''}): {len(plan)} probes — {len(grid.sides)} token counts "
        f"{grid.tokens(spec)} x heads {grid.heads} / MLP {grid.mlp}")
    started, measured_now, dense_s = time.perf_counter(), 0, 0.0
    env: dict[str, Any] = {}
    if out.parent.exists():
        _remove_stale_probe_folders(out.parent)
    tmp_root = Path(tempfile.mkdtemp(prefix=f".vitc-profile-{os.getpid()}@{_host()}-",
                                     dir=out.parent if out.parent.exists() else None))
    reference = next(p for p in plan if p.key == probe_key("ref1", spec.num_patches + spec.num_prefix_tokens))

    def open_probe(p: Probe, folder: Path) -> Any:
        folder.mkdir()
        target = deployable(p.spec, settings.backend, settings.precision, folder, settings.calib_data, probe_cache, p.kind,
                            settings.quick_export)
        return load_runner(target, backend=settings.backend, device=settings.device, precision=compute, **options)

    try:
        with open_probe(reference, tmp_root / "reference") as ref_runner, progress("profile", total=len(plan)) as bar:
            env = {**environment([ref_runner]), "runner": ref_runner.describe()}
            for i, p in enumerate(plan):
                if p.key in done:
                    bar.advance()
                    continue
                t0 = time.perf_counter()
                if p.key == reference.key:
                    result = measure(ref_runner, settings.batch_size, bench, label=p.key, show_progress=False)
                    ratio, ref_median = 1.0, result["latency_ms"]["median"]
                else:
                    folder = tmp_root / f"{i:03d}"
                    with open_probe(p, folder) as runner:
                        (ref_result, result), (ref_ms, probe_ms) = measure_group(
                            [ref_runner, runner], settings.batch_size, bench, label=p.key, show_progress=False, seconds_of="all")
                    shutil.rmtree(folder, ignore_errors=True)
                    ratio = float(np.median(np.asarray(probe_ms) / np.asarray(ref_ms)))
                    ref_median = ref_result["latency_ms"]["median"]
                done[p.key] = {"key": p.key, "kind": p.kind, "tokens": p.tokens, "heads": p.heads, "mlp": p.mlp,
                               "blocks": p.blocks, "ratio_to_reference": ratio, "reference_ms": ref_median,
                               "raw_median_ms": result["latency_ms"]["median"], "min_ms": result["latency_ms"]["min"],
                               "cv": result["cv"], "iterations": result["iterations"],
                               "seconds": round(time.perf_counter() - t0, 3)}
                write_json(partial, {"fingerprint": fingerprint, "measurements": list(done.values())})
                measured_now += 1
                if p.kind != "dense" and measured_now in (2, 10):  # the dense model's slower export says nothing of the probes'
                    each = (time.perf_counter() - started - dense_s) / (measured_now - (1 if dense_s else 0))
                    left = len(plan) - len(done)
                    log(f"{left} probes left, about {max(1, round(left * each / 60))} min ({each:.1f} s each so far)")
                if p.kind == "dense":
                    dense_s = time.perf_counter() - t0
                bar.advance()
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    measurements = on_common_time_base(list(done.values()))
    model_ = fit_latency(spec, grid, measurements, settings, env)
    result = model_.to_dict()
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_json(out, result)
    partial.unlink(missing_ok=True)
    return result


def fit_latency(spec: ViTSpec, grid: Grid, measurements: list[dict[str, Any]], settings: ProfileSettings,
                env: dict[str, Any]) -> LatencyModel:
    """Fit the tables and the calibration factor from the probes' medians."""
    ms = {m["key"]: float(m["median_ms"]) for m in measurements}
    tokens = grid.tokens(spec)
    tables = fit_tables(tokens, grid.heads, grid.mlp, ms)
    full = spec.num_patches + spec.num_prefix_tokens
    fixed = tables["fixed_by_tokens"][tokens.index(full)]
    model = LatencyModel(
        spec=spec, target={"backend": settings.backend, "device": settings.device, "precision": settings.precision,
                           "batch_size": settings.batch_size, "threads": settings.threads},
        tokens=tokens, heads=grid.heads, mlp=grid.mlp, attention=tables["attention"], mlp_table=tables["mlp"],
        predictor=tables["predictor"], fixed_ms=max(0.0, fixed), dense_ms=ms["dense"],
        measurements=sorted(measurements, key=lambda m: m["key"]), environment=env,
    )
    blocks = model.dense_blocks_ms()
    model.calibration = max(model.dense_ms - model.fixed_ms, 0.0) / blocks if blocks > 0 else 1.0
    model.validate()
    return model


# ------------------------------------------------------------------------------------------------
# prediction
# ------------------------------------------------------------------------------------------------

def predict_targets(latency: str | os.PathLike[str], targets: list[str]) -> dict[str, Any]:
    """``vitc profile --predict``: predicted latency and speedup over dense of each target (any vitc model)."""
    from vitc.checks.deployment import deployment_of

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
    from vitc.checks.deployment import deployment_of

    return deployment_of(target).spec


def dense_spec(model: str) -> ViTSpec:
    """The spec to profile: a timm name, a vitc config or a plain (dense) artifact."""
    from vitc.core.artifacts import PLAIN, read_header
    from vitc.core.models import is_artifact_path, resolve_spec

    if is_artifact_path(model):
        spec, kind, _ = read_header(model)
        if kind != PLAIN:
            raise UsageError(f"{model} is a {kind} artifact; profile the dense model it was compressed from")
        return spec
    return resolve_spec(model)


__all__ = ["ProfileSettings", "deployed_spec", "fit_latency", "plan_grid", "predict_targets", "probes", "profile_latency"]


def add_predictions(result: dict[str, Any], latency: str | os.PathLike[str], targets: list[str]) -> dict[str, Any]:
    """``vitc bench --latency``: the latency model's prediction beside each measurement (in place; returned).

    A single target gets ``predicted_latency_ms`` on the result of the profile's batch size; ``--compare A B`` and a
    stacked bench get ``predicted_speedup`` (over A / over the reference) beside the measured one. Batch sizes other
    than the profile's get no prediction (the model speaks for one batch size); ``prediction`` says which.
    """
    from vitc.checks.bench import split_target
    from vitc.checks.deployment import check_bench_result

    model = load_latency(latency)
    check_bench_result(model, result, targets)  # each runner's own backend and precision, and the profile's batch measured
    batch = int(model.target["batch_size"])
    specs = [deployed_spec(split_target(t)[1]) for t in targets]
    predicted = [model.predict(s, t) for s, t in zip(specs, targets)]
    result["prediction"] = {"latency": str(latency), "batch_size": batch, "profile": model.target,
                            "targets": [{"target": t, "latency_ms": p["latency_ms"], "speedup_vs_dense": p["speedup"]}
                                        for t, p in zip(targets, predicted)]}
    for res in result.get("results", []):
        if res.get("batch") != batch:
            continue
        if "rows" in res:  # stacked: every row against the first target
            for row, p in zip(res["rows"], predicted):
                row["predicted_speedup"] = predicted[0]["latency_ms"] / p["latency_ms"]
        elif "a" in res and "b" in res:  # --compare A B
            res["predicted_speedup"] = predicted[0]["latency_ms"] / predicted[1]["latency_ms"]
        else:
            res["predicted_latency_ms"] = predicted[0]["latency_ms"]
    return result
