"""``vitc run``: check the config against its model, plan the stages, run them, write the report.

The whole YAML is validated and everything knowable from the model spec is checked before any stage
(:mod:`vitc.pipeline.preflight`); the stages come from :mod:`vitc.pipeline.plan`, their records and the
folder lock from :mod:`vitc.core.runs`. With ``--resume`` an unchanged stage is skipped and an
interrupted training stage continues from its own per-epoch checkpoint; without it a folder that holds
an earlier run is refused (``--force`` starts over there). A stage that fails stops the run (``stage
k/N NAME failed: ...``); a check that fails (a verification, a target) is reported and, at the end,
fails the run unless ``--allow-fail``.

Speedups in the report come from paired runs: each compressed format is benched alternately with the
dense model in the same format (the ``vitc bench --compare`` protocol), so drifts of a shared machine
hit both sides alike (``bench.paired: false``: each on its own).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from vitc.checks.environment import environment
from vitc.core.errors import CheckFailed, UsageError, VitcError
from vitc.core.fileio import check_output_dir, write_json
from vitc.core.progress import log
from vitc.core.runs import CHECKPOINT_NAME, LOCK_NAME, STATE_NAME, Lock, Stage, StageRecords, drop_checkpoints, prepare_out, stage_key
from vitc.pipeline.config import PipelineConfig
from vitc.pipeline.plan import Plan, Row
from vitc.pipeline.preflight import preflight

__all__ = ["CHECKPOINT_NAME", "LOCK_NAME", "STATE_NAME", "Pipeline", "Row", "Stage", "prepare_out", "run_pipeline",
           "stage_key"]


class Pipeline:
    """One run of ``cfg`` in ``out_dir``: its plan, the stage records, and the report."""

    def __init__(self, cfg: PipelineConfig, out_dir: Path, resume: bool = False) -> None:
        self.cfg, self.out, self.resume = cfg, out_dir, resume
        self._plan = Plan(cfg, out_dir, resume)
        self.ran: list[str] = []
        self.skipped: list[str] = []

    @property
    def rows(self) -> list[Row]:
        return self._plan.rows

    def plan(self) -> list[Stage]:
        """Every stage of the run, in order (nothing runs here)."""
        return self._plan.build()

    def dry_run(self) -> dict[str, Any]:
        """What ``vitc run`` would do: every stage, and which ``--resume`` would skip (nothing is written)."""
        stages = self.plan()
        records = StageRecords(self.out, self.resume)
        total = len(stages)
        plan = [{"stage": k, "of": total, "name": s.name, "action": "skip (unchanged)" if records.unchanged(s) else "run",
                 "options": s.options} for k, s in enumerate(stages, 1)]
        return {"out": str(self.out), "resume": self.resume, "stages": plan, "notes": list(self.cfg.notes),
                "targets": [t.text for t in self.cfg.targets],
                "would_run": sum(p["action"] == "run" for p in plan), "would_skip": sum(p["action"] != "run" for p in plan)}

    def execute(self) -> dict[str, Any]:
        stages = self.plan()
        records = StageRecords(self.out, self.resume)
        for note in self.cfg.notes:
            log(f"note: {note}")
        total = len(stages)
        results: dict[str, dict[str, Any]] = {}
        t0 = time.perf_counter()
        for k, stage in enumerate(stages, 1):
            where = f"stage {k}/{total} {stage.name}"
            if records.unchanged(stage):
                log(f"[skip] {where} (unchanged)")
                self.skipped.append(stage.name)
                results[stage.name] = records.result(stage)
                continue
            if stage.checkpoints is not None and records.changed(stage) and drop_checkpoints(stage.checkpoints):
                log(f"[fresh] {where}: its settings or inputs changed since its checkpoint was written; starting it over")
            records.start(stage)
            log(f"[run] {where}")
            started = time.perf_counter()
            try:
                result = stage.fn()
            except UsageError as e:
                raise UsageError(f"{where} failed: {e}") from None
            except VitcError as e:
                raise CheckFailed(f"{where} failed: {e}") from None
            missing = [str(p) for p in stage.outputs if not p.exists()]
            if missing:
                raise CheckFailed(f"{where} failed: it did not produce {missing[0]}")
            results[stage.name] = dict(result or {})
            records.record(stage, results[stage.name], time.perf_counter() - started)
            self.ran.append(stage.name)
        return self._report(results, time.perf_counter() - t0)

    def _report(self, results: dict[str, dict[str, Any]], seconds: float) -> dict[str, Any]:
        from vitc.core.artifacts import read_header
        from vitc.core.flops import model_macs
        from vitc.core.summary import count_params
        from vitc.pipeline.report import add_speedups, markdown_table, write_report
        from vitc.pipeline.targets import check_targets, describe

        cfg = self.cfg
        dense_macs = model_macs(read_header(self._plan.dense_artifact, verify=False)[0])
        rows: list[dict[str, Any]] = []
        failed: list[str] = []
        for r in self.rows:
            spec, _, meta = read_header(r.artifact, verify=False)
            macs = model_macs(spec)
            origin = meta.get("origin") if isinstance(meta.get("origin"), dict) else None
            row: dict[str, Any] = {
                "variant": r.variant, "method": r.method, "format": r.format, "backend": r.backend,
                "precision": r.precision, "artifact": str(r.artifact), "target": str(r.target),
                "params": count_params(spec), "macs": macs, "macs_ratio": macs / dense_macs,
                "macs_ratio_origin": macs / origin["macs"] if origin else macs / dense_macs,
                **{k: meta[k] for k in ("target_speedup", "predicted_speedup") if isinstance(meta.get(k), (int, float))},
            }
            if r.verify:
                v = results[r.verify]
                row["verify"] = "PASS" if v.get("passed") else "FAIL"
                row["verify_detail"] = v
                if not v.get("passed"):
                    failed.append(f"{r.variant} {r.format}: {v.get('summary', 'verification failed')}")
            ev = results[r.eval]
            row["top1"], row["top5"], row["top1_backend"] = ev["top1"], ev["top5"], f"{r.backend} {r.precision}"
            row["images"] = ev.get("images")
            if r.bench:
                b = results[r.bench]
                row["throughput"] = b["throughput"]
                row["speedup"] = b.get("speedup", {})
                row["speedup_paired"] = r.paired
                row["bench"] = b.get("detail")
            rows.append(row)
        if self._plan.tuned is not None:
            rows.append(tune_row(results[self._plan.tuned], dense_macs, cfg.bench.batch_sizes))
        add_speedups(rows)
        targets = check_targets(rows, cfg.targets)
        for t in targets:
            log(f"target {describe(t)}")
            if not t["met"]:
                failed.append(f"target {describe(t)}")
        meta = {"model": cfg.model, "data": cfg.data, "seed": cfg.seed, "seconds": round(seconds, 1),
                "stages_run": len(self.ran), "stages_skipped": len(self.skipped)}
        if cfg.subset.active:
            meta["subset"] = f"first {cfg.subset.train or 'all'} train / {cfg.subset.val or 'all'} val images"
        files = write_report(self.out, rows, meta, environment(), targets=targets)
        return {"report": files, "rows": rows, "table": markdown_table(rows), "meta": meta, "failed": failed,
                "targets": targets, "stages_run": self.ran, "stages_skipped": self.skipped}


def tune_row(result: dict[str, Any], dense_macs: int, batches: list[int]) -> dict[str, Any]:
    """The report row of a run's `vitc tune`: its winner (or, when nothing met the target, the closest) as measured by
    the tune against the dense model on the reference backend, top-1 through its own backend."""
    entries = result.get("entries", [])
    chosen = next((e for e in entries if e["name"] == result.get("winner")), None) or max(
        entries, key=lambda e: e.get("measured") or 0.0)
    from vitc.backends import BACKENDS

    batch = str(result["batch_size"])
    macs = chosen.get("macs") or dense_macs
    # over the dense file on its own backend and precision: both measured paired with the reference in the tune's bench
    same = next((e for e in entries if e.get("kind") == "dense" and (e["backend"], e["precision"]) ==
                 (chosen["backend"], chosen["precision"])), None)
    speedup = {batch: chosen["measured"] / same["measured"]} if same and same.get("measured") and chosen.get("measured") \
        else {}
    return {
        "variant": f"tune-x{result['target_speedup']:g}" + ("" if result.get("met") else " (not met)"), "method": "tune",
        "format": BACKENDS[chosen["backend"]].format_label(chosen["precision"]), "backend": chosen["backend"],
        "precision": chosen["precision"], "artifact": chosen.get("artifact"), "target": result.get("deployed") or chosen["file"],
        "params": chosen.get("params"), "macs": macs, "macs_ratio": macs / dense_macs, "macs_ratio_origin": macs / dense_macs,
        "top1": chosen.get("top1"), "top5": None, "top1_backend": f"{chosen['backend']} {chosen['precision']}",
        "throughput": {batch: chosen.get("images_per_s")} if chosen.get("images_per_s") else {},
        "speedup": speedup, "stacked_speedup_measured": {batch: chosen.get("measured")},
        "target_speedup": result["target_speedup"], "predicted_speedup": chosen.get("predicted"),
        "tune": {"winner": result.get("winner"), "why": result.get("why"), "report": result.get("report")},
    }


def run_pipeline(cfg: PipelineConfig, out: str | Path | None = None, resume: bool = False, *, force: bool = False,
                 dry_run: bool = False) -> dict[str, Any]:
    """Check, plan and run the pipeline (or, with ``dry_run``, check it and say what would run)."""
    out_dir = Path(os.path.expanduser(str(out or cfg.out or "runs/pipeline")))
    pipeline = Pipeline(cfg, out_dir, resume)
    if dry_run:
        check_output_dir(out_dir)
        preflight(cfg, pipeline._plan, dry_run=True)
        return pipeline.dry_run()
    preflight(cfg, pipeline._plan)
    prepare_out(out_dir, resume, force)
    out_dir.mkdir(parents=True, exist_ok=True)
    with Lock(out_dir):
        write_json(out_dir / "pipeline.json", cfg.to_dict())
        return pipeline.execute()

