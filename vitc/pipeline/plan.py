"""What a ``vitc run`` does, stage by stage, from its config (nothing runs here).

Stages: data subset (``subset``) → baseline → per method run: compress, materialize → per variant:
export (fp32, fp16), quantize (int8), build (TensorRT, where installed), verify, eval through every
deployed backend, bench (paired with the dense model in the same format unless ``bench.paired: false``).
Each stage names its options, input files and output files — what :mod:`vitc.pipeline.state` keys it by.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from vitc.backends import BACKENDS
from vitc.checks.environment import trt_available
from vitc.core.errors import CheckFailed, UsageError
from vitc.core.settings import to_args, to_dict
from vitc.methods import ratio_tag
from vitc.pipeline.config import MethodStage, PipelineConfig
from vitc.pipeline.state import Stage, has_checkpoint

DENSE = "dense"
SUBSET_FOLDER = "data-subset"
ONNX_BACKENDS = tuple(b.name for b in BACKENDS.values() if ".onnx" in b.suffixes)  # backends that run the ONNX files
VERIFY_BACKEND = "onnxruntime"  # every exported ONNX is verified (and evaluated) through ONNX Runtime


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

    @property
    def format(self) -> str:
        if self.backend == "torch":
            return "pytorch"
        if self.backend == VERIFY_BACKEND:
            return f"onnx {self.precision}"
        return f"{'trt' if self.backend == 'tensorrt' else self.backend} {self.precision}"


@dataclass
class Variant:
    name: str
    kind: str
    artifact: Path


class Plan:
    """The stages and report rows of one run of ``cfg`` in ``out`` (``resume``: training stages continue
    from their checkpoints)."""

    def __init__(self, cfg: PipelineConfig, out: Path, resume: bool = False) -> None:
        self.cfg, self.out, self.resume = cfg, out, resume
        self.stages: list[Stage] = []
        self.rows: list[Row] = []
        self.variants: list[Variant] = []
        self.data = f"fashion-mnist:{out / SUBSET_FOLDER}" if cfg.subset.active else cfg.data

    @property
    def dense_artifact(self) -> Path:
        return self.out / DENSE / "model.safetensors"

    def add(self, name: str, options: dict[str, Any], inputs: list[Path], outputs: list[Path],
            fn: Any, checkpoints: Path | None = None) -> str:
        if any(s.name == name for s in self.stages):
            raise UsageError(f"{self.cfg.source}: two stages are named {name!r}; give the runs distinct values or names")
        self.stages.append(Stage(name, options, inputs, outputs, fn, checkpoints))
        return name

    def build(self) -> list[Stage]:
        """Every stage of the run, in order."""
        self.stages, self.rows, self.variants = [], [], []
        if self.cfg.subset.active:
            self._subset()
        dense = self._baseline()
        self.variants.append(Variant(DENSE, DENSE, dense))
        produced: dict[tuple[str, Any], tuple[str, Path]] = {}  # (kind, value) → (run name, plain model it made)
        for stage in self.cfg.methods.values():
            method = stage.method
            for i, settings in enumerate(stage.runs):
                parent: tuple[str, Path] | None = None
                if method.parent is not None:
                    parent = produced[(method.parent, stage.parent_value)]
                made = self._method(stage, i, settings, dense, parent)
                if not method.token_selection:
                    produced[(method.kind, method.variant_value(settings))] = (method.run_name(settings), made[0].artifact)
                self.variants += made
        dense_targets: dict[tuple[str, str], Path] = {}
        for v in self.variants:
            self._deploy(v, dense_targets)
        return self.stages

    # ---- data and baseline ----------------------------------------------------------------------
    def _subset(self) -> None:
        from vitc.core.data import FASHION_MNIST_FILES, fashion_mnist_files, parse_data

        source = parse_data(self.cfg.data)
        assert source.path is not None
        inputs = [p for split in ("train", "val") for p in fashion_mnist_files(source.path, split)]
        folder = self.out / SUBSET_FOLDER
        outputs = [folder / f"{stem}.gz" for split in ("train", "val") for stem in FASHION_MNIST_FILES[split]]
        sub = self.cfg.subset
        self.add("data/subset", {"data": self.cfg.data, **to_dict(sub)}, inputs, outputs,
                 partial(write_subset, source.path, folder, sub.train, sub.val))

    def _baseline(self) -> Path:
        cfg, b = self.cfg, self.cfg.baseline
        target = self.dense_artifact
        opts = {"model": cfg.model, "pretrained": cfg.pretrained, "checkpoint": cfg.checkpoint, "data": self.data,
                **to_dict(b)}
        inputs = [Path(p) for p in (cfg.checkpoint, cfg.model) if p and Path(p).is_file()]
        data = self.data

        def run() -> dict[str, Any]:
            if b.epochs == 0:
                return self._import_model(target)
            folder = target.parent
            if cfg.distributed.nproc_per_node > 1:
                args = ["train", "--model", cfg.model, "--data", data, "--out", str(folder), *to_args(b)]
                if cfg.pretrained:
                    args.append("--pretrained")
                if cfg.checkpoint:
                    args += ["--checkpoint", cfg.checkpoint]
                if has_checkpoint(folder, self.resume):
                    args.append("--resume")
                self._torchrun(args)
                return {"artifact": str(target)}
            from vitc.train.classifier import train_classifier

            return train_classifier(cfg.model, data, folder, b, pretrained=cfg.pretrained, checkpoint=cfg.checkpoint,
                                    resume=has_checkpoint(folder, self.resume)) or {}

        self.add(f"{DENSE}/train", opts, inputs, [target], run, checkpoints=target.parent)
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

    # ---- one run of a method --------------------------------------------------------------------
    def _method(self, stage: MethodStage, i: int, settings: Any, dense: Path,
                parent: tuple[str, Path] | None = None) -> list[Variant]:
        """The compress and materialize stages of run ``i`` of ``stage``; ``parent``: (run name, model) it builds on."""
        cfg, method = self.cfg, stage.method
        parent_name, source = parent if parent is not None else (None, dense)
        suffix = f"-{stage.name_of(i)}" if stage.name_of(i) else ""
        inputs = [source]
        if stage.teacher_is_dense(i):
            settings = dataclasses.replace(settings, teacher=str(dense))  # validated when the stage runs (the file exists then)
            if dense != source:
                inputs.append(dense)
        run_name = method.run_name(settings, parent_name) + suffix
        folder = self.out / run_name
        compressed = folder / "compressed.safetensors"
        data = self.data

        def run() -> dict[str, Any]:
            if cfg.distributed.nproc_per_node > 1:
                args = ["compress", method.kind, str(source), "--data", data, "--out", str(folder), *to_args(settings)]
                if has_checkpoint(folder, self.resume):
                    args.append("--resume")
                self._torchrun(args)
                return {"artifact": str(compressed)}
            return method.compress(str(source), data, folder, settings, resume=has_checkpoint(folder, self.resume)) or {}

        self.add(f"{run_name}/compress", {"data": data, **to_dict(settings)}, inputs, [compressed], run, checkpoints=folder)
        if method.token_selection:
            keep = stage.ratios_of(i) or [settings.rho]
            targets = [folder / f"materialized-keep{ratio_tag(r)}.safetensors" for r in keep]
            self.add(f"{run_name}/materialize", {"ratios": keep}, [compressed], targets,
                     partial(_materialize, compressed, folder, keep))
            return [Variant(method.variant_name(settings, r, parent_name) + suffix, method.kind, t)
                    for r, t in zip(keep, targets)]
        target = folder / "materialized.safetensors"
        self.add(f"{run_name}/materialize", {}, [compressed], [target], partial(_materialize, compressed, target, None))
        return [Variant(method.variant_name(settings, None) + suffix, method.kind, target)]

    def _torchrun(self, args: list[str]) -> None:
        """Run a training CLI command under torchrun (multi-GPU); a failing rank fails the stage."""
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(self.cfg.distributed.nproc_per_node),
               "-m", "vitc"] + args
        proc = subprocess.run(cmd, check=False)
        if proc.returncode != 0:
            raise CheckFailed(f"torchrun exited with code {proc.returncode}: {' '.join(args[:2])}")

    # ---- deployment of one variant --------------------------------------------------------------
    def _deploy(self, v: Variant, dense_targets: dict[tuple[str, str], Path]) -> None:
        cfg, data = self.cfg, self.data
        variant, artifact = v.name, v.artifact
        stem = artifact.with_suffix("")
        onnx_files: list[tuple[str, Path]] = []
        onnx32 = Path(f"{stem}.onnx")
        self.add(f"{variant}/export", {"opset": cfg.export.opset}, [artifact], [onnx32],
                 partial(_export, artifact, onnx32, cfg.export.opset, False))
        onnx_files.append(("fp32", onnx32))
        if cfg.export.fp16:
            onnx16 = Path(f"{stem}.fp16.onnx")
            self.add(f"{variant}/export-fp16", {"opset": cfg.export.opset}, [artifact], [onnx16],
                     partial(_export, artifact, onnx16, cfg.export.opset, True))
            onnx_files.append(("fp16", onnx16))
        if cfg.export.int8:
            onnx8 = Path(f"{stem}.int8.onnx")
            qopts = {"samples": cfg.export.calib_samples, "method": cfg.export.calib_method, "data": data}
            self.add(f"{variant}/quantize", qopts, [onnx32], [onnx8],
                     partial(_quantize, onnx32, data, onnx8, cfg.export.calib_samples, cfg.export.calib_method))
            onnx_files.append(("int8", onnx8))
        formats: list[tuple[str, str, Path]] = [("torch", "fp32", artifact)]
        for backend in ONNX_BACKENDS:  # ONNX Runtime always (it verifies); others where bench.backends lists them
            if backend == VERIFY_BACKEND or backend in cfg.bench.backends:
                formats += [(backend, precision, path) for precision, path in onnx_files]
        if "tensorrt" in cfg.bench.backends and trt_available():
            for precision, onnx in onnx_files:
                engine = onnx.with_suffix(".engine")
                self.add(f"{variant}/build-{precision}", {"batches": cfg.bench.batch_sizes}, [onnx], [engine],
                         partial(_build_engine, onnx, engine, cfg.bench.batch_sizes))
                formats.append(("tensorrt", precision, engine))

        verify_data = cfg.verify.data or data
        for backend, precision, path in formats:
            row = Row(variant, v.kind, artifact, backend, precision, path)
            if backend == VERIFY_BACKEND:
                row.verify = self.add(f"{variant}/verify-{precision}", to_dict(cfg.verify), [path, artifact], [],
                                      partial(_verify, path, artifact, verify_data, cfg.verify))
            row.eval = self.add(f"{variant}/eval-{backend}-{precision}", {"data": data, **to_dict(cfg.eval)}, [path], [],
                                partial(_eval, path, data, backend, cfg.eval.batch_size))
            if backend in cfg.bench.backends:
                settings = cfg.bench.settings(backend, precision if backend == "torch" else None)
                bopts = {**to_dict(cfg.bench), "backend": backend}
                name = f"{variant}/bench-{backend}-{precision}"
                if v.kind == DENSE:
                    dense_targets[(backend, precision)] = path
                if v.kind == DENSE or not cfg.bench.paired:
                    row.bench = self.add(name, bopts, [path], [], partial(_bench, path, settings))
                else:
                    reference = dense_targets[(backend, precision)]
                    row.paired = True
                    row.bench = self.add(name, {**bopts, "paired_with": str(reference)}, [reference, path], [],
                                         partial(_compare, reference, path, settings))
            self.rows.append(row)


# ---- what the stages call (the library's step functions) -------------------------------------------


def write_subset(folder: Path, out: Path, train: int | None, val: int | None) -> dict[str, Any]:
    """The first ``train``/``val`` images of each Fashion-MNIST split, as IDX files in ``out``."""
    from vitc.core.data import FASHION_MNIST_FILES, read_fashion_mnist
    from vitc.core.idx import write_idx

    counts = {}
    for split, n in (("train", train), ("val", val)):
        images, labels = read_fashion_mnist(folder, split)
        n = len(labels) if n is None else min(n, len(labels))
        images_stem, labels_stem = FASHION_MNIST_FILES[split]
        write_idx(out / f"{images_stem}.gz", images[:n].numpy())
        write_idx(out / f"{labels_stem}.gz", labels[:n].numpy().astype("uint8"))
        counts[split] = n
    return {"data": f"fashion-mnist:{out}", "images": counts}


def _materialize(compressed: Path, out: Path, ratios: list[float] | None) -> dict[str, Any]:
    from vitc.methods import materialize

    return materialize(compressed, out, ratios)


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

