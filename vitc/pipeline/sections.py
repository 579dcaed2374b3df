"""The sections of a ``vitc run`` YAML that read a command's settings, and the pipeline-only ones.

Each section class derives from its command's settings dataclass (``export`` = :class:`ExportSettings`, ...), so the
pipeline takes every option the command takes, with the same defaults, ranges and messages; ``FIXED`` names the
options the pipeline sets itself (per file or per run), refused with the reason. ``deploy`` (which backends and
precisions to make) and ``subset`` are the pipeline's own. ``ALIASES`` maps old spellings to their new keys.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from vitc.backends import BACKENDS, DEFAULT_BENCH_BACKENDS
from vitc.checks.settings import BenchSettings, EvalSettings, VerifySettings
from vitc.core.errors import UsageError
from vitc.core.settings import Label, Settings, derive, from_mapping, setting, yaml_label
from vitc.core.validation import check_data_spec
from vitc.onnx.settings import ExportSettings, QuantizeSettings
from vitc.tune.settings import TuneSettings

INHERITED = ("seed", "device")  # top-level keys every training section inherits unless it sets its own
DEPLOY_PRECISIONS = ("fp32", "fp16", "int8")  # what a run makes unless told (bf16 where listed: torch's compute dtype)


class Section(Settings):
    """A pipeline section that reads a command's settings: ``FIXED`` names the command's fields the pipeline sets
    itself (per file or per run), each with the reason a YAML that gives one is told."""

    FIXED: ClassVar[dict[str, str]] = {}


@dataclass(kw_only=True)
class DistributedStage(Settings):
    nproc_per_node: int = setting(1, min=1, help="Processes per node for the training stages (torchrun).")


@dataclass(kw_only=True)
class DeployStage(Settings):
    """What the pipeline makes of every variant (pipeline-only): the backends it runs on and the ONNX precisions."""

    backends: list[str] = setting(list(DEFAULT_BENCH_BACKENDS), choices=tuple(BACKENDS),
                                  help="Backends to evaluate and bench each variant on (tensorrt only where TensorRT and a "
                                       "GPU are present; openvino runs the ONNX files on the CPU when listed). ONNX Runtime "
                                       "always runs the ONNX files: every one is verified and evaluated through it.")
    precisions: list[str] = setting(list(DEPLOY_PRECISIONS), choices=("fp32", "fp16", "bf16", "int8"),
                                    help="Precisions to deploy at, where a backend runs them: fp32 always (int8 is quantized "
                                         "from it), fp16 (an FP16 ONNX; torch on a GPU), bf16 (torch's compute dtype), int8 "
                                         "(Q/DQ calibrated on the run's data).")

    def rules(self, label: Label) -> None:
        for key, values in (("backends", self.backends), ("precisions", self.precisions)):
            dup = next((v for v in values if values.count(v) > 1), None)
            if dup is not None:
                raise UsageError(f"{label(key)} lists {dup} twice")
        if not self.backends:
            raise UsageError(f"{label('backends')} must list at least one backend")
        if "fp32" not in self.precisions:
            raise UsageError(f"{label('precisions')} must include fp32 (every ONNX is exported at fp32 first)")


@dataclass(kw_only=True)
class ExportStage(ExportSettings, Section):
    """`vitc export`'s settings, applied to every ONNX the run exports."""

    FIXED: ClassVar[dict[str, str]] = {
        "keep_ratio": "a token-selection run is materialized at the ratios its method section lists ('materialize')",
        "verify": "every ONNX is verified in the run's verify stage (the 'verify' section)",
        "data": "every ONNX is verified in the run's verify stage (its images: 'verify.data')",
        "fp16": "",  # the old spelling of deploy.precisions (see ALIASES)
    }


@dataclass(kw_only=True)
class QuantizeStage(QuantizeSettings, Section):
    """`vitc quantize`'s settings, for every INT8 file the run makes."""

    data: str | None = setting(None, parse=check_data_spec, metavar="SPEC",  # type: ignore[assignment]
                               help="Real calibration images (default: the run's data, its train split).")


