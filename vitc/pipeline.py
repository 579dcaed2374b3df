"""``vitc run``: baseline → compress → materialize → export → verify → quantize → build → eval → bench → report.

Each stage writes into ``DIR/<variant>/`` and is recorded in ``DIR/stages.json`` with a key made of
its options and the size and modification time of its input files. With ``--resume`` a stage whose
key is unchanged and whose outputs exist is skipped; an interrupted training stage continues from
its own per-epoch checkpoint. A failed stage stops the run with ``stage NAME failed: ...`` and
leaves the results of earlier stages in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from vitc.errors import CheckFailed, UsageError, VitcError
from vitc.fileio import write_json
from vitc.pipeline_config import PipelineConfig
from vitc.progress import log

STATE_NAME = "stages.json"


class StageCache:
    """Records finished stages; decides what ``--resume`` may skip."""

    def __init__(self, out_dir: Path, resume: bool) -> None:
        self.path = out_dir / STATE_NAME
        self.resume = resume
        self.state: dict[str, Any] = {}
        if resume and self.path.is_file():
            try:
                self.state = json.loads(self.path.read_text())
            except json.JSONDecodeError:
                self.state = {}
        self.skipped: list[str] = []
        self.ran: list[str] = []

    @staticmethod
    def key(options: dict[str, Any], inputs: list[Path]) -> str:
        h = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode())
        for p in inputs:
            st = p.stat()
            h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]

    def run(self, name: str, options: dict[str, Any], inputs: list[Path], outputs: list[Path],
            fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        key = self.key(options, inputs)
        done = self.state.get(name)
        if self.resume and done and done.get("key") == key and all(p.exists() for p in outputs):
            log(f"[skip] {name} (unchanged)")
            self.skipped.append(name)
            return done["result"]
        log(f"[stage] {name}")
        t0 = time.perf_counter()
        try:
            result = fn()
        except VitcError as e:
            raise CheckFailed(f"stage {name} failed: {e}") from None
        missing = [str(p) for p in outputs if not p.exists()]
        if missing:
            raise CheckFailed(f"stage {name} failed: it did not produce {missing[0]}")
        result = dict(result or {})
        self.state[name] = {"key": key, "result": result, "seconds": round(time.perf_counter() - t0, 2)}
        self.ran.append(name)
        write_json(self.path, self.state)
        return result


def trt_available() -> bool:
    # not find_spec("tensorrt"): tensorrt-stubs installs a bare `tensorrt/` namespace that always "exists"
    from vitc.engines.trt_common import tensorrt_version

    return tensorrt_version() is not None


def _torchrun(cfg: PipelineConfig, args: list[str]) -> None:
    """Run a training CLI command under torchrun (multi-GPU); a failing rank fails the stage."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(cfg.distributed.nproc_per_node),
           "-m", "vitc"] + args
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        raise CheckFailed(f"torchrun exited with code {proc.returncode}: {' '.join(args[:2])}")


