"""Deploying a pick (INT8 with its per-block precision) and closing the loop on the deployed file: measure it paired
against the reference; off the target, recalibrate the latency model with the measured point, re-land the pick on
it, measure again."""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path
from typing import Any

from vitc.backends import BACKENDS, ONNX, REFERENCE_BACKEND
from vitc.core.errors import CheckFailed, UsageError
from vitc.core.progress import log
from vitc.tune.candidates import Candidate, device_name
from vitc.tune.journal import Journal
from vitc.tune.settings import TuneSettings
from vitc.tune.trials import Trial, reland, run_trial


def deploy_pick(trial: Trial, candidate: Candidate, candidates: list[Candidate], source: Any, calib: Any, s: TuneSettings,
                deploy_settings: Any, journal: Journal) -> tuple[str, list[int] | None, dict[str, Any] | None]:
    """The file ``candidate`` runs for ``trial`` (INT8 with its per-block precision); (path, float blocks, decision)."""
    from vitc.backends.deploy import deploy
    from vitc.tune.precision import choose

    assert trial.artifact is not None
    artifact, backend, precision = trial.artifact, candidate.backend, candidate.precision
    mtime = Path(artifact).stat().st_mtime_ns
    if precision != "int8":
        file = journal.step(f"deploy/{artifact}/{candidate.name}", {"artifact": artifact, "mtime": mtime},
                            lambda: {"file": str(deploy(artifact, backend, precision, deploy_settings, force=True))})["file"]
        return file, None, None
    fp32 = journal.step(f"deploy/{artifact}/{backend}:fp32-onnx", {"artifact": artifact, "mtime": mtime},
                        lambda: {"file": str(deploy(artifact, REFERENCE_BACKEND, "fp32", deploy_settings, force=True))})["file"]
    float_profile = next((c.profile for c in candidates if c.backend == backend and c.precision != "int8"), None)
    judge = backend if BACKENDS[backend].reads == ONNX else REFERENCE_BACKEND  # built files: judged on their ONNX
    decision = choose(artifact, fp32, judge, candidate.profile, float_profile, source, calib, s, journal)
    mixed = dataclasses.replace(deploy_settings, quantize=dataclasses.replace(deploy_settings.quantize,
                                                                              float_blocks=decision.float_blocks or None))
    file = journal.step(f"deploy/{artifact}/{candidate.name}", {"artifact": artifact, "mtime": mtime,
                                                                  "float_blocks": decision.float_blocks},
                        lambda: {"file": str(deploy(artifact, backend, "int8", mixed, force=True))})["file"]
    return file, decision.float_blocks, decision.to_dict()


def mixed_factor(decision: dict[str, Any] | None) -> float:
    """How much faster a pick's file runs than its all-INT8 prediction because of its float blocks (from
    :func:`deploy_pick`'s decision; 1 for an all-INT8 or a float file)."""
    return float((decision or {}).get("mixed_factor") or 1.0)


def measure(targets: list[str], s: TuneSettings, peak: bool = False) -> Any:
    from vitc.checks.bench import bench_targets
    from vitc.checks.settings import BenchSettings

    bench = BenchSettings(batch_sizes=[s.batch_size], device=device_name(s.device), threads=s.threads, warmup_ms=200.0,
                          min_iters=10, min_seconds=s.bench_seconds, peak=peak)
    return bench_targets(targets, bench)


def close_loop(trial: Trial, primary: Candidate, candidates: list[Candidate], dense: Path, source: Any, calib: Any,
                s: TuneSettings, deploy_settings: Any, out: Path, journal: Journal,
                train_device: str) -> tuple[list[dict[str, Any]], list[Trial]]:
    """Measure the pick; off S: recalibrate, re-land, measure again (at most ``s.rounds`` times)."""
    reference = reference_of(candidates, s)
    rounds: list[dict[str, Any]] = []
    picks = [trial]
    latency, needed = primary.profile, primary.needed
    for r in range(1, s.rounds + 1):
        file, float_blocks, decision = deploy_pick(trial, primary, candidates, source, calib, s, deploy_settings, journal)
        factor = mixed_factor(decision)
        measured = journal.step(f"loop/r{r}/measure", {"file": file, "mtime": Path(file).stat().st_mtime_ns,
                                                        "reference": reference.target, "tries": MEASURE_TRIES},
                                partial(_measured, [reference.target, f"{primary.backend}:{file}"], s))
        speedup = measured["speedup"]
        predicted = primary.gain * (trial.predicted or 1.0) * factor
        within = abs(speedup / s.target_speedup - 1) <= s.tolerance
        rounds.append({"round": r, "trial": trial.name, "artifact": trial.artifact, "file": file, "latency": latency,
                       "predicted": predicted, "measured": speedup, "measured_iqr": measured.get("iqr"),
                       "noisy_tries": measured.get("noisy_tries", []), "within_tolerance": within,
                       "float_blocks": float_blocks, "mixed_factor": factor, "compression_target": needed,
                       "precision_decision": decision})
        log(f"loop round {r}: {trial.name} on {primary.name} predicted {predicted:.2f}x, measured {speedup:.2f}x "
            f"(S {s.target_speedup:g}, tolerance {s.tolerance:.0%})")
        if within or r == s.rounds:
            break
        if not trial.plan:  # the dense model itself: nothing to re-land
            rounds[-1]["note"] = "the dense model on this backend and precision: nothing to re-land"
            break
        # the latency model describes the all-INT8 file: the measured point, less the float blocks' share, calibrates it,
        # and compression lands what the backend, precision and float blocks do not give
        latency = str(recalibrate(latency, str(trial.artifact), speedup / (primary.gain * factor), out / "profiles" /
                                  f"{Path(primary.profile).stem}-r{r}.json"))
        rounds[-1]["recalibrated"] = latency
        needed = primary.needed / factor
        try:
            trial = _reland(trial, latency, needed, dense, source, s, out, journal, r, train_device)
        except (UsageError, CheckFailed) as e:  # the recalibrated model puts S out of this pick's reach: say so, stop
            rounds[-1]["note"] = f"not re-landed: {e}"
            log(f"loop round {r}: not re-landed: {e}")
            break
        picks.append(trial)
    return rounds, picks


