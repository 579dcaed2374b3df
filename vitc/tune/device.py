"""What the device gives before any compression: each backend × precision that runs here, its latency model of the
dense model, and its dense file's speedup over the reference — measured, never assumed (INT8 GEMMs run 1.15x fp32
on an AVX2 CPU and 2.7x on a VNNI one; OpenVINO's INT8 can lose to its fp32; TensorRT INT8 can lose to FP16)."""

from __future__ import annotations

from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from vitc.backends.deploy import DeploySettings, deploy
from vitc.core.errors import UsageError
from vitc.core.progress import log
from vitc.tune.candidates import Candidate
from vitc.tune.journal import Journal
from vitc.tune.settings import TuneSettings


def measure_device(dense: Path, pairs: list[tuple[str, str]], settings: TuneSettings, deploy_settings: DeploySettings,
                   calib_data: str, device: str, out: Path, journal: Journal) -> list[Candidate]:
    """Deploy and profile the dense model on every pair, then bench every dense file against the reference's."""
    from vitc.checks.profile import profile_latency
    from vitc.checks.settings import ProfileSettings

    candidates = []
    for backend, precision in pairs:
        name = f"{backend}-{precision}"
        file = journal.step(f"device/{name}/deploy", {"artifact": str(dense), "backend": backend, "precision": precision},
                            partial(_deploy, dense, backend, precision, deploy_settings))["file"]
        ps = ProfileSettings(backend=backend, device=device, batch_size=settings.batch_size, precision=precision,
                             calib_data=calib_data if precision == "int8" else None, threads=settings.threads,
                             token_points=settings.token_points, min_seconds=settings.probe_seconds,
                             warmup_ms=50.0, quick_export=True)
        options = {"settings": asdict(ps), "model": str(dense)}
        profile = _profile_path(dense, ps, Path(settings.profiles) if settings.profiles else out / "profiles")
        journal.step(f"device/{name}/profile", options,
                     partial(_profile, dense, profile, ps, profile.parent / "probes", settings.profiles is not None,
                             profile_latency))
        candidates.append(Candidate(backend, precision, file, str(profile)))
    gains = journal.step("device/gains", {"files": [c.target for c in candidates], "batch": settings.batch_size,
                                          "seconds": settings.bench_seconds},
                         lambda: _gains(candidates, settings, device))
    for c in candidates:
        c.gain = float(gains[c.name])
        c.needed = settings.target_speedup / c.gain
    for c in candidates:
        log(f"device: {c.name} dense runs {c.gain:.2f}x the reference; compression must give {c.needed:.2f}x more")
    return candidates


def _deploy(dense: Path, backend: str, precision: str, settings: DeploySettings) -> dict[str, Any]:
    return {"file": str(deploy(dense, backend, precision, settings))}


def _profile_path(dense: Path, ps: Any, folder: Path) -> Path:
    """Where the latency model of ``dense`` measured with ``ps`` lives: named by the architecture and the settings."""
    import hashlib
    import json

    from vitc.core.artifacts import read_header

    spec = read_header(dense, verify=False)[0]
    key = hashlib.sha256(json.dumps({"spec": spec.to_dict(), "settings": asdict(ps)}, sort_keys=True,
                                    default=str).encode()).hexdigest()[:12]
    return folder / f"{spec.name}-{ps.backend}-{ps.precision}-b{ps.batch_size}-{key}.json"


def _profile(dense: Path, path: Path, ps: Any, probes: Path, reuse: bool, profile_latency: Any) -> dict[str, Any]:
    from vitc.core.latency import load_latency

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and reuse:
        try:
            load_latency(path)
            log(f"reusing the latency profile {path}")
            return {"profile": str(path)}
        except UsageError:
            pass  # damaged: measured again
    if path.is_file():
        path.unlink()
    profile_latency(str(dense), path, ps, probe_cache=probes)
    return {"profile": str(path)}


def _gains(candidates: list[Candidate], settings: TuneSettings, device: str) -> dict[str, float]:
    from vitc.checks.bench import bench_targets
    from vitc.checks.settings import BenchSettings

    bench = BenchSettings(batch_sizes=[settings.batch_size], device=device, threads=settings.threads, warmup_ms=200.0,
                          min_iters=10, min_seconds=settings.bench_seconds, peak=False)
    result = bench_targets([c.target for c in candidates], bench)
    rows = result.results[0].rows
    return {c.name: float(row.speedup_paired or 1.0) for c, row in zip(candidates, rows)}


__all__ = ["measure_device"]