@dataclass(kw_only=True)
class VerifyStage(VerifySettings, Section):
    """`vitc verify`'s settings, for every ONNX the run makes, at each of ``batch_sizes``."""

    FIXED: ClassVar[dict[str, str]] = {"batch_size": "the run verifies at each of 'verify.batch_sizes'"}
    data: str | None = setting(None, parse=check_data_spec,  # type: ignore[assignment]
                               help="Real images to verify on (default: the run's data); random inputs are checked too.")
    batches: int | None = setting(2, min=1, help="Batches to compare at each batch size (random and real images each).")
    batch_sizes: list[int] = setting([1, 32], min=1, help="Batch sizes to verify at (random and real images each).")

    def rules(self, label: Label) -> None:
        if not self.batch_sizes:
            raise UsageError(f"{label('batch_sizes')} must list at least one batch size")


@dataclass(kw_only=True)
class EvalStage(EvalSettings, Section):
    """`vitc eval`'s settings, for every deployed file."""

    FIXED: ClassVar[dict[str, str]] = {"backend": "each file is evaluated through the backend it is deployed to ('deploy.backends')"}


_BenchDefaults = derive(BenchSettings, "_BenchDefaults", batch_sizes=[1, 32], device="cpu", warmup_ms=200.0, min_iters=10,
                        min_seconds=1.0)


@dataclass(kw_only=True)
class BenchStage(_BenchDefaults, Section):  # type: ignore[misc,valid-type]
    """`vitc bench`'s settings, for every deployed file."""

    FIXED: ClassVar[dict[str, str]] = {
        "backend": "each file is benched on the backends 'deploy.backends' lists",
        "precision": "each file runs at its own precision ('deploy.precisions')",
    }
    paired: bool = setting(True, help="Bench each compressed format alternately with the dense one (paired speedup); "
                                      "false: each on its own (images/s only; speedups from separate runs).")

    def rules(self, label: Label) -> None:
        if not self.batch_sizes:
            raise UsageError(f"{label('batch_sizes')} must list at least one batch size")

    def settings(self, backend: str, precision: str | None) -> BenchSettings:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(BenchSettings)}
        return BenchSettings(**{**values, "backend": backend, "precision": precision})


@dataclass(kw_only=True)
class TuneStage(TuneSettings, Section):
    """`vitc tune`'s settings: the run tunes its dense model and reports the tuned file as one more row."""


@dataclass(kw_only=True)
class SubsetStage(Settings):
    train: int | None = setting(None, min=1, help="Use only the first N training images (fashion-mnist data).")
    val: int | None = setting(None, min=1, help="Use only the first N validation (test) images (fashion-mnist data).")

    @property
    def active(self) -> bool:
        return self.train is not None or self.val is not None


# old spellings: (section, key) -> (section, key it became); export.fp16/int8 become entries of deploy.precisions
ALIASES: dict[tuple[str, str], tuple[str, str]] = {
    ("bench", "backends"): ("deploy", "backends"),
    ("export", "calib_samples"): ("quantize", "num_samples"),
    ("export", "calib_method"): ("quantize", "method"),
    ("export", "fp16"): ("deploy", "precisions"),
    ("export", "int8"): ("deploy", "precisions"),
}


def section_settings(cls: type, raw: Any, source: str, key: str, inherited: dict[str, Any], *, fixed: dict[str, Any] | None = None,
              extra: tuple[str, ...] = (), label: Label | None = None) -> Any:
    """A section as ``cls``: the top-level seed/device unless the section sets its own."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: '{key}' must be a mapping")
    names = {f.name for f in dataclasses.fields(cls)}
    mapping = {**{k: v for k, v in inherited.items() if k in names and k not in raw},
               **{k: v for k, v in raw.items() if k not in extra}}
    return from_mapping(cls, mapping, label or yaml_label(source, f"{key}."), where=f"{key}.", extra=extra, **(fixed or {}))
