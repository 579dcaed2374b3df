"""``vitc run``: baseline → compress → materialize → export → quantize → build → verify → eval → bench → report.

The run is planned first — every stage with its options, inputs and outputs — and the whole YAML was
validated before that, so nothing runs unless all of it can. Each stage writes into ``DIR/<variant>/``
and is recorded in ``DIR/stages.json`` with a key made of its options and the size and modification
time of its input files. With ``--resume`` a stage whose key is unchanged and whose outputs exist is
skipped, and an interrupted training stage continues from its own per-epoch checkpoint. Without
``--resume`` a folder that holds an earlier run is refused (``--force`` starts over there). A lock
file keeps two runs out of one folder. A stage that fails stops the run (``stage k/N NAME failed:
...``); a check that fails (a verification) is reported and, at the end, fails the run unless
``--allow-fail``.

Speedups in the report come from paired runs: each compressed format is benched alternately with the
dense model in the same format (the ``vitc bench --compare`` protocol), so drifts of a shared machine
hit both sides alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from vitc.checks.environment import environment, trt_available
from vitc.core.device import process_running
from vitc.core.errors import CheckFailed, UsageError, VitcError
from vitc.core.fileio import check_output_dir, write_json
from vitc.core.progress import log
from vitc.core.settings import to_args, to_dict
from vitc.pipeline.config import PipelineConfig

STATE_NAME = "stages.json"
LOCK_NAME = ".vitc-run.lock"
CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class Stage:
    name: str
    options: dict[str, Any]
    inputs: list[Path]
    outputs: list[Path]
    fn: Callable[[], dict[str, Any]]


@dataclass
class Row:
    """One (variant, deployed format) of the report, and the stages that measure it."""

    variant: str
    method: str  # "dense" or a method kind
    artifact: Path
    backend: str
    precision: str
    target: Path
    verify: str | None = None
    eval: str = ""
    bench: str | None = None
    paired: bool = False
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def format(self) -> str:
        if self.backend == "torch":
            return "pytorch"
        return f"onnx {self.precision}" if self.backend == "onnxruntime" else f"trt {self.precision}"


def stage_key(options: dict[str, Any], inputs: list[Path]) -> str:
    h = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode())
    for p in inputs:
        st = p.stat()
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


class Lock:
    """``DIR/.vitc-run.lock`` holding the owner's pid; a lock whose process is gone is taken over."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME

    def __enter__(self) -> Lock:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and process_running(owner):
                    raise UsageError(f"{self.path.parent} is in use by another vitc run (pid {owner}); wait for it or "
                                     f"use another --out") from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone (killed, or another machine's)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            return self
        raise UsageError(f"could not lock {self.path.parent}")

    def _owner(self) -> int | None:
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None

    def __exit__(self, *exc: object) -> None:
        if self._owner() == os.getpid():
            self.path.unlink(missing_ok=True)


class Pipeline:
    def __init__(self, cfg: PipelineConfig, out_dir: Path, resume: bool = False) -> None:
        self.cfg, self.out, self.resume = cfg, out_dir, resume
        self.stages: list[Stage] = []
        self.rows: list[Row] = []
        self.state: dict[str, Any] = {}
        self.ran: list[str] = []
        self.skipped: list[str] = []

    # ---- planning -------------------------------------------------------------------------------
    def add(self, name: str, options: dict[str, Any], inputs: list[Path], outputs: list[Path],
            fn: Callable[[], dict[str, Any]]) -> str:
        if any(s.name == name for s in self.stages):
            raise UsageError(f"{self.cfg.source}: two stages are named {name!r}; give the variants distinct values")
        self.stages.append(Stage(name, options, inputs, outputs, fn))
        return name

    def plan(self) -> list[Stage]:
        """Every stage of the run, in order (nothing runs here)."""
        self.stages, self.rows = [], []
        dense = self._baseline()
        variants: list[tuple[str, str, Path]] = [("dense", "dense", dense)]
        produced: dict[tuple[str, Any], tuple[str, Path]] = {}  # (kind, value) → (run name, plain model it made)
        for stage in self.cfg.methods.values():
            method = stage.method
            for settings in stage.runs:
                parent: tuple[str, Path] | None = None
                if method.parent is not None:
                    parent = produced[(method.parent, stage.parent_value)]
                made = self._method(method, settings, stage.materialize, dense, parent)
                if not method.token_selection:
                    produced[(method.kind, method.variant_value(settings))] = (method.run_name(settings), made[0][2])
                variants += made
        dense_targets: dict[tuple[str, str], Path] = {}
        for name, kind, artifact in variants:
            self._deploy(name, kind, artifact, dense_targets)
        return self.stages

    def _baseline(self) -> Path:
        cfg, b = self.cfg, self.cfg.baseline
        target = self.out / "dense" / "model.safetensors"
        opts = {"model": cfg.model, "pretrained": cfg.pretrained, "checkpoint": cfg.checkpoint, "data": cfg.data,
                **to_dict(b)}
        inputs = [Path(p) for p in (cfg.checkpoint, cfg.model) if p and Path(p).is_file()]

        def run() -> dict[str, Any]:
            if b.epochs == 0:
                return self._import_model(target)
            folder = target.parent
            if cfg.distributed.nproc_per_node > 1:
                args = ["train", "--model", cfg.model, "--data", cfg.data, "--out", str(folder), *to_args(b)]
                if cfg.pretrained:
                    args.append("--pretrained")
                if cfg.checkpoint:
                    args += ["--checkpoint", cfg.checkpoint]
                if self._has_checkpoint(folder):
                    args.append("--resume")
                self._torchrun(args)
                return {"artifact": str(target)}
            from vitc.train.classifier import train_classifier

            return train_classifier(cfg.model, cfg.data, folder, b, pretrained=cfg.pretrained, checkpoint=cfg.checkpoint,
                                    resume=self._has_checkpoint(folder)) or {}

        self.add("dense/train", opts, inputs, [target], run)
        return target

    def _import_model(self, target: Path) -> dict[str, Any]:
        from vitc.core.artifacts import save_model
        from vitc.core.models import is_artifact_path, resolve_model
        from vitc.core.provenance import provenance

        cfg = self.cfg
        model, spec = resolve_model(cfg.model, pretrained=cfg.pretrained, checkpoint=cfg.checkpoint)
        if is_artifact_path(cfg.model) and spec.num_classes <= 0:
            raise UsageError(f"{cfg.model} has no classifier head")
        save_model(target, model, spec, meta={"source": cfg.model, "provenance": provenance("import", parent=cfg.model)})
        return {"artifact": str(target)}

    def _has_checkpoint(self, folder: Path) -> bool:
        return self.resume and folder.is_dir() and any(folder.rglob(CHECKPOINT_NAME))

    def _method(self, method: Any, settings: Any, ratios: list[float] | None, dense: Path,
                parent: tuple[str, Path] | None = None) -> list[tuple[str, str, Path]]:
        """The compress and materialize stages of one run; ``parent``: (run name, model) it builds on."""
        from vitc.methods import ratio_tag

        cfg = self.cfg
        parent_name, source = parent if parent is not None else (None, dense)
        run_name = method.run_name(settings, parent_name)
        folder = self.out / run_name
        compressed = folder / "compressed.safetensors"

        def run() -> dict[str, Any]:
            if cfg.distributed.nproc_per_node > 1:
                args = ["compress", method.kind, str(source), "--data", cfg.data, "--out", str(folder), *to_args(settings)]
                if self._has_checkpoint(folder):
                    args.append("--resume")
                self._torchrun(args)
                return {"artifact": str(compressed)}
            return method.compress(str(source), cfg.data, folder, settings, resume=self._has_checkpoint(folder)) or {}

        self.add(f"{run_name}/compress", {"data": cfg.data, **to_dict(settings)}, [source], [compressed], run)
        if method.token_selection:
            keep = ratios or [settings.keep_ratio]
            targets = [folder / f"materialized-keep{ratio_tag(r)}.safetensors" for r in keep]
            self.add(f"{run_name}/materialize", {"ratios": keep}, [compressed], targets,
                     lambda: self._materialize(compressed, folder, keep))
            return [(method.variant_name(settings, r, parent_name), method.kind, t) for r, t in zip(keep, targets)]
        target = folder / "materialized.safetensors"
        self.add(f"{run_name}/materialize", {}, [compressed], [target], lambda: self._materialize(compressed, target, None))
        return [(method.variant_name(settings, None), method.kind, target)]

    @staticmethod
    def _materialize(compressed: Path, out: Path, ratios: list[float] | None) -> dict[str, Any]:
        from vitc.methods import materialize

        return materialize(compressed, out, ratios)

    def _torchrun(self, args: list[str]) -> None:
        """Run a training CLI command under torchrun (multi-GPU); a failing rank fails the stage."""
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(self.cfg.distributed.nproc_per_node),
               "-m", "vitc"] + args
        proc = subprocess.run(cmd, check=False)
        if proc.returncode != 0:
            raise CheckFailed(f"torchrun exited with code {proc.returncode}: {' '.join(args[:2])}")

    # ---- deployment of one variant ---------------------------------------------------------
    def _deploy(self, variant: str, kind: str, artifact: Path, dense_targets: dict[tuple[str, str], Path]) -> None:
        cfg = self.cfg
        stem = artifact.with_suffix("")
        formats: list[tuple[str, str, Path]] = [("torch", "fp32", artifact)]
        onnx32 = Path(f"{stem}.onnx")
        self.add(f"{variant}/export", {"opset": cfg.export.opset}, [artifact], [onnx32],
                 lambda: _export(artifact, onnx32, cfg.export.opset, fp16=False))
        formats.append(("onnxruntime", "fp32", onnx32))
        if cfg.export.fp16:
            onnx16 = Path(f"{stem}.fp16.onnx")
            self.add(f"{variant}/export-fp16", {"opset": cfg.export.opset}, [artifact], [onnx16],
                     lambda: _export(artifact, onnx16, cfg.export.opset, fp16=True))
            formats.append(("onnxruntime", "fp16", onnx16))
        if cfg.export.int8:
            onnx8 = Path(f"{stem}.int8.onnx")
            qopts = {"samples": cfg.export.calib_samples, "method": cfg.export.calib_method, "data": cfg.data}
            self.add(f"{variant}/quantize", qopts, [onnx32], [onnx8],
                     lambda: _quantize(onnx32, cfg.data, onnx8, cfg.export.calib_samples, cfg.export.calib_method))
            formats.append(("onnxruntime", "int8", onnx8))
        if "tensorrt" in cfg.bench.backends and trt_available():
            for _, precision, onnx in list(formats[1:]):
                engine = onnx.with_suffix(".engine")
                self.add(f"{variant}/build-{precision}", {"batches": cfg.bench.batch_sizes}, [onnx], [engine],
                         partial(_build_engine, onnx, engine, cfg.bench.batch_sizes))
                formats.append(("tensorrt", precision, engine))

        verify_data = cfg.verify.data or cfg.data
        for backend, precision, path in formats:
            row = Row(variant, kind, artifact, backend, precision, path)
            if backend == "onnxruntime":
                row.verify = self.add(f"{variant}/verify-{precision}", to_dict(cfg.verify), [path, artifact], [],
                                      partial(_verify, path, artifact, verify_data, cfg.verify))
            row.eval = self.add(f"{variant}/eval-{backend}-{precision}", {"data": cfg.data, **to_dict(cfg.eval)}, [path], [],
                                partial(_eval, path, cfg.data, backend, cfg.eval.batch_size))
            if backend in cfg.bench.backends:
                settings = cfg.bench.settings(backend, precision if backend == "torch" else None)
                bopts = {**to_dict(cfg.bench), "backend": backend}
                if kind == "dense":
                    dense_targets[(backend, precision)] = path
                    row.bench = self.add(f"{variant}/bench-{backend}-{precision}", bopts, [path], [],
                                         partial(_bench, path, settings))
                else:
                    reference = dense_targets[(backend, precision)]
                    row.paired = True
                    row.bench = self.add(f"{variant}/bench-{backend}-{precision}", {**bopts, "paired_with": str(reference)},
                                         [reference, path], [],
                                         partial(_compare, reference, path, settings))
            self.rows.append(row)

    # ---- running --------------------------------------------------------------------------------
    def _load_state(self) -> None:
        path = self.out / STATE_NAME
        self.state = {}
        if self.resume and path.is_file():
            try:
                self.state = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                self.state = {}

    def would_skip(self, stage: Stage) -> bool:
        done = self.state.get(stage.name)
        if not (self.resume and done and all(p.exists() for p in stage.inputs + stage.outputs)):
            return False
        return bool(done.get("key") == stage_key(stage.options, stage.inputs))

    def dry_run(self) -> dict[str, Any]:
        """What ``vitc run`` would do: every stage, and which ``--resume`` would skip (nothing is written)."""
        stages = self.plan()
        self._load_state()
        total = len(stages)
        plan = []
        for k, stage in enumerate(stages, 1):
            action = "skip (unchanged)" if self.would_skip(stage) else "run"
            plan.append({"stage": k, "of": total, "name": stage.name, "action": action})
        return {"out": str(self.out), "resume": self.resume, "stages": plan,
                "would_run": sum(p["action"] == "run" for p in plan), "would_skip": sum(p["action"] != "run" for p in plan)}

    def execute(self) -> dict[str, Any]:
        stages = self.plan()
        self._load_state()
        total = len(stages)
        results: dict[str, dict[str, Any]] = {}
        t0 = time.perf_counter()
        for k, stage in enumerate(stages, 1):
            where = f"stage {k}/{total} {stage.name}"
            if self.would_skip(stage):
                log(f"[skip] {where} (unchanged)")
                self.skipped.append(stage.name)
                results[stage.name] = self.state[stage.name]["result"]
                continue
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
            self.state[stage.name] = {"key": stage_key(stage.options, stage.inputs), "result": results[stage.name],
                                      "seconds": round(time.perf_counter() - started, 2)}
            self.ran.append(stage.name)
            write_json(self.out / STATE_NAME, self.state)
        return self._report(results, time.perf_counter() - t0)

    def _report(self, results: dict[str, dict[str, Any]], seconds: float) -> dict[str, Any]:
        from vitc.core.artifacts import read_header
        from vitc.core.flops import model_macs
        from vitc.core.summary import count_params
        from vitc.pipeline.report import markdown_table, write_report

        cfg = self.cfg
        dense_spec = read_header(self.out / "dense" / "model.safetensors", verify=False)[0]
        dense_macs = model_macs(dense_spec)
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
            }
            if r.verify:
                v = results[r.verify]
                row["verify"] = "PASS" if v.get("passed") else "FAIL"
                row["verify_detail"] = v
                if not v.get("passed"):
                    failed.append(f"{r.variant} {r.format}: {v.get('summary', 'verification failed')}")
            ev = results[r.eval]
            row["top1"], row["top5"], row["top1_backend"] = ev["top1"], ev["top5"], f"{r.backend} {r.precision}"
            if r.bench:
                b = results[r.bench]
                row["throughput"] = b["throughput"]
                row["speedup"] = b.get("speedup", {})
                row["speedup_paired"] = r.paired
                row["bench"] = b.get("detail")
            rows.append(row)
        meta = {"model": cfg.model, "data": cfg.data, "seed": cfg.seed, "seconds": round(seconds, 1),
                "stages_run": len(self.ran), "stages_skipped": len(self.skipped)}
        files = write_report(self.out, rows, meta, environment())
        return {"report": files, "rows": rows, "table": markdown_table(rows), "meta": meta, "failed": failed,
                "stages_run": self.ran, "stages_skipped": self.skipped}