def _reland(trial: Trial, latency: str, needed: float, dense: Path, source: Any, s: TuneSettings, out: Path,
            journal: Journal, r: int, device: str) -> Trial:
    """The pick again on the recalibrated latency model at compression ``needed``: a token-selection pick at a new
    keep ratio; a pruned one by a new brief search."""
    from vitc.methods import METHODS

    last = METHODS[trial.plan[-1]] if trial.plan else None
    if last is not None and last.token_selection and trial.compressed:
        return reland(trial, latency, needed, out / "trials" / trial.name, source, journal, r)
    return run_trial(trial.name, _steps(trial, needed), dense, source, latency,
                     out / "trials" / f"{trial.name}-r{r}", s, device, journal, round_=r)


def _steps(trial: Trial, needed: float) -> list[tuple[Any, float]]:
    """The trial's plan at compression ``needed``; the combination keeps its split: structure C^a, then tokens to C."""
    from vitc.methods import METHODS

    steps = [(METHODS[k], needed) for k in trial.plan]
    if len(steps) > 1:
        share = float(trial.name.rsplit("-a", 1)[-1])
        steps[0] = (steps[0][0], needed**share)
    return steps


def train_final(trial: Trial, latency: str, needed: float, dense: Path, source: Any, s: TuneSettings, out: Path,
                journal: Journal, device: str) -> Trial:
    """The pick trained again from the dense model with the full recipe (``--final-epochs``,
    ``--final-finetune-epochs``), same plan, split and compression ``needed``, on the latency model the loop ended
    on: the short tries choose, the answer gets the training. A dense pick has nothing to train."""
    if not trial.plan:
        return trial
    full = dataclasses.replace(s, epochs=s.final_epochs or s.epochs,
                               finetune_epochs=s.finetune_epochs if s.final_finetune_epochs is None else s.final_finetune_epochs)
    log(f"tune: training the pick {trial.label} with the full recipe ({full.epochs} epochs, {full.finetune_epochs} "
        "fine-tuning)")
    final = run_trial(f"{trial.name}-final", _steps(trial, needed), dense, source, latency,
                      out / "trials" / f"{trial.name}-final", full, device, journal, round_=trial.round)
    final.name, final.final = trial.name, True
    return final


def recalibrate(latency: str, artifact: str, measured_compression: float, out: Path) -> Path:
    """A copy of the latency model whose calibration makes ``artifact``'s predicted speedup over the profiled dense
    model the measured one (the measured point recorded in its measurements)."""
    from vitc.core.artifacts import read_header
    from vitc.core.fileio import write_json
    from vitc.core.latency import load_latency

    model = load_latency(latency)
    spec = read_header(artifact, verify=False)[0]
    pred = model.predict(spec, artifact)
    blocks = sum(b["block_ms"] + b["selection_ms"] for b in pred["blocks"]) / max(model.calibration, 1e-12)
    wanted = model.dense_ms / measured_compression
    new = max((wanted - model.fixed_ms) / blocks, 1e-6) if blocks > 0 else model.calibration
    d = model.to_dict()
    d["fit"]["calibration"] = new
    d["measurements"].append({"key": f"measured:{Path(artifact).name}", "latency_ms": wanted,
                              "note": f"vitc tune: measured {measured_compression:.3f}x over dense; calibration "
                                      f"{model.calibration:.4f} -> {new:.4f}"})
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, d)
    return out


MEASURE_TRIES = 3  # a loop measurement whose IQR is wider than the tolerance band is taken again, this many times at most


def _measured(targets: list[str], s: TuneSettings) -> dict[str, Any]:
    """The paired speedup the loop acts on. A measurement whose IQR spans more than the tolerance band (another
    process took the cores for part of it) is taken again, up to :data:`MEASURE_TRIES` times; the tightest counts,
    and the noisy ones are recorded."""
    tries: list[dict[str, Any]] = []
    for _ in range(MEASURE_TRIES):
        got = _speedup(measure(targets, s))
        tries.append(got)
        if _spread(got) <= 2 * s.tolerance:
            break
        log(f"noisy measurement: {got['speedup']:.2f}x, IQR {got['iqr'][0]:.2f}-{got['iqr'][1]:.2f} (wider than "
            f"±{s.tolerance:.0%}); measuring again")
    best = min(tries, key=_spread)
    return {**best, "noisy_tries": [t for t in tries if t is not best]}


def _spread(m: dict[str, Any]) -> float:
    """The IQR's width relative to the median (0 when there is no IQR)."""
    iqr = m.get("iqr")
    return (iqr[1] - iqr[0]) / m["speedup"] if iqr and m["speedup"] > 0 else 0.0


def _speedup(result: Any) -> dict[str, Any]:
    row = result.results[0].rows[-1]
    return {"speedup": float(row.speedup_paired or 0.0), "iqr": row.speedup_paired_iqr, "images_per_s": row.images_per_s}


def reference_of(candidates: list[Candidate], s: TuneSettings) -> Candidate:
    backend, precision = s.reference_pair
    return next(c for c in candidates if (c.backend, c.precision) == (backend, precision))


__all__ = ["close_loop", "deploy_pick", "measure", "mixed_factor", "recalibrate", "reference_of"]
