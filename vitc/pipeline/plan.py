"""What a ``vitc run`` does, stage by stage, from its config (nothing runs here).

Stages: data subset (``subset``) → baseline → per method run: compress, materialize → per variant:
export (fp32, fp16), quantize (int8), build (TensorRT, where installed), verify, eval through every
deployed backend, bench (paired with the dense model in the same format unless ``bench.paired: false``).
Each stage names its options, input files and output files — what :mod:`vitc.core.runs` keys it by.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from vitc.backends import ARTIFACT, BACKENDS, DEFAULT_BACKEND, REFERENCE_BACKEND
from vitc.core.errors import CheckFailed, UsageError
from vitc.core.runs import Stage, has_checkpoint
from vitc.core.settings import to_args, to_dict
from vitc.methods import ratio_tag
from vitc.pipeline.config import PipelineConfig
from vitc.pipeline.runs import MethodStage

DENSE = "dense"
SUBSET_FOLDER = "data-subset"


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
        return BACKENDS[self.backend].format_label(self.precision)


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
        self.tuned: str | None = None  # the tune stage, whose result is one more report row
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
        self.stages, self.rows, self.variants, self.tuned = [], [], [], None
        if self.cfg.subset.active:
            self._subset()
        dense = self._baseline()
        self.variants.append(Variant(DENSE, DENSE, dense))
        produced: dict[tuple[str, Any], tuple[str, Path]] = {}  # (kind, value) → (run name, plain model it made)
        for stage in self.cfg.methods.values():
            method = stage.method
            for i, run in enumerate(stage.runs):
                settings = run.settings
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
        if self.cfg.tune is not None:
            self.tuned = self._tune(dense)
        return self.stages

    def _tune(self, dense: Path) -> str:
        """`vitc tune` on the dense model, into OUT/tune (it journals its own steps: a stopped run continues there)."""
        from vitc.tune.settings import TuneSettings

        cfg, data = self.cfg, self.data
        assert cfg.tune is not None
        settings = TuneSettings(**{f.name: getattr(cfg.tune, f.name) for f in dataclasses.fields(TuneSettings)})
        folder = self.out / "tune"

        def run() -> dict[str, Any]:
            from vitc.tune import tune

            resume = (folder / "tune.json").is_file()
            return tune(str(dense), data, folder, settings, resume=resume, force=not resume).to_dict()

        return self.add(f"tune-x{ratio_tag(settings.target_speedup)}/tune", {"data": data, **to_dict(settings)}, [dense],
                        [folder / "report.json"], run, checkpoints=folder)

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
        suffix = f"-{stage.runs[i].name}" if stage.runs[i].name else ""
        inputs = [source]
        if stage.runs[i].dense_teacher:
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
        if method.token_selection and settings.target_speedup is not None and not stage.ratios_of(i):
            # a speed target: deployed at the keep ratio its compress step picks (known only then), as trained
            target = folder / "materialized.safetensors"
            self.add(f"{run_name}/materialize", {}, [compressed], [target], partial(_materialize, compressed, target, None))
            return [Variant(method.variant_name(settings, None, parent_name) + suffix, method.kind, target)]
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
    def deploy_settings(self) -> Any:
        """How every file of the run is made: the export, quantize and build sections (TensorRT's batch range from
        the bench's batch sizes unless 'build.tensorrt' sets it)."""
        from vitc.backends.deploy import DeploySettings
        from vitc.onnx.settings import ExportSettings, QuantizeSettings

        cfg = self.cfg
        export = ExportSettings(**{f.name: getattr(cfg.export, f.name) for f in dataclasses.fields(ExportSettings)})
        export = dataclasses.replace(export, verify=False, fp16=False, keep_ratio=None)
        q = {f.name: getattr(cfg.quantize, f.name) for f in dataclasses.fields(QuantizeSettings)}
        quantize = QuantizeSettings(**{**q, "data": cfg.quantize.data or self.data})
        build = dict(cfg.build)
        batches = cfg.bench.batch_sizes
        for name, b in BACKENDS.items():
            if b.builder and name not in build and "min_batch" in {f.name for f in dataclasses.fields(b.build_settings_class())}:
                build[name] = b.build_settings_class()(min_batch=min(batches), opt_batch=max(batches), max_batch=max(batches))
        return DeploySettings(export=export, quantize=quantize, build=build)

    def formats(self) -> list[tuple[str, str]]:
        """(backend, precision) of every file a variant is deployed to: the model itself (evaluated always) and the
        reference backend's files (it verifies every ONNX) always, the others where 'deploy.backends' lists them and
        they can run here. Only the backends 'deploy.backends' lists are benched."""
        cfg, out = self.cfg, []
        device = cfg.bench.device
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        for name, b in BACKENDS.items():
            if name not in (REFERENCE_BACKEND, DEFAULT_BACKEND) and (name not in cfg.deploy.backends or b.unavailable() is not None):
                continue
            precisions = [p for p in cfg.deploy.precisions if b.runs_at(p, device if b.reads == ARTIFACT else "cpu")]
            if b.reads == ARTIFACT:  # a model computes in fp32 always; fp16 too on a GPU (bf16 where listed)
                precisions = [b.precisions[0], *(p for p in precisions if p != b.precisions[0])]
            out += [(name, p) for p in precisions]
        return out

    def _deploy(self, v: Variant, dense_targets: dict[tuple[str, str], Path]) -> None:
        from vitc.backends.deploy import deploy_steps, deployed_path

        cfg, data = self.cfg, self.data
        variant, artifact = v.name, v.artifact
        settings = self.deploy_settings()
        made: set[str] = set()
        formats = self.formats()
        for backend, precision in formats:
            for step in deploy_steps(artifact, backend, precision, settings):
                if step.name not in made:
                    self.add(f"{variant}/{step.name}", step.options, step.inputs, [step.output], step.run)
                    made.add(step.name)
        verify_data = cfg.verify.data or data
        for backend, precision in formats:
            path = deployed_path(artifact, backend, precision)
            row = Row(variant, v.kind, artifact, backend, precision, path)
            if backend == REFERENCE_BACKEND:
                row.verify = self.add(f"{variant}/verify-{precision}", to_dict(cfg.verify), [path, artifact], [],
                                      partial(_verify, path, artifact, verify_data, cfg.verify))
            row.eval = self.add(f"{variant}/eval-{backend}-{precision}", {"data": data, **to_dict(cfg.eval)}, [path], [],
                                partial(_eval, path, data, backend, cfg.eval))
            if backend in cfg.deploy.backends:
                settings_ = cfg.bench.settings(backend, precision if BACKENDS[backend].reads == ARTIFACT else None)
                bopts = {**to_dict(cfg.bench), "backend": backend}
                name = f"{variant}/bench-{backend}-{precision}"
                if v.kind == DENSE:
                    dense_targets[(backend, precision)] = path
                if v.kind == DENSE or not cfg.bench.paired:
                    row.bench = self.add(name, bopts, [path], [], partial(_bench, [path], settings_))
                else:
                    reference = dense_targets[(backend, precision)]
                    row.paired = True
                    row.bench = self.add(name, {**bopts, "paired_with": str(reference)}, [reference, path], [],
                                         partial(_bench, [reference, path], settings_))
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


def _verify(onnx: Path, artifact: Path, data: str, vcfg: Any) -> dict[str, Any]:
    from vitc.checks.verify import verify_onnx

    results, passed, failures = [], True, []
    options = {k: getattr(vcfg, k) for k in ("batches", "atol", "rtol", "stat", "seed", "device", "backend")}
    for bs in vcfg.batch_sizes:
        for source in ("random", data):
            report = verify_onnx(str(onnx), str(artifact), data=source, batch_size=bs, **options)
            results.append({"batch_size": bs, "data": source, **report.to_dict()})
            if not report:
                passed = False
                failures.append(report.summary())
    return {"passed": passed, "checks": results, "summary": failures[0] if failures else "PASSED"}


def _eval(target: Path, data: str, backend: str, ecfg: Any) -> dict[str, Any]:
    from vitc.checks.evaluate import evaluate_target

    return evaluate_target(str(target), data, backend=backend, batch_size=ecfg.batch_size, device=ecfg.device,
                           split=ecfg.split).to_dict()


def _bench(targets: list[Path], settings: Any) -> dict[str, Any]:
    """Bench the deployed file (alone, or after the dense model in the same format: the paired protocol); its
    images/s and, paired, its speedup per batch size."""
    from vitc.checks.bench import bench_targets

    result = bench_targets([str(t) for t in targets], settings)
    rows = [result.row(len(targets) - 1, r.batch) for r in result.results]
    out: dict[str, Any] = {"throughput": {str(r.batch): r.images_per_s for r in rows}, "detail": result.to_dict()}
    if len(targets) > 1:
        out["speedup"] = {str(r.batch): r.speedup for r in rows}
    return out