def _export(artifact: Path, out: Path, opset: int, fp16: bool) -> dict[str, Any]:
    from vitc.onnx.export import export_onnx

    return export_onnx(str(artifact), out, opset=opset, fp16=fp16)


def _quantize(onnx: Path, data: str, out: Path, samples: int, method: str) -> dict[str, Any]:
    from vitc.onnx.quantize import quantize_onnx

    return quantize_onnx(str(onnx), data, out, num_samples=samples, method=method)


def _verify(onnx: Path, artifact: Path, data: str, vcfg: Any) -> dict[str, Any]:
    from vitc.checks.verify import verify_onnx

    results, passed, failures = [], True, []
    for bs in vcfg.batch_sizes:
        for source in ("random", data):
            report = verify_onnx(str(onnx), str(artifact), data=source, batches=vcfg.batches, batch_size=bs)
            results.append({"batch_size": bs, "data": source, **report.to_dict()})
            if not report:
                passed = False
                failures.append(report.summary())
    return {"passed": passed, "checks": results, "summary": failures[0] if failures else "PASSED"}


def _eval(target: Path, data: str, backend: str, batch_size: int) -> dict[str, Any]:
    from vitc.checks.evaluate import evaluate_target

    return evaluate_target(str(target), data, backend=backend, batch_size=batch_size, device="auto")


