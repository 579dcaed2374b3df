"""vitc's Python API: each step as a function, with the same settings dataclass and the same result as its command.

    import vitc

    vitc.export("runs/uvc/materialized.safetensors", "uvc.onnx")
    report = vitc.verify("uvc.onnx", "runs/uvc/materialized.safetensors", data="digits")
    result = vitc.bench("dense.onnx", "uvc.onnx", batch_sizes=[32])
    print(result.row("uvc.onnx", 32).speedup_paired)

Every function takes its step's settings object (``settings=``) and/or its fields as keyword arguments (the
command's options with ``_`` for ``-``), validated exactly as the command validates them: a bad value raises
:class:`vitc.core.errors.UsageError` with the message the command prints. Results are the commands' ``--json``
documents: typed where the command's is (:class:`~vitc.checks.verify.VerifyReport`,
:class:`~vitc.checks.evaluate.EvalResult`, :class:`~vitc.checks.bench.BenchResult`,
:class:`~vitc.core.latency.LatencyModel`; each has ``to_dict()``), a dict otherwise. Nothing here imports torch
until a function is called, and ``import vitc`` stays light (the names resolve on first use).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vitc.checks.bench import BenchResult
    from vitc.checks.evaluate import EvalResult
    from vitc.checks.settings import BenchSettings, EvalSettings, ProfileSettings, VerifySettings
    from vitc.checks.verify import VerifyReport
    from vitc.core.latency import LatencyModel
    from vitc.onnx.settings import ExportSettings, QuantizeSettings

PathLike = str | os.PathLike[str]


def _settings(cls: Any, settings: Any, options: dict[str, Any]) -> Any:
    return cls.with_options(settings, **options)


def compress(kind: str, model: str, data: str, out: PathLike, settings: Any = None, *, pretrained: bool = False,
             checkpoint: PathLike | None = None, resume: bool = False, **options: Any) -> dict[str, Any]:
    """``vitc compress KIND``: ``settings`` is the method's settings class (``vitc.methods.METHODS[kind].settings``)."""
    from vitc.core.fileio import check_output_dir
    from vitc.methods import method_of

    method = method_of(kind)
    s = _settings(method.settings, settings, options)
    check_output_dir(Path(out))
    result = method.compress(model, data, Path(out), s, pretrained=pretrained,
                             checkpoint=str(checkpoint) if checkpoint else None, resume=resume)
    return result or {}


def materialize(artifact: PathLike, out: PathLike, keep_ratios: list[float] | None = None, *,
                target_speedup: float | None = None, latency: PathLike | None = None) -> dict[str, Any]:
    """``vitc materialize``: a plain, physically smaller model per keep ratio."""
    from vitc.methods import materialize as run

    return run(artifact, out, keep_ratios, target_speedup=target_speedup, latency=latency)


def export(source: str, out: PathLike, settings: ExportSettings | None = None, *, pretrained: bool = False,
           checkpoint: PathLike | None = None, **options: Any) -> dict[str, Any]:
    """``vitc export``: one TensorRT-ready ONNX, checked against PyTorch before it takes its name (``verify=False``
    skips that)."""
    from vitc.checks.export import export_verified
    from vitc.onnx.settings import ExportSettings

    s = _settings(ExportSettings, settings, options)
    return export_verified(source, out, s, pretrained=pretrained, checkpoint=str(checkpoint) if checkpoint else None)


def quantize(onnx: PathLike, out: PathLike, settings: QuantizeSettings | None = None, **options: Any) -> dict[str, Any]:
    """``vitc quantize``: INT8 Q/DQ from an fp32 ONNX, calibrated on ``data`` (a required field)."""
    from vitc.core.settings import to_dict
    from vitc.onnx.quantize import quantize_onnx
    from vitc.onnx.settings import QuantizeSettings

    s = _settings(QuantizeSettings, settings, options)
    fields = to_dict(s)
    return quantize_onnx(str(onnx), fields.pop("data"), out, **fields)


