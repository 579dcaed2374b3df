"""The method split, measured: each way of getting the compression speedup C that the device still needs — structure
alone (UVC), tokens alone (DynamicViT), and the combination at each asked split (structure C^a, then tokens to C) —
trained briefly at its speed target on the candidate's latency model, materialized, and scored on the held-out
images. The roles come from the method registry (a method that prunes structure, one that selects tokens, one
that selects tokens on the other's output), so no method is named here."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from vitc.core.errors import CheckFailed, UsageError
from vitc.core.progress import log
from vitc.methods import METHODS, Method
from vitc.tune.journal import Journal
from vitc.tune.settings import TuneSettings


@dataclass
class Trial:
    """One compressed model tried: how it was made, what the latency model predicts for it, how it scores."""

    name: str
    plan: list[str]  # the method kinds, in order
    artifact: str | None = None  # the materialized (plain) model
    compressed: str | None = None  # the last method's compressed artifact (its keep ratio can be re-landed)
    predicted: float | None = None  # compression speedup predicted on the candidate's latency model
    holdout_top1: float | None = None
    macs: int | None = None
    params: int | None = None
    keep_ratio: float | None = None
    blocks: int | None = None
    unreachable: str | None = None  # why this split cannot reach the target (said, not an error)
    round: int = 0
    final: bool = False  # the pick trained again with the full recipe (--final-epochs / --final-finetune-epochs)

    @property
    def label(self) -> str:
        """Its name in the report: ``uvc (round 1)``, ``uvc (final)``."""
        return self.name + (" (final)" if self.final else f" (round {self.round})" if self.round else "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def roles(kinds: list[str]) -> tuple[Method | None, Method | None, Method | None]:
    """(structure pruning, token selection, token selection on the pruned model) among ``kinds``."""
    chosen = [METHODS[k] for k in kinds]
    structure = next((m for m in chosen if not m.token_selection and m.parent is None), None)
    tokens = next((m for m in chosen if m.token_selection and m.parent is None), None)
    both = next((m for m in chosen if m.parent is not None and structure is not None and m.parent == structure.kind), None)
    return structure, tokens, both


def plans(settings: TuneSettings, needed: float) -> list[tuple[str, list[tuple[Method, float]]]]:
    """(name, [(method, its speed target)...]) for every split to try at compression speedup ``needed``."""
    structure, tokens, both = roles(settings.methods)
    out: list[tuple[str, list[tuple[Method, float]]]] = []
    if structure is not None:
        out.append((structure.kind, [(structure, needed)]))
    if tokens is not None:
        out.append((tokens.kind, [(tokens, needed)]))
    if both is not None and structure is not None:
        for share in settings.splits:
            out.append((f"{both.kind}-a{share:.2f}", [(structure, needed**share), (both, needed)]))
    return out


def run_trial(name: str, steps: list[tuple[Method, float]], dense: Path, source: Any, latency: str, folder: Path,
              settings: TuneSettings, train_device: str, journal: Journal, round_: int = 0) -> Trial:
    """Train each method of the plan in turn (each on the previous one's output) at its speed target on ``latency``,
    materialize the last, and score it on the held-out images."""
    trial = Trial(name, [m.kind for m, _ in steps], round=round_)
    model = str(dense)
    compressed = None
    for i, (method, target) in enumerate(steps):
        work = folder / f"{i}-{method.kind.replace('+', '-')}"
        options = {"method": method.kind, "model": model, "target": target, "latency": latency, "epochs": settings.epochs,
                   "finetune_epochs": settings.finetune_epochs, "batch": settings.train_batch_size, "lr": settings.lr,
                   "seed": settings.seed, "data": str(source)}
        try:
            result = journal.step(f"trial/{name}/r{round_}/{method.kind}", options,
                                  partial(_compress, method, target, model, work, source, latency, settings, train_device))
        except (UsageError, CheckFailed) as e:  # out of this split's reach, or its short search did not get there
            trial.unreachable = str(e)
            log(f"trial {name}: {e}")
            return trial
        compressed = result["artifact"]
        if i < len(steps) - 1:
            model = _materialized(compressed, work / "materialized.safetensors")
    assert compressed is not None
    trial.compressed = compressed
    trial.artifact = _materialized(compressed, folder / "materialized.safetensors")
    return score(trial, source, latency, journal)


def score(trial: Trial, source: Any, latency: str, journal: Journal) -> Trial:
    """Predicted compression speedup, MACs, params, blocks, keep ratio and held-out top-1 of ``trial.artifact``."""
    from vitc.core.artifacts import read_header
    from vitc.core.flops import model_macs
    from vitc.core.latency import load_latency
    from vitc.core.summary import count_params

    assert trial.artifact is not None
    spec, _, meta = read_header(trial.artifact, verify=False)
    trial.predicted = float(load_latency(latency).predict(spec, trial.name)["speedup"])
    trial.macs, trial.params, trial.blocks = model_macs(spec), count_params(spec), spec.depth
    trial.keep_ratio = meta.get("keep_ratio") if isinstance(meta.get("keep_ratio"), (int, float)) else None
    trial.holdout_top1 = holdout_top1(trial.artifact, source, journal)
    log(f"trial {trial.name}: predicted {trial.predicted:.2f}x compression, held-out top-1 {trial.holdout_top1:.2f}%")
    return trial


def holdout_top1(target: str, source: Any, journal: Journal, backend: str | None = None) -> float:
    """Top-1 (%) of ``target`` on the held-out images, through ``backend`` (default: the one it ships in)."""
    from vitc.checks.evaluate import evaluate_target

    options = {"target": target, "data": str(source), "backend": backend or "auto", "mtime": Path(target).stat().st_mtime_ns}
    return float(journal.step(f"holdout/{target}/{backend or 'auto'}", options,
                              lambda: {"top1": evaluate_target(target, source, split="holdout", backend=backend or "auto",
                                                               device="cpu").top1})["top1"])


def _compress(method: Method, target: float, model: str, work: Path, source: Any, latency: str, settings: TuneSettings,
              device: str) -> dict[str, Any]:
    """One method at ``target`` (a latency target on ``latency``); a search that misses its budget in the short
    schedule continues from its checkpoint with twice the epochs, up to four times the epochs."""
    epochs = settings.epochs
    while True:
        s = method.trial_settings(target_speedup=target, latency=latency, epochs=epochs,
                                  finetune_epochs=settings.finetune_epochs, batch_size=settings.train_batch_size,
                                  lr=settings.lr, seed=settings.seed, device=device)
        try:
            result = method.compress(model, source, work, s, resume=work.is_dir() and any(work.rglob("checkpoint.pt")))
            return {"artifact": str(result["artifact"]) if result else str(work / "compressed.safetensors")}
        except CheckFailed as e:
            if epochs >= 4 * settings.epochs:
                raise
            epochs *= 2
            log(f"{e}; continuing to {epochs} epochs")


def _materialized(compressed: str, out: Path) -> str:
    """``compressed`` materialized at ``out``, once: a file there written after ``compressed`` (writes are atomic) is
    its materialization and is kept, so a resumed tune keeps every later step keyed on its mtime (held-out scores,
    deployed files, per-block precision, measurements); a retrained ``compressed`` is materialized again."""
    if out.is_file() and out.stat().st_mtime_ns >= Path(compressed).stat().st_mtime_ns:
        return str(out)
    return _materialize(compressed, out)


def _materialize(compressed: str, out: Path) -> str:
    from vitc.methods import materialize

    if out.is_file():
        out.unlink()  # a re-landed trial: made again
    return str(materialize(compressed, out)["artifact"])


def reland(trial: Trial, latency: str, target: float, folder: Path, source: Any, journal: Journal, round_: int) -> Trial:
    """A token-selection trial at the keep ratio that meets ``target`` on the recalibrated ``latency`` (no retraining:
    its predictors rank tokens at any ratio); None when the last method does not select tokens."""
    from vitc.core.artifacts import load_artifact
    from vitc.core.latency import load_latency
    from vitc.methods import materialize, method_of

    assert trial.compressed is not None
    art = load_artifact(trial.compressed)
    choice = method_of(art.kind, art.path).keep_ratio_for_speedup(art, load_latency(latency), target)
    out = folder / f"relanded-r{round_}.safetensors"
    if out.is_file():
        out.unlink()
    made = materialize(trial.compressed, out, [choice["keep_ratio"]])
    again = Trial(trial.name, trial.plan, artifact=str(made["variants"][0]["artifact"]), compressed=trial.compressed,
                  round=round_)
    return score(again, source, latency, journal)


__all__ = ["Trial", "holdout_top1", "plans", "reland", "roles", "run_trial", "score"]
