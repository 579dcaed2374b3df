"""``vitc tune``: the fastest file this device runs within an accuracy tolerance, chosen by measurement.

1. **What the device gives** (:mod:`vitc.tune.device`): the dense model deployed on every backend × precision that
   runs here, each profiled (a latency model) and benched paired against the reference (the dense model on
   ``--reference``, default ONNX Runtime fp32); the compression speedup each still needs is S over its gain.
2. **The method split, measured** (:mod:`vitc.tune.trials`): on the candidate with the largest gain, each split —
   structure alone, tokens alone, the combination at each ``--splits`` share — trained briefly at its speed target on
   that candidate's latency model, materialized and scored on held-out train images (never trained on, never the
   val images the report's accuracy is taken on). The most accurate within ``--max-drop`` goes on.
3. **Per-block precision** (:mod:`vitc.tune.precision`): an INT8 pick keeps a block float where INT8 does not pay on
   this device or costs accuracy; the Q/DQ placement follows.
4. **Close the loop**: the pick is deployed and benched paired against the reference. Off S by more than
   ``--tolerance``: the latency model is recalibrated with the measured point, the pick re-landed on it (a new keep
   ratio, or a new brief search) and measured again, at most ``--rounds`` times.
5. **The answer** (:mod:`vitc.tune.report`): every candidate deployed and benched round-robin with the reference
   (measured speedup, top-1 through its own backend on the val split, held-out top-1, MACs, params), the Pareto
   front, the winner — the most accurate on the held-out images among those that meet S — copied to
   ``OUT/tuned.*`` with why it won. A target nothing meets exits 1 naming the closest.

Every step is journaled (``OUT/tune.json``): ``--resume`` continues a killed tune where it stopped.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any

from vitc.backends import BACKENDS, ONNX, REFERENCE_BACKEND
from vitc.core.errors import UsageError
from vitc.core.progress import log
from vitc.tune.device import Candidate, candidate_pairs, measure_device
from vitc.tune.journal import Journal
from vitc.tune.result import TUNE_FORMAT, Entry, TuneResult
from vitc.tune.settings import TuneSettings
from vitc.tune.trials import Trial, holdout_top1, plans, reland, run_trial


def tune(model: str, data: str, out: str | Path, settings: TuneSettings | None = None, *, pretrained: bool = False,
         checkpoint: str | None = None, resume: bool = False, force: bool = False, **options: Any) -> TuneResult:
    """Tune ``model`` (a trained dense model: timm name with ``pretrained``/``checkpoint``, vitc config or plain
    artifact) on ``data`` for ``settings.target_speedup`` on this device; write ``out``. A result that does not meet
    the target is returned with ``winner`` None (the CLI exits 1)."""
    from vitc.core.fileio import check_output_dir
    from vitc.core.runs import Lock, prepare_out

    s = TuneSettings.with_options(settings, **options)
    out = Path(out)
    check_output_dir(out)
    prepare_out(out, resume, force)
    out.mkdir(parents=True, exist_ok=True)
    with Lock(out):
        return _tune(model, data, out, s, pretrained, checkpoint, resume)


def _tune(model: str, data: str, out: Path, s: TuneSettings, pretrained: bool, checkpoint: str | None,
          resume: bool) -> TuneResult:
    from vitc.backends.deploy import DeploySettings
    from vitc.checks.environment import environment
    from vitc.core.data import parse_data
    from vitc.onnx.settings import ExportSettings, QuantizeSettings

    t0 = time.perf_counter()
    device = _device(s.device)
    base = parse_data(data)
    source = base.with_holdout(s.holdout)
    calib_text = str(base) if base.kind != "synthetic" else "digits"
    calib = source if base.kind != "synthetic" else parse_data(calib_text)  # random pixels give no activation ranges
    pairs = candidate_pairs(s, device)
    journal = Journal(out, resume, planned=2 + 2 * len(pairs) + 2 * (3 + len(s.splits)) + 2 * s.rounds + 2)
    dense = journal.step("dense", {"model": model, "pretrained": pretrained, "checkpoint": checkpoint, "data": str(base)},
                         lambda: {"artifact": str(_dense_artifact(model, out, base, pretrained, checkpoint))})["artifact"]
    deploy_settings = DeploySettings(export=ExportSettings(verify=False),
                                     quantize=QuantizeSettings(data=calib_text, num_samples=s.calib_samples), calib_source=calib)
    candidates = measure_device(Path(dense), pairs, s, deploy_settings, calib_text, device, out, journal)
    dense_top1 = holdout_top1(dense, source, journal)
    primary = max(candidates, key=lambda c: c.gain)
    log(f"tune: the largest gain is {primary.name} ({primary.gain:.2f}x); compression must give {primary.needed:.2f}x")
    train_device = "cuda" if device.startswith("cuda") else "cpu"
    trials = _trials(primary, Path(dense), source, s, train_device, out, journal)
    reachable = [t for t in trials if t.artifact is not None]
    rounds: list[dict[str, Any]] = []
    picks: list[Trial] = []
    if reachable:
        rounds, picks = _close_loop(_ranked(reachable, dense_top1, s)[0], primary, candidates, Path(dense), source, calib,
                                    s, deploy_settings, out, journal, train_device)
    entries = _measure_all(candidates, reachable, picks, primary, source, calib, s, deploy_settings, dense_top1, device,
                           out, journal, dense)
    winner, why = _winner(entries, s)
    if not reachable:
        why += (f"; no split reaches the {primary.needed:.2f}x compression {primary.name} still needs: "
                + "; ".join(f"{t.name}: {t.unreachable}" for t in trials))
    deployed = _deliver(winner, out) if winner is not None else None
    result = TuneResult(target_speedup=s.target_speedup, reference=s.reference, batch_size=s.batch_size,
                        candidates=candidates, trials=trials, rounds=rounds, entries=entries,
                        winner=winner.name if winner else None, why=why, deployed=deployed, dense_holdout_top1=dense_top1,
                        settings=s.summary(), environment=environment(), seconds=round(time.perf_counter() - t0, 1))
    from vitc.tune.report import write_report

    result.report = write_report(result, out)
    return result


def _device(name: str) -> str:
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _dense_artifact(model: str, out: Path, source: Any, pretrained: bool, checkpoint: str | None) -> Path:
    """The dense model as a plain artifact in ``out`` (a plain artifact given as MODEL is used where it is)."""
    from vitc.core.artifacts import save_model
    from vitc.core.models import dense_spec, is_artifact_path, resolve_model
    from vitc.core.provenance import provenance

    if is_artifact_path(model):
        dense_spec(model)  # a compressed artifact is refused
        if pretrained or checkpoint:
            raise UsageError("--pretrained/--checkpoint apply to model names, not to artifact files")
        return Path(model)
    net, spec = resolve_model(model, pretrained=pretrained, checkpoint=checkpoint, num_classes=source.head_classes())
    return save_model(out / "dense" / "model.safetensors", net, spec,
                      meta={"source": model, "provenance": provenance("import", parent=model)})


def _trials(primary: Candidate, dense: Path, source: Any, s: TuneSettings, device: str, out: Path,
            journal: Journal) -> list[Trial]:
    if primary.needed <= 1.0 + s.tolerance:  # the dense model on this backend and precision is fast enough already
        trial = Trial("dense", [], artifact=str(dense), predicted=1.0)
        from vitc.tune.trials import score

        return [score(trial, source, primary.profile, journal)]
    return [run_trial(name, steps, dense, source, primary.profile, out / "trials" / name, s, device, journal)
            for name, steps in plans(s, primary.needed)]


def _ranked(trials: list[Trial], dense_top1: float, s: TuneSettings) -> list[Trial]:
    """Most accurate on the held-out images first, those within --max-drop before the others."""
    def key(t: Trial) -> tuple[bool, float]:
        drop = dense_top1 - (t.holdout_top1 or 0.0)
        return (s.max_drop is not None and drop > s.max_drop, -(t.holdout_top1 or 0.0))

    return sorted(trials, key=key)


# ------------------------------------------------------------------------------------------------
# deploying a pick and closing the loop
# ------------------------------------------------------------------------------------------------

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


def _measure(targets: list[str], s: TuneSettings, peak: bool = False) -> Any:
    from vitc.checks.bench import bench_targets
    from vitc.checks.settings import BenchSettings

    bench = BenchSettings(batch_sizes=[s.batch_size], device=_device(s.device), threads=s.threads, warmup_ms=200.0,
                          min_iters=10, min_seconds=s.bench_seconds, peak=peak)
    return bench_targets(targets, bench)


def _close_loop(trial: Trial, primary: Candidate, candidates: list[Candidate], dense: Path, source: Any, calib: Any,
                s: TuneSettings, deploy_settings: Any, out: Path, journal: Journal,
                train_device: str) -> tuple[list[dict[str, Any]], list[Trial]]:
    """Measure the pick; off S: recalibrate, re-land, measure again (at most ``s.rounds`` times)."""
    reference = _reference(candidates, s)
    rounds: list[dict[str, Any]] = []
    picks = [trial]
    latency = primary.profile
    for r in range(1, s.rounds + 1):
        file, float_blocks, decision = deploy_pick(trial, primary, candidates, source, calib, s, deploy_settings, journal)
        measured = journal.step(f"loop/r{r}/measure", {"file": file, "mtime": Path(file).stat().st_mtime_ns,
                                                        "reference": reference.target},
                                partial(_measured, [reference.target, f"{primary.backend}:{file}"], s))
        speedup = measured["speedup"]
        predicted = primary.gain * (trial.predicted or 1.0)
        within = abs(speedup / s.target_speedup - 1) <= s.tolerance
        rounds.append({"round": r, "trial": trial.name, "artifact": trial.artifact, "file": file, "latency": latency,
                       "predicted": predicted, "measured": speedup, "within_tolerance": within,
                       "float_blocks": float_blocks, "precision_decision": decision})
        log(f"loop round {r}: {trial.name} on {primary.name} predicted {predicted:.2f}x, measured {speedup:.2f}x "
            f"(S {s.target_speedup:g}, tolerance {s.tolerance:.0%})")
        if within or r == s.rounds:
            break
        latency = str(recalibrate(latency, str(trial.artifact), speedup / primary.gain, out / "profiles" /
                                  f"{Path(primary.profile).stem}-r{r}.json"))
        rounds[-1]["recalibrated"] = latency
        trial = _reland(trial, latency, primary, dense, source, s, out, journal, r, train_device)
        picks.append(trial)
    return rounds, picks


def _reland(trial: Trial, latency: str, primary: Candidate, dense: Path, source: Any, s: TuneSettings, out: Path,
            journal: Journal, r: int, device: str) -> Trial:
    """The pick again on the recalibrated latency model: a token-selection pick at a new keep ratio; a pruned one by
    a new brief search at the same target."""
    from vitc.methods import METHODS

    last = METHODS[trial.plan[-1]] if trial.plan else None
    if last is not None and last.token_selection and trial.compressed:
        return reland(trial, latency, primary.needed, out / "trials" / trial.name, source, journal, r)
    steps = [(METHODS[k], primary.needed) for k in trial.plan]
    if len(steps) > 1:  # the combination keeps its split: structure C^a, then tokens to C
        share = float(trial.name.rsplit("-a", 1)[-1])
        steps[0] = (steps[0][0], primary.needed**share)
    return run_trial(trial.name, steps, dense, source, latency, out / "trials" / f"{trial.name}-r{r}", s, device, journal,
                     round_=r)


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


def _measured(targets: list[str], s: TuneSettings) -> dict[str, Any]:
    return _speedup(_measure(targets, s))


def _speedup(result: Any) -> dict[str, Any]:
    row = result.results[0].rows[-1]
    return {"speedup": float(row.speedup_paired or 0.0), "iqr": row.speedup_paired_iqr, "images_per_s": row.images_per_s}


def _reference(candidates: list[Candidate], s: TuneSettings) -> Candidate:
    backend, precision = s.reference_pair
    return next(c for c in candidates if (c.backend, c.precision) == (backend, precision))


# ------------------------------------------------------------------------------------------------
# every candidate, measured; the winner
# ------------------------------------------------------------------------------------------------

def _measure_all(candidates: list[Candidate], trials: list[Trial], picks: list[Trial], primary: Candidate, source: Any,
                 calib: Any, s: TuneSettings, deploy_settings: Any, dense_top1: float, device: str, out: Path,
                 journal: Journal, dense: str) -> list[Entry]:
    """Dense on every candidate, every trial and re-landed pick on the primary one: deployed, benched round-robin with
    the reference, top-1 through its own backend on the val split."""
    from vitc.core.artifacts import read_header
    from vitc.core.flops import model_macs
    from vitc.core.summary import count_params

    reference = _reference(candidates, s)
    entries = []
    for c in candidates:
        entries.append(Entry(f"dense {c.name}", "dense", c.backend, c.precision, c.dense_file, dense, predicted=c.gain,
                             holdout_top1=dense_top1))
    seen: set[str] = set()
    for t in [*trials, *picks[1:]]:
        if t.artifact is None or t.artifact in seen:
            continue
        seen.add(t.artifact)
        file, float_blocks, _ = deploy_pick(t, primary, candidates, source, calib, s, deploy_settings, journal)
        entries.append(Entry(t.name + (f" (round {t.round})" if t.round else ""), "round" if t.round else "trial",
                             primary.backend, primary.precision, file, t.artifact,
                             predicted=primary.gain * (t.predicted or 1.0), holdout_top1=t.holdout_top1,
                             float_blocks=float_blocks))
    others = [e for e in entries if f"{e.backend}:{e.file}" != reference.target]  # the reference is row 0 (1.0x)
    targets = [reference.target] + [f"{e.backend}:{e.file}" for e in others]
    measured = journal.step("final/bench", {"targets": targets, "mtimes": [Path(e.file).stat().st_mtime_ns for e in entries]},
                            lambda: {"rows": [_speedup_row(r) for r in _measure(targets, s, peak=True).results[0].rows]})
    rows = dict(zip(targets, measured["rows"]))
    for e in entries:
        m = rows[f"{e.backend}:{e.file}"]
        e.measured, e.measured_iqr, e.images_per_s = m["speedup"], m["iqr"], m.get("images_per_s")
        e.meets = e.measured >= s.target_speedup * (1 - s.tolerance)
        e.within_drop = s.max_drop is None or dense_top1 - (e.holdout_top1 or 0.0) <= s.max_drop
        spec = read_header(e.artifact, verify=False)[0]
        e.macs, e.params = model_macs(spec), count_params(spec)
        top1 = journal.step(f"final/top1/{e.backend}/{e.file}", {"file": e.file, "mtime": Path(e.file).stat().st_mtime_ns},
                            partial(_top1, e.file, source, e.backend, device))
        e.top1 = top1["top1"]
    return entries


def _top1(file: str, source: Any, backend: str, device: str) -> dict[str, Any]:
    from vitc.checks.evaluate import evaluate_target

    return {"top1": evaluate_target(file, source, backend=backend, device=device).top1}


def _speedup_row(row: Any) -> dict[str, Any]:
    return {"speedup": float(row.speedup_paired or 0.0), "iqr": row.speedup_paired_iqr, "images_per_s": row.images_per_s}


def _winner(entries: list[Entry], s: TuneSettings) -> tuple[Entry | None, str]:
    """The most accurate on the held-out images among those that meet S (within --max-drop); None and why if none."""
    ok = [e for e in entries if e.meets and e.within_drop]
    if ok:
        best = max(ok, key=lambda e: (e.holdout_top1 or 0.0, e.measured or 0.0))
        others = len(ok) - 1
        return best, (f"{best.name} on {best.backend} {best.precision} measured {best.measured:.2f}x (S {s.target_speedup:g}, "
                      f"at least {s.target_speedup * (1 - s.tolerance):.2f}x), held-out top-1 {best.holdout_top1:.2f}%: the "
                      f"most accurate of the {others + 1} that meet S" + (" within the accuracy limit" if s.max_drop is not None
                                                                          else ""))
    pool = [e for e in entries if e.within_drop] or entries
    closest = max(pool, key=lambda e: e.measured or 0.0)
    return None, (f"no candidate meets {s.target_speedup:g}x (at least {s.target_speedup * (1 - s.tolerance):.2f}x"
                  + (f" within {s.max_drop:g} top-1 points" if s.max_drop is not None else "") + f"): the closest is "
                  f"{closest.name} on {closest.backend} {closest.precision} at {closest.measured or 0.0:.2f}x")


def _deliver(winner: Entry, out: Path) -> str:
    """The winner's file (and its artifact) as ``OUT/tuned.*``."""
    from vitc.core.fileio import atomic_path

    src = Path(winner.file)
    suffix = "".join(src.suffixes[-2:]) if len(src.suffixes) > 1 else src.suffix
    target = out / f"tuned{suffix}"
    with atomic_path(target) as tmp:
        shutil.copyfile(src, tmp)
    sidecar = src.with_name(src.name + ".json")  # an engine's record of itself
    if sidecar.is_file():
        with atomic_path(target.with_name(target.name + ".json")) as tmp:
            shutil.copyfile(sidecar, tmp)
    if winner.artifact and winner.artifact != winner.file:
        with atomic_path(out / "tuned.safetensors") as tmp:
            shutil.copyfile(winner.artifact, tmp)
    return str(target)


__all__ = ["TUNE_FORMAT", "Entry", "TuneResult", "TuneSettings", "deploy_pick", "recalibrate", "tune"]
