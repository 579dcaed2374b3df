"""``vitc tune``: the fastest file this device runs within an accuracy tolerance, chosen by measurement.

1. **What the device gives** (:mod:`vitc.tune.candidates`, :mod:`vitc.tune.device`): the dense model deployed on
   every backend × precision that runs here, each profiled (a latency model) and benched paired against the reference
   (the dense model on ``--reference``, default ONNX Runtime fp32); the compression speedup each still needs is S
   over its gain.
2. **The method split, measured** (:mod:`vitc.tune.trials`): on the candidate with the largest gain, each split —
   structure alone, tokens alone, the combination at each ``--splits`` share — trained briefly at its speed target on
   that candidate's latency model, materialized and scored on held-out train images (never trained on, never the
   val images the report's accuracy is taken on). The most accurate within ``--max-drop`` goes on.
3. **Per-block precision** (:mod:`vitc.tune.precision`): an INT8 pick keeps a block float where INT8 does not pay on
   this device or costs accuracy; the Q/DQ placement follows.
4. **Close the loop**: the pick is deployed and benched paired against the reference. Off S by more than
   ``--tolerance``: the latency model is recalibrated with the measured point, the pick re-landed on it (a new keep
   ratio, or a new brief search) and measured again, at most ``--rounds`` times. With ``--final-epochs`` /
   ``--final-finetune-epochs`` the pick is then trained again from the dense model with that full recipe (same plan,
   split and target, on the latency model the loop ended on): short tries choose, the answer gets the training.
5. **The answer** (:mod:`vitc.tune.report`): every candidate deployed and benched round-robin with the reference
   (measured speedup, top-1 through its own backend on the val split, held-out top-1, MACs, params), the Pareto
   front, the winner — the most accurate on the held-out images among those that meet S — copied to
   ``OUT/tuned.*`` with why it won. A target nothing meets exits 1 naming the closest.

Every step is journaled (``OUT/tune.json``): ``--resume`` continues a killed tune where it stopped.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from vitc.core.errors import UsageError
from vitc.core.progress import log
from vitc.tune.answer import deliver, measure_all, winner_of
from vitc.tune.candidates import Candidate, candidate_pairs, device_name
from vitc.tune.device import measure_device
from vitc.tune.journal import Journal
from vitc.tune.loop import close_loop, train_final
from vitc.tune.result import TUNE_FORMAT, Entry, TuneResult
from vitc.tune.settings import TuneSettings
from vitc.tune.trials import Trial, holdout_top1, plans, run_trial


def tune(model: str, data: str, out: str | Path, settings: TuneSettings | None = None, *, pretrained: bool = False,
         checkpoint: str | None = None, resume: bool = False, force: bool = False, **options: Any) -> TuneResult:
    """Tune ``model`` (a trained dense model: timm name with ``pretrained``/``checkpoint``, vitc config or plain
    artifact) on ``data`` for ``settings.target_speedup`` on this device; write ``out``. A result that does not meet
    the target is returned with ``winner`` None (the CLI exits 1)."""
    from vitc.core.data import parse_data
    from vitc.core.fileio import check_output_dir
    from vitc.core.runs import Lock, prepare_out

    s = TuneSettings.with_options(settings, **options)
    out = Path(out)
    check_output_dir(out)
    base = parse_data(data)  # everything the inputs show is checked before the folder is made
    pairs = candidate_pairs(s, device_name(s.device))
    _check_model(model, base, pretrained, checkpoint)
    prepare_out(out, resume, force)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with Lock(out):
            return _tune(model, base, pairs, out, s, pretrained, checkpoint, resume)
    except UsageError:
        if created and not any("result" in v for v in _journaled(out).values()):
            shutil.rmtree(out, ignore_errors=True)  # refused before any step finished: nothing is left behind
        raise


def _journaled(out: Path) -> dict[str, Any]:
    import json

    from vitc.tune.journal import JOURNAL_NAME

    try:
        state = json.loads((out / JOURNAL_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in state.items() if isinstance(v, dict)} if isinstance(state, dict) else {}


def _check_model(model: str, source: Any, pretrained: bool, checkpoint: str | None) -> None:
    """A dense model (a compressed artifact is refused) whose head fits the data."""
    from vitc.core.models import dense_spec, is_artifact_path

    if is_artifact_path(model) and (pretrained or checkpoint):
        raise UsageError("--pretrained/--checkpoint apply to model names, not to artifact files")
    spec = dense_spec(model, num_classes=None if is_artifact_path(model) else source.head_classes())
    classes = source.num_classes(spec)
    if classes != spec.num_classes:
        raise UsageError(f"{model} has {spec.num_classes} classes but {source} has {classes}: its head does not fit this data")


def _tune(model: str, base: Any, pairs: list[tuple[str, str]], out: Path, s: TuneSettings, pretrained: bool,
          checkpoint: str | None, resume: bool) -> TuneResult:
    from vitc.backends.deploy import DeploySettings
    from vitc.checks.environment import environment
    from vitc.core.data import parse_data
    from vitc.onnx.settings import ExportSettings, QuantizeSettings

    t0 = time.perf_counter()
    device = device_name(s.device)
    source = base.with_holdout(s.holdout)
    calib_text = str(base) if base.kind != "synthetic" else "digits"
    calib = source if base.kind != "synthetic" else parse_data(calib_text)  # random pixels give no activation ranges
    journal = Journal(out, resume, planned=2 + 2 * len(pairs) + 2 * (3 + len(s.splits)) + 2 * s.rounds + 2
                      + (3 if s.trains_final else 0))
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
        rounds, picks = close_loop(_ranked(reachable, dense_top1, s)[0], primary, candidates, Path(dense), source, calib,
                                    s, deploy_settings, out, journal, train_device)
        if s.trains_final and picks[-1].plan:
            picks.append(train_final(picks[-1], rounds[-1]["latency"], rounds[-1]["compression_target"], Path(dense),
                                     source, s, out, journal, train_device))
    entries = measure_all(candidates, reachable, picks, primary, source, calib, s, deploy_settings, dense_top1, device,
                           out, journal, dense)
    winner, why = winner_of(entries, s)
    if not reachable:
        why += (f"; no split reaches the {primary.needed:.2f}x compression {primary.name} still needs: "
                + "; ".join(f"{t.name}: {t.unreachable}" for t in trials))
    deployed = deliver(winner, out) if winner is not None else None
    result = TuneResult(target_speedup=s.target_speedup, reference=s.reference, batch_size=s.batch_size,
                        candidates=candidates, trials=trials + [p for p in picks if p.final], rounds=rounds, entries=entries,
                        winner=winner.name if winner else None, why=why, deployed=deployed, dense_holdout_top1=dense_top1,
                        settings=s.summary(), environment=environment(),
                        seconds=round(time.perf_counter() - t0 + journal.resumed_seconds, 1),
                        resumed_seconds=round(journal.resumed_seconds, 1))
    from vitc.tune.report import write_report

    result.report = write_report(result, out)
    return result


def _dense_artifact(model: str, out: Path, source: Any, pretrained: bool, checkpoint: str | None) -> Path:
    """The dense model as a plain artifact in ``out`` (a plain artifact given as MODEL is used where it is)."""
    from vitc.core.artifacts import save_model
    from vitc.core.models import is_artifact_path, resolve_model
    from vitc.core.provenance import provenance

    if is_artifact_path(model):
        return Path(model)  # checked by _check_model
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


__all__ = ["TUNE_FORMAT", "Entry", "TuneResult", "TuneSettings", "tune"]
