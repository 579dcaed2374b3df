"""``vitc profile``: measure a latency model (:mod:`vitc.core.latency`) on the backend a model will be deployed to.

The grid and its probes come from :mod:`vitc.core.latency` (beside the fit that reads them). Each probe — a small
ViT of the profiled model's width, head size and patch size, with seeded random weights (latency depends on shapes)
— is made into the file the backend runs by :func:`vitc.backends.deploy.deploy`, exactly as a deployed model is
(the artifact for torch, vitc's ONNX for ONNX backends, an engine for built ones), and timed with the one bench
protocol (:func:`vitc.checks.bench.bench`) **alternately with one reference probe** (1 full block at every
token) that stays open throughout: a probe's latency is the median of its per-round ratios to the reference times
the reference's median over the whole profile, so a slow drift of the machine (other load, clocks) cancels instead
of skewing the probes measured while it lasted (on the shared 2-core build machine, unpaired probes of one profile
disagreed by up to 40% with the same shapes timed side by side).

Every measured probe is written to ``OUT.partial.json`` at once: a killed run resumes from there when the same
model, backend, device, precision, batch, threads and grid are asked for again, and starts afresh (saying so)
otherwise.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from vitc.backends import ARTIFACT, BACKENDS, check_backend, load_runner
from vitc.checks.bench import bench
from vitc.checks.environment import environment
from vitc.checks.settings import ProfileSettings
from vitc.core.errors import UsageError
from vitc.core.fileio import atomic_path, check_output_dir, check_output_file, write_json
from vitc.core.latency import DENSE_PROBE, REFERENCE_PROBE, Grid, LatencyModel, Probe, fit_tables, probes
from vitc.core.progress import log, progress
from vitc.core.spec import ViTSpec

PROTOCOL = "paired/1"  # every probe timed alternately with the reference probe (1 full block, all tokens)


def probe_file(probe: Probe, settings: ProfileSettings, folder: Path, cache: Path | None = None) -> str:
    """The file ``settings.backend`` runs for ``probe`` (made by :func:`vitc.backends.deploy.deploy`); ``cache``: a
    folder where made probes are kept by shape, precision and exporter, so profiles at other batch sizes or thread
    counts skip making them again."""
    import torch

    from vitc.backends.deploy import DeploySettings, deploy
    from vitc.core.artifacts import save_model
    from vitc.core.spec import build_model
    from vitc.onnx.settings import ExportSettings, QuantizeSettings

    b = BACKENDS[settings.backend]
    quick = settings.quick_export and probe.kind != DENSE_PROBE and b.reads != ARTIFACT  # the dense model calibrates the fit
    precision = settings.precision if b.reads != ARTIFACT else b.precisions[0]
    suffix = ".safetensors" if b.reads == ARTIFACT else (b.built_suffix or ".onnx")
    name = f"{hashlib.sha256(probe.spec.to_json().encode()).hexdigest()[:16]}-{settings.precision}-" \
           f"{'quick' if quick else 'deployed'}{suffix}"
    if cache is not None and (cache / name).is_file():
        return str(cache / name)
    torch.manual_seed(0)
    artifact = save_model(folder / "probe.safetensors", build_model(probe.spec, init_weights=True).eval(), probe.spec,
                          meta={"method": "latency-probe"})
    quantize = (QuantizeSettings(data=str(settings.calib_data), num_samples=32, check=False)
                if settings.precision == "int8" else None)
    made = deploy(artifact, settings.backend, precision,
                  DeploySettings(export=ExportSettings(verify=False, check=False), quantize=quantize, quick_export=quick))
    if cache is None:
        return str(made)
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache / name) as tmp:
        shutil.copyfile(made, tmp)
    return str(cache / name)


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

    from vitc.core.host import process_running

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

    ``probe_cache``: a folder that keeps the made probes (see :func:`probe_file`).
    """
    from vitc.core.models import dense_spec

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
    grid = settings.grid(spec)
    plan = probes(spec, grid)
    fingerprint = _fingerprint(spec, settings, grid)
    partial = _partial_path(out)
    done = {m["key"]: m for m in _load_partial(partial, fingerprint) if m["key"] in {p.key for p in plan}}
    b = BACKENDS[settings.backend]
    threads = settings.threads
    if threads is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = int(os.environ["OMP_NUM_THREADS"])
    options: dict[str, Any] = {"threads": threads} if threads is not None and "threads" in b.options else {}
    compute = settings.precision if b.reads == ARTIFACT else None
    timing = settings.bench()
    log(f"profiling {spec.name} on {settings.backend} ({settings.device}, {settings.precision}, batch {settings.batch_size}"
        f"{f', {threads} threads' if threads else ''}): {len(plan)} probes — {len(grid.sides)} token counts "
        f"{grid.tokens(spec)} x heads {grid.heads} / MLP {grid.mlp}")
    started, measured_now, dense_s = time.perf_counter(), 0, 0.0
    env: dict[str, Any] = {}
    if out.parent.exists():
        _remove_stale_probe_folders(out.parent)
    tmp_root = Path(tempfile.mkdtemp(prefix=f".vitc-profile-{os.getpid()}@{_host()}-",
                                     dir=out.parent if out.parent.exists() else None))
    reference = next(p for p in plan if p.kind == REFERENCE_PROBE and p.tokens == spec.num_patches + spec.num_prefix_tokens)

    def open_probe(p: Probe, folder: Path) -> Any:
        folder.mkdir()
        target = probe_file(p, settings, folder, probe_cache)
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
                    row = bench([ref_runner], [p.key], timing, show_progress=False, quiet=True).row(0, settings.batch_size)
                    ratio, ref_median = 1.0, row.latency_ms.median
                else:
                    folder = tmp_root / f"{i:03d}"
                    with open_probe(p, folder) as runner:
                        result = bench([ref_runner, runner], [reference.key, p.key], timing, show_progress=False,
                                       seconds_of="all", quiet=True)  # each probe's CV is in the profile
                    shutil.rmtree(folder, ignore_errors=True)
                    row = result.row(1, settings.batch_size)
                    ratio = float(row.latency_ratio_paired or 1.0)
                    ref_median = result.row(0, settings.batch_size).latency_ms.median
                done[p.key] = {"key": p.key, "kind": p.kind, "tokens": p.tokens, "heads": p.heads, "mlp": p.mlp,
                               "blocks": p.blocks, "ratio_to_reference": ratio, "reference_ms": ref_median,
                               "raw_median_ms": row.latency_ms.median, "min_ms": row.latency_ms.min,
                               "cv": row.cv, "iterations": row.iterations,
                               "seconds": round(time.perf_counter() - t0, 3)}
                write_json(partial, {"fingerprint": fingerprint, "measurements": list(done.values())})
                measured_now += 1
                if p.kind != DENSE_PROBE and measured_now in (2, 10):  # the dense model's slower export says nothing of the probes'
                    each = (time.perf_counter() - started - dense_s) / (measured_now - (1 if dense_s else 0))
                    left = len(plan) - len(done)
                    log(f"{left} probes left, about {max(1, round(left * each / 60))} min ({each:.1f} s each so far)")
                if p.kind == DENSE_PROBE:
                    dense_s = time.perf_counter() - t0
                bar.advance()
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    measurements = on_common_time_base(list(done.values()))
    model_ = fit_latency(spec, grid, measurements, settings, env)
    result_ = model_.to_dict()
    result_["seconds"] = round(time.perf_counter() - started, 1)
    write_json(out, result_)
    partial.unlink(missing_ok=True)
    return result_


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
        predictor=tables["predictor"], fixed_ms=max(0.0, fixed), dense_ms=ms[DENSE_PROBE],
        measurements=sorted(measurements, key=lambda m: m["key"]), environment=env,
    )
    blocks = model.dense_blocks_ms()
    model.calibration = max(model.dense_ms - model.fixed_ms, 0.0) / blocks if blocks > 0 else 1.0
    model.validate()
    return model


__all__ = ["ProfileSettings", "fit_latency", "on_common_time_base", "probe_file", "profile_latency"]