class Pipeline:
    def __init__(self, cfg: PipelineConfig, out_dir: Path, resume: bool) -> None:
        self.cfg, self.out, self.resume = cfg, out_dir, resume
        self.cache = StageCache(out_dir, resume)
        self.rows: list[dict[str, Any]] = []

    # ---- stages -------------------------------------------------------------------------------
    def baseline(self) -> Path:
        cfg, b = self.cfg, self.cfg.baseline
        target = self.out / "dense" / "model.safetensors"
        opts = {"model": cfg.model, "pretrained": cfg.pretrained, "checkpoint": cfg.checkpoint, "data": cfg.data,
                "seed": cfg.seed, **asdict(b)}
        inputs = [Path(p) for p in (cfg.checkpoint, cfg.model) if p and Path(p).is_file()]

        def run() -> dict[str, Any]:
            if b.epochs == 0:
                return self._import_model(target)
            if cfg.distributed.nproc_per_node > 1:
                args = ["train", "--model", cfg.model, "--data", cfg.data, "--out", str(target.parent),
                        "--epochs", str(b.epochs), "--batch-size", str(b.batch_size), "--lr", str(b.lr),
                        "--warmup-epochs", str(b.warmup_epochs), "--weight-decay", str(b.weight_decay), "--seed", str(cfg.seed)]
                if cfg.pretrained:
                    args.append("--pretrained")
                if cfg.checkpoint:
                    args += ["--checkpoint", cfg.checkpoint]
                if self._has_checkpoint(target.parent):
                    args.append("--resume")
                _torchrun(cfg, args)
                return {"artifact": str(target)}
            from vitc.training import train_classifier

            return train_classifier(
                cfg.model, cfg.data, target.parent, pretrained=cfg.pretrained, checkpoint=cfg.checkpoint,
                resume=self._has_checkpoint(target.parent), epochs=b.epochs, batch_size=b.batch_size, lr=b.lr,
                warmup_epochs=b.warmup_epochs, weight_decay=b.weight_decay, seed=cfg.seed, device=cfg.device,
            ) or {}

        self.cache.run("dense/train", opts, inputs, [target], run)
        return target

    def _import_model(self, target: Path) -> dict[str, Any]:
        from vitc.artifacts import save_model
        from vitc.models.registry import is_artifact_path, resolve_model

        cfg = self.cfg
        model, spec = resolve_model(cfg.model, pretrained=cfg.pretrained, checkpoint=cfg.checkpoint)
        if is_artifact_path(cfg.model) and spec.num_classes <= 0:
            raise UsageError(f"{cfg.model} has no classifier head")
        save_model(target, model, spec, meta={"source": cfg.model})
        return {"artifact": str(target)}

    @staticmethod
    def _has_checkpoint(folder: Path) -> bool:
        return any(folder.rglob("checkpoint.pt")) if folder.is_dir() else False

    def uvc(self, dense: Path, budget: float) -> Path:
        cfg, u = self.cfg, self.cfg.uvc
        assert u is not None
        folder = self.out / f"uvc-{budget:.2f}"
        compressed = folder / "compressed.safetensors"
        opts: dict[str, Any] = {"budget": budget, "data": cfg.data, "seed": cfg.seed, **asdict(u)}
        kwargs = {k: v for k, v in (("epochs", u.epochs), ("finetune_epochs", u.finetune_epochs),
                                    ("batch_size", u.batch_size), ("lr", u.lr)) if v is not None}
        kwargs.update(u.options)

        def run() -> dict[str, Any]:
            if cfg.distributed.nproc_per_node > 1:
                args = ["compress", "uvc", str(dense), "--data", cfg.data, "--budget", str(budget), "--out", str(folder),
                        "--seed", str(cfg.seed)] + _cli_args(kwargs)
                if self._has_checkpoint(folder):
                    args.append("--resume")
                _torchrun(cfg, args)
                return {"artifact": str(compressed)}
            from vitc.compress.uvc import compress_uvc

            return compress_uvc(str(dense), cfg.data, folder, budget=budget, seed=cfg.seed, device=cfg.device,
                                resume=self._has_checkpoint(folder), **kwargs) or {}

        self.cache.run(f"uvc-{budget:.2f}/compress", opts, [dense], [compressed], run)
        target = folder / "materialized.safetensors"
        self.cache.run(f"uvc-{budget:.2f}/materialize", {}, [compressed], [target], lambda: self._materialize(compressed, target, None))
        return target

    def dynamicvit(self, dense: Path) -> list[tuple[float, Path]]:
        from vitc.materialize import ratio_filename

        cfg, d = self.cfg, self.cfg.dynamicvit
        assert d is not None
        folder = self.out / f"dynamicvit-{d.keep_ratio:.2f}"
        compressed = folder / "compressed.safetensors"
        opts: dict[str, Any] = {"data": cfg.data, "seed": cfg.seed, **asdict(d)}
        kwargs = {k: v for k, v in (("epochs", d.epochs), ("batch_size", d.batch_size), ("lr", d.lr), ("stages", d.stages))
                  if v is not None}
        kwargs.update(d.options)

        def run() -> dict[str, Any]:
            if cfg.distributed.nproc_per_node > 1:
                args = ["compress", "dynamicvit", str(dense), "--data", cfg.data, "--keep-ratio", str(d.keep_ratio),
                        "--out", str(folder), "--seed", str(cfg.seed)] + _cli_args(kwargs)
                if self._has_checkpoint(folder):
                    args.append("--resume")
                _torchrun(cfg, args)
                return {"artifact": str(compressed)}
            from vitc.compress.dynamicvit import compress_dynamicvit

            return compress_dynamicvit(str(dense), cfg.data, folder, keep_ratio=d.keep_ratio, seed=cfg.seed,
                                       device=cfg.device, resume=self._has_checkpoint(folder), **kwargs) or {}

        self.cache.run(f"dynamicvit-{d.keep_ratio:.2f}/compress", opts, [dense], [compressed], run)
        targets = [(r, folder / ratio_filename(r)) for r in d.materialize]
        self.cache.run(f"dynamicvit-{d.keep_ratio:.2f}/materialize", {"ratios": d.materialize}, [compressed],
                       [t for _, t in targets], lambda: self._materialize(compressed, folder, d.materialize))
        return targets

    @staticmethod
    def _materialize(compressed: Path, out: Path, ratios: list[float] | None) -> dict[str, Any]:
        from vitc.materialize import materialize

        return materialize(compressed, out, ratios)

    # ---- deployment of one variant ---------------------------------------------------------
    def deploy(self, variant: str, method: str, artifact: Path, dense_macs: int) -> None:
        from vitc.artifacts import read_header
        from vitc.models.flops import model_macs
        from vitc.models.summary import count_params

        cfg = self.cfg
        spec, _, _ = read_header(artifact)
        base = {"variant": variant, "method": method, "params": count_params(spec), "macs": model_macs(spec),
                "macs_ratio": model_macs(spec) / dense_macs, "artifact": str(artifact)}
        stem = artifact.with_suffix("")
        formats: list[tuple[str, str, Path | None]] = [("torch", "fp32", None)]
        onnx32 = Path(f"{stem}.onnx")
        self.cache.run(f"{variant}/export", {"opset": cfg.export.opset}, [artifact], [onnx32],
                       lambda: _export(artifact, onnx32, cfg.export.opset, fp16=False))
        formats.append(("onnxruntime", "fp32", onnx32))
        if cfg.export.fp16:
            onnx16 = Path(f"{stem}.fp16.onnx")
            self.cache.run(f"{variant}/export-fp16", {"opset": cfg.export.opset}, [artifact], [onnx16],
                           lambda: _export(artifact, onnx16, cfg.export.opset, fp16=True))
            formats.append(("onnxruntime", "fp16", onnx16))
        if cfg.export.int8:
            onnx8 = Path(f"{stem}.int8.onnx")
            qopts = {"samples": cfg.export.calib_samples, "method": cfg.export.calib_method, "data": cfg.data}
            self.cache.run(f"{variant}/quantize", qopts, [onnx32], [onnx8],
                           lambda: _quantize(onnx32, cfg.data, onnx8, cfg.export.calib_samples, cfg.export.calib_method))
            formats.append(("onnxruntime", "int8", onnx8))
        if "tensorrt" in cfg.bench.backends and trt_available():
            for _, precision, onnx in list(formats[1:]):
                assert onnx is not None
                engine = onnx.with_suffix(".engine")
                self.cache.run(f"{variant}/build-{precision}", {"batches": cfg.bench.batch_sizes}, [onnx], [engine],
                               lambda onnx=onnx, engine=engine: _build_engine(onnx, engine, cfg.bench.batch_sizes))
                formats.append(("tensorrt", precision, engine))

        verify_data = cfg.verify.data or cfg.data
        for backend, precision, path in formats:
            row = {**base, "backend": backend, "precision": precision,
                   "format": "pytorch" if path is None else (f"onnx {precision}" if backend == "onnxruntime" else f"trt {precision}")}
            target = path or artifact
            if backend == "onnxruntime":
                assert path is not None
                v = self.cache.run(f"{variant}/verify-{precision}", asdict(cfg.verify), [path, artifact], [],
                                   lambda path=path: _verify(path, artifact, verify_data, cfg.verify))
                row["verify"] = "PASS" if v.get("passed") else "FAIL"
                row["verify_detail"] = v
            ev = self.cache.run(f"{variant}/eval-{backend}-{precision}", {"data": cfg.data, **asdict(cfg.eval)}, [target], [],
                                lambda target=target, backend=backend: _eval(target, cfg.data, backend, cfg.eval.batch_size))
            row["top1"], row["top5"], row["top1_backend"] = ev["top1"], ev["top5"], f"{backend} {precision}"
            if backend in cfg.bench.backends:
                bopts = {**asdict(cfg.bench), "backend": backend}
                bench = self.cache.run(f"{variant}/bench-{backend}-{precision}", bopts, [target], [],
                                       lambda target=target, backend=backend, precision=precision: _bench(target, backend, precision, cfg))
                row["throughput"] = bench["throughput"]
                row["bench"] = bench.get("detail")
            self.rows.append(row)

    # ---- whole run ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        from vitc.artifacts import read_header
        from vitc.models.flops import model_macs
        from vitc.report import markdown_table, write_report

        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / "pipeline.json", cfg.to_dict())
        t0 = time.perf_counter()
        dense = self.baseline()
        dense_spec, _, _ = read_header(dense)
        dense_macs = model_macs(dense_spec)
        variants: list[tuple[str, str, Path]] = [("dense", "dense", dense)]
        if cfg.uvc is not None:
            for budget in cfg.uvc.budgets:
                variants.append((f"uvc-{budget:.2f}", "uvc", self.uvc(dense, budget)))
        if cfg.dynamicvit is not None:
            for ratio, path in self.dynamicvit(dense):
                variants.append((f"dynamicvit-keep{ratio:.2f}", "dynamicvit", path))
        for name, method, path in variants:
            self.deploy(name, method, path, dense_macs)
        meta = {"model": cfg.model, "data": cfg.data, "seed": cfg.seed, "seconds": round(time.perf_counter() - t0, 1),
                "stages_run": len(self.cache.ran), "stages_skipped": len(self.cache.skipped)}
        files = write_report(self.out, self.rows, meta, environment())
        return {"report": files, "rows": self.rows, "table": markdown_table(self.rows), "meta": meta,
                "stages_run": self.cache.ran, "stages_skipped": self.cache.skipped}