def _build_engine(onnx: Path, engine: Path, batches: list[int]) -> dict[str, Any]:
    from vitc.backends.tensorrt.build import build_engine

    return build_engine(str(onnx), engine, min_batch=min(batches), opt_batch=max(batches), max_batch=max(batches))


def _bench(target: Path, settings: Any) -> dict[str, Any]:
    from vitc.checks.bench import bench_target

    result = bench_target(str(target), settings)
    return {"throughput": {str(r["batch"]): r["images_per_s"] for r in result["results"]}, "detail": result}


def _compare(reference: Path, target: Path, settings: Any) -> dict[str, Any]:
    """Bench ``target`` alternately with the dense model in the same format; its img/s and the paired speedup."""
    from vitc.checks.bench import compare_targets

    result = compare_targets(str(reference), str(target), settings)
    return {"throughput": {str(r["batch"]): r["b"]["images_per_s"] for r in result["results"]},
            "speedup": {str(r["batch"]): r["speedup"] for r in result["results"]}, "detail": result}


def prepare_out(out: Path, resume: bool, force: bool) -> None:
    """Refuse a folder that holds an earlier run unless ``resume`` (continue) or ``force`` (start over)."""
    check_output_dir(out)
    if resume and force:
        raise UsageError("--resume continues the run in DIR and --force starts it over; give one of them")
    entries = [p for p in out.iterdir() if p.name != LOCK_NAME] if out.is_dir() else []
    if not entries or resume:
        return
    if not force:
        raise UsageError(f"{out} already holds files (an earlier run?): add --resume to continue it, --force to start "
                         "over there, or choose another --out")
    (out / STATE_NAME).unlink(missing_ok=True)
    for ckpt in out.rglob(CHECKPOINT_NAME):
        ckpt.unlink()


