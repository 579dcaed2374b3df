"""The answer of a tune: every candidate deployed, benched round-robin with the reference and evaluated through its
own backend; the winner — the most accurate on the held-out images among those that meet the target — and its file
as ``OUT/tuned.*``."""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path
from typing import Any

from vitc.tune import loop
from vitc.tune.candidates import Candidate
from vitc.tune.journal import Journal
from vitc.tune.result import Entry
from vitc.tune.settings import TuneSettings
from vitc.tune.trials import Trial


def measure_all(candidates: list[Candidate], trials: list[Trial], picks: list[Trial], primary: Candidate, source: Any,
                 calib: Any, s: TuneSettings, deploy_settings: Any, dense_top1: float, device: str, out: Path,
                 journal: Journal, dense: str) -> list[Entry]:
    """Dense on every candidate, every trial and re-landed pick on the primary one: deployed, benched round-robin with
    the reference, top-1 through its own backend on the val split."""
    from vitc.core.artifacts import read_header
    from vitc.core.flops import model_macs
    from vitc.core.summary import count_params

    reference = loop.reference_of(candidates, s)
    entries = []
    for c in candidates:
        entries.append(Entry(f"dense {c.name}", "dense", c.backend, c.precision, c.dense_file, dense, predicted=c.gain,
                             holdout_top1=dense_top1))
    seen: set[str] = set()
    for t in [*trials, *picks[1:]]:
        if t.artifact is None or t.artifact in seen:
            continue
        seen.add(t.artifact)
        file, float_blocks, decision = loop.deploy_pick(t, primary, candidates, source, calib, s, deploy_settings, journal)
        entries.append(Entry(t.label, "final" if t.final else "round" if t.round else "trial",
                             primary.backend, primary.precision, file, t.artifact,
                             predicted=primary.gain * (t.predicted or 1.0) * loop.mixed_factor(decision), holdout_top1=t.holdout_top1,
                             float_blocks=float_blocks))
    others = [e for e in entries if f"{e.backend}:{e.file}" != reference.target]  # the reference is row 0 (1.0x)
    targets = [reference.target] + [f"{e.backend}:{e.file}" for e in others]
    measured = journal.step("final/bench", {"targets": targets, "mtimes": [Path(e.file).stat().st_mtime_ns for e in entries]},
                            lambda: {"rows": [_speedup_row(r) for r in loop.measure(targets, s, peak=True).results[0].rows]})
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
        if e.kind != "dense":  # a compressed (and maybe mixed-precision) file is verified like any other
            e.verified = journal.step(f"final/verify/{e.file}", {"file": e.file, "mtime": Path(e.file).stat().st_mtime_ns},
                                      partial(_verify, e, s))["passed"]
    return entries


def _verify(entry: Entry, s: TuneSettings) -> dict[str, Any]:
    """ONNX Runtime (or the file's own ONNX backend) against PyTorch on random and held-out-free inputs, at the
    precision's default tolerances; an engine is judged by the ONNX it was built from."""
    from vitc.backends import BACKENDS, ONNX, REFERENCE_BACKEND
    from vitc.backends.deploy import onnx_path
    from vitc.checks.verify import verify_onnx

    b = BACKENDS[entry.backend]
    if b.reads == ONNX:
        onnx, backend = entry.file, entry.backend
    else:  # an artifact runs as PyTorch itself; an engine is checked through its ONNX
        if entry.file == entry.artifact:
            return {"passed": True, "summary": "the model itself"}
        onnx, backend = str(onnx_path(entry.artifact, entry.precision)), REFERENCE_BACKEND
    report = verify_onnx(onnx, entry.artifact, data="random", batches=2, batch_size=8, threads=s.threads, backend=backend,
                         device="cpu")
    return {"passed": bool(report), "summary": report.summary()}


def _top1(file: str, source: Any, backend: str, device: str) -> dict[str, Any]:
    from vitc.checks.evaluate import evaluate_target

    return {"top1": evaluate_target(file, source, backend=backend, device=device).top1}


def _speedup_row(row: Any) -> dict[str, Any]:
    return {"speedup": float(row.speedup_paired or 0.0), "iqr": row.speedup_paired_iqr, "images_per_s": row.images_per_s}


def winner_of(entries: list[Entry], s: TuneSettings) -> tuple[Entry | None, str]:
    """The most accurate on the held-out images among those that meet S (within --max-drop, verified against PyTorch);
    None and why if none. Equal accuracy (as on synthetic data) goes to the file measured closest to S: no more
    compression than asked."""
    ok = [e for e in entries if e.meets and e.within_drop and e.verified is not False]
    if ok:
        best = max(ok, key=lambda e: (round(e.holdout_top1 or 0.0, 2), -abs((e.measured or 0.0) - s.target_speedup)))
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


def deliver(winner: Entry, out: Path) -> str:
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


__all__ = ["deliver", "measure_all", "winner_of"]