def _cli_args(kwargs: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for k, v in kwargs.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            if v:
                args.append(flag)
        elif isinstance(v, list):
            args += [flag, ",".join(map(str, v))]
        else:
            args += [flag, str(v)]
    return args


def _export(artifact: Path, out: Path, opset: int, fp16: bool) -> dict[str, Any]:
    from vitc.export import export_onnx

    return export_onnx(str(artifact), out, opset=opset, fp16=fp16, verify=False)


def _quantize(onnx: Path, data: str, out: Path, samples: int, method: str) -> dict[str, Any]:
    from vitc.calibration import quantize_onnx

    return quantize_onnx(str(onnx), data, out, num_samples=samples, method=method)


def _verify(onnx: Path, artifact: Path, data: str, vcfg: Any) -> dict[str, Any]:
    from vitc.export import verify_onnx

    results, passed = [], True
    for bs in vcfg.batch_sizes:
        for source in ("random", data):
            report = verify_onnx(str(onnx), str(artifact), data=source, batches=vcfg.batches, batch_size=bs)
            results.append({"batch_size": bs, "data": source, **report.to_dict()})
            passed = passed and bool(report)
    return {"passed": passed, "checks": results}


def _eval(target: Path, data: str, backend: str, batch_size: int) -> dict[str, Any]:
    from vitc.engines.evaluate import evaluate_target

    return evaluate_target(str(target), data, backend=backend, batch_size=batch_size, device="auto")


def _build_engine(onnx: Path, engine: Path, batches: list[int]) -> dict[str, Any]:
    from vitc.engines.trt_build import build_engine

    return build_engine(str(onnx), engine, min_batch=min(batches), opt_batch=max(batches), max_batch=max(batches))


def _bench(target: Path, backend: str, precision: str, cfg: PipelineConfig) -> dict[str, Any]:
    from vitc.engines.bench import bench_target

    b = cfg.bench
    result = bench_target(str(target), backend=backend, device=b.device, batch_sizes=b.batch_sizes,
                          precision=precision if backend == "torch" else None,
                          warmup_ms=b.warmup_ms, min_iters=b.min_iters, min_seconds=b.min_seconds)
    throughput = {str(r["batch"]): r["images_per_s"] for r in result["results"]}
    return {"throughput": throughput, "detail": result}


def environment() -> dict[str, Any]:
    import onnxruntime
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
           "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def run_pipeline(cfg: PipelineConfig, out: str | Path | None, resume: bool) -> dict[str, Any]:
    out_dir = Path(out or cfg.out or "runs/pipeline")
    return Pipeline(cfg, out_dir, resume).run()