def verify(onnx: PathLike, against: str, settings: VerifySettings | None = None, **options: Any) -> VerifyReport:
    """``vitc verify``: the ONNX on its backend against PyTorch; the report is truthy when it passed."""
    from vitc.checks.settings import VerifySettings
    from vitc.checks.verify import verify_onnx
    from vitc.core.settings import to_dict

    s = _settings(VerifySettings, settings, options)
    return verify_onnx(onnx, against, **to_dict(s))


def evaluate(target: str, data: str, settings: EvalSettings | None = None, *, pretrained: bool = False,
             checkpoint: PathLike | None = None, **options: Any) -> EvalResult:
    """``vitc eval``: top-1/top-5 through the backend the target ships in."""
    from vitc.checks.evaluate import evaluate_target
    from vitc.checks.settings import EvalSettings
    from vitc.core.settings import to_dict

    s = _settings(EvalSettings, settings, options)
    return evaluate_target(target, data, pretrained=pretrained, checkpoint=str(checkpoint) if checkpoint else None,
                           **to_dict(s))


def bench(*targets: str, settings: BenchSettings | None = None, latency: PathLike | None = None, pretrained: bool = False,
          checkpoint: PathLike | None = None, **options: Any) -> BenchResult:
    """``vitc bench T1 [T2 ...]``: the targets round-robin, every one after the first against it (``BACKEND:PATH``
    picks a backend); ``latency`` adds a profile's predictions."""
    from vitc.checks.bench import bench_targets
    from vitc.checks.settings import BenchSettings

    s = _settings(BenchSettings, settings, options)
    result = bench_targets(list(targets), s, pretrained=pretrained, checkpoint=str(checkpoint) if checkpoint else None)
    if latency is not None:
        from vitc.checks.predict import add_predictions

        add_predictions(result, latency)
    return result


def profile(model: str, out: PathLike, settings: ProfileSettings | None = None, *,
            probe_cache: PathLike | None = None, **options: Any) -> LatencyModel:
    """``vitc profile``: measure the latency model of ``model`` on a backend, write it to ``out`` and return it."""
    from vitc.checks.profile import profile_latency
    from vitc.checks.settings import ProfileSettings
    from vitc.core.latency import load_latency

    s = _settings(ProfileSettings, settings, options)
    profile_latency(model, out, s, probe_cache=probe_cache)
    return load_latency(out)


def deploy(artifact: PathLike, backend: str, precision: str = "fp32", settings: Any = None) -> Path:
    """The file ``backend`` runs for a plain artifact at ``precision`` (:func:`vitc.backends.deploy.deploy`)."""
    from vitc.backends.deploy import deploy as make

    return make(artifact, backend, precision, settings)


def tune(model: str, data: str, out: PathLike, settings: Any = None, *, pretrained: bool = False,
         checkpoint: PathLike | None = None, resume: bool = False, force: bool = False, **options: Any) -> Any:
    """``vitc tune``: the fastest file this device runs at ``target_speedup`` (a :class:`vitc.tune.TuneResult`;
    ``result.met`` is False when nothing meets it, where the command exits 1)."""
    from vitc.tune import tune as run_tune

    return run_tune(model, data, Path(out), settings, pretrained=pretrained, checkpoint=str(checkpoint) if checkpoint else None,
                    resume=resume, force=force, **options)


def run(pipeline: PathLike, out: PathLike | None = None, *, resume: bool = False, force: bool = False,
        overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """``vitc run PIPELINE.yaml``: every stage, then the report (``overrides``: ``--set KEY=VALUE`` items)."""
    from vitc.pipeline.config import load_config
    from vitc.pipeline.run import run_pipeline

    return run_pipeline(load_config(pipeline, overrides), Path(out) if out is not None else None, resume, force=force)


__all__ = ["bench", "compress", "deploy", "evaluate", "export", "materialize", "profile", "quantize", "run", "tune", "verify"]