def run_pipeline(cfg: PipelineConfig, out: str | Path | None = None, resume: bool = False, *, force: bool = False,
                 dry_run: bool = False) -> dict[str, Any]:
    """Plan and run the pipeline (or, with ``dry_run``, only say what would run)."""
    out_dir = Path(os.path.expanduser(str(out or cfg.out or "runs/pipeline")))
    pipeline = Pipeline(cfg, out_dir, resume)
    if dry_run:
        check_output_dir(out_dir)
        return pipeline.dry_run()
    _preflight(cfg)
    prepare_out(out_dir, resume, force)
    out_dir.mkdir(parents=True, exist_ok=True)
    with Lock(out_dir):
        write_json(out_dir / "pipeline.json", cfg.to_dict())
        return pipeline.execute()


def _preflight(cfg: PipelineConfig) -> None:
    """What can be checked before any work beyond the YAML itself: devices, data, backends."""
    from vitc.core.data import parse_data
    from vitc.core.device import pick_device

    pick_device(cfg.device)
    if cfg.bench.device != "auto":
        pick_device(cfg.bench.device)
    source = parse_data(cfg.data)
    if cfg.export.int8 and source.kind == "synthetic":
        raise UsageError(f"{cfg.source}: 'export.int8' needs real calibration images, and data {cfg.data} is random "
                         "noise; set export.int8: false or use real data")
    if cfg.verify.data is None and source.kind == "synthetic":
        log("warning: verifying on synthetic data (random images); set verify.data to real images for the "
            "token-selection top-1 check")
