"""Settings of ``vitc verify``, ``vitc eval`` and ``vitc bench`` (torch-free; the CLI and the pipeline derive from them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vitc.backends import ARTIFACT, BACKEND_CHOICES, BACKENDS, ONNX_BACKENDS, REFERENCE_BACKEND, backend_help
from vitc.core.device import check_device_name
from vitc.core.errors import UsageError
from vitc.core.settings import Label, Settings, setting
from vitc.core.validation import check_data_spec, check_image_source

STATS = ("elemwise", "mean", "median", "max", "cosine")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
DEVICE = "cpu, cuda, cuda:N or auto (cuda when available)."


@dataclass(kw_only=True)
class VerifySettings(Settings):
    """ONNX Runtime vs PyTorch on the same inputs, judged the Polygraphy way."""

    data: str = setting("random", parse=check_image_source, metavar="SPEC|random",
                        help="random: seeded uniform [0,1) images normalised with the model's mean/std; or a data spec "
                             "(digits | fashion-mnist[:PATH] | imagefolder:PATH), its val split.")
    batches: int | None = setting(None, min=1,
                                  help="Batches to compare [default: 4 for random, the whole val split for real data].")
    batch_size: int = setting(32, min=1, help="Images per batch.")
    atol: float | None = setting(None, min=0,
                                 help="Absolute tolerance (logit units) [default: fp32 1e-4, fp16 1e-2, int8 1e-2 on 1 - cosine].")
    rtol: float | None = setting(None, min=0, help="Relative tolerance [default: fp32 1e-3, fp16 1e-2].")
    stat: str | None = setting(None, choices=STATS,
                               help="Error statistic checked (Polygraphy's --check-error-stat): elemwise fails if any logit "
                                    "exceeds both atol and rtol; mean/median/max compare that statistic; cosine fails if "
                                    "1 - mean cosine similarity > atol [default: fp32 elemwise, fp16 mean, int8 cosine].")
    seed: int = setting(0, min=0, help="Seed of the random inputs.")
    device: str = setting("auto", parse=check_device_name, help="ONNX Runtime device: auto, cpu, cuda or cuda:N.")
    backend: str = setting(REFERENCE_BACKEND, choices=ONNX_BACKENDS,
                           help="Runtime that runs MODEL.onnx (openvino: on the CPU).")


@dataclass(kw_only=True)
class EvalSettings(Settings):
    """Top-1/top-5 of a target through the backend it ships in."""

    split: str = setting("val", choices=("train", "val"), help="Data split to score.")
    batch_size: int = setting(64, min=1, help="Images per forward pass.")
    backend: str = setting("auto", choices=BACKEND_CHOICES, help=backend_help())
    device: str = setting("auto", parse=check_device_name, help=DEVICE)


@dataclass(kw_only=True)
class BenchSettings(Settings):
    """trtexec-style throughput: warm-up, then at least ``min_iters`` iterations and ``min_seconds``."""

    batch_sizes: list[int] = setting([1, 8, 32, 64], min=1, aliases=("--batch",), metavar="B1,B2,...",
                                     help="Batch sizes (images per call), comma-separated.")
    backend: str = setting("auto", choices=BACKEND_CHOICES, help=backend_help())
    device: str = setting("auto", parse=check_device_name, help=DEVICE)
    precision: str | None = setting(None, choices=PRECISIONS,
                                    help="torch: compute dtype [default fp32]. ONNX/engine: must match the file's own "
                                         "precision [default: the file's].")
    warmup_ms: float = setting(500.0, min=0, help="Warm-up per batch size, ms.")
    min_iters: int = setting(50, min=1, help="Timed iterations per batch size, at least (and --min-seconds).")
    min_seconds: float = setting(3.0, min=0, help="Timed seconds per batch size, at least (and --min-iters).")
    seed: int = setting(0, min=0, help="Seed of the synthetic input batch.")
    threads: int | None = setting(None, min=1, help="CPU threads of every runner that takes them (torch, onnxruntime, "
                                                    "openvino) [default: OMP_NUM_THREADS, else each runtime's own].")
    cuda_graph: bool = setting(False, help="Replay CUDA graphs (torch, tensorrt; CUDA only).")
    compile: bool = setting(False, help="torch.compile the model (torch backend, CUDA only).")
    peak: bool = setting(True, help="Time a GEMM of each precision present in the same rounds as the targets: each file's "
                                    "GFLOP/s is reported as a share of it (--no-peak: skip it, e.g. for tiny models).")


PROFILE_PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(kw_only=True)
class ProfileSettings(Settings):
    """Where and how to measure: the target backend, device, precision and batch, and the grid's coarseness."""

    backend: str = setting(REFERENCE_BACKEND, choices=tuple(BACKENDS), help="Backend to measure on (the one you deploy to).")
    device: str = setting("cpu", parse=check_device_name, help="cpu, cuda or cuda:N.")
    batch_size: int = setting(1, min=1, help="Images per call: the batch you deploy at (latency at 1, throughput at 32).")
    precision: str = setting("fp32", choices=PROFILE_PRECISIONS,
                             help="fp32 or fp16 (an FP16 ONNX for ONNX backends, the compute dtype for torch); int8: "
                                  "ONNX backends, Q/DQ files calibrated on --calib-data.")
    calib_data: str | None = setting(None, metavar="SPEC",
                                     help="int8 only: real images to calibrate the probes' Q/DQ on (digits | "
                                          "fashion-mnist[:PATH] | imagefolder:PATH).")
    threads: int | None = setting(None, min=1, help="CPU threads of backends that take them [default: OMP_NUM_THREADS, "
                                                    "else the backend's own default].")
    token_points: int = setting(6, min=2, max=32, help="Token counts in the grid (grid sides from 1 to the full one).")
    head_points: int = setting(3, min=2, max=64, help="Head counts in the grid (1 to all).")
    mlp_points: int = setting(4, min=2, max=64, help="MLP widths in the grid (1/8 to all).")
    warmup_ms: float = setting(100.0, min=0, help="Warm-up per probe, ms.")
    min_iters: int = setting(5, min=1, help="Timed rounds per probe (probe, reference), at least.")
    min_seconds: float = setting(2.0, min=0, help="Timed seconds per probe, at least (probe and reference together).")
    quick_export: bool = setting(False, help="Export the probes with TorchScript's exporter (~0.5 s each instead of the "
                                             "deployed dynamo export's ~5-10 s); the dense model, which calibrates the fit, "
                                             "is still exported as deployed. Faster, slightly less faithful graphs.")

    def rules(self, label: Label) -> None:
        if self.precision == "int8" and not self.calib_data:
            raise UsageError(f"{label('precision')} int8 needs {label('calib_data')}: real images to calibrate the Q/DQ probes on")
        if self.precision != "int8" and self.calib_data:
            raise UsageError(f"{label('calib_data')} applies to {label('precision')} int8 only")
        backend = BACKENDS[self.backend]
        if self.precision == "int8" and backend.reads == ARTIFACT:
            raise UsageError(f"{label('precision')} int8 is profiled through backends that run ONNX or files built from it; "
                             f"{self.backend} runs artifacts")

    def grid(self, spec: Any) -> Any:
        """The coarse grid of :func:`vitc.core.latency.plan_grid` for the dense ``spec``, at this coarseness."""
        from vitc.core.latency import plan_grid

        return plan_grid(spec, self.token_points, self.head_points, self.mlp_points)

    def bench(self) -> BenchSettings:
        """The bench protocol's settings for one probe (no GEMM peak: only ratios to the reference probe matter)."""
        return BenchSettings(batch_sizes=[self.batch_size], backend=self.backend, device=self.device,
                             warmup_ms=self.warmup_ms, min_iters=self.min_iters, min_seconds=self.min_seconds, peak=False)


__all__ = ["PRECISIONS", "PROFILE_PRECISIONS", "STATS", "BenchSettings", "EvalSettings", "ProfileSettings", "VerifySettings",
           "check_data_spec"]
