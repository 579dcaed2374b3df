"""Settings of ``vitc verify``, ``vitc eval`` and ``vitc bench`` (torch-free; the CLI and the pipeline derive from them)."""

from __future__ import annotations

from dataclasses import dataclass

from vitc.backends import BACKEND_CHOICES, BACKENDS, backend_help
from vitc.core.device import check_device_name
from vitc.core.settings import Settings, setting
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
    backend: str = setting("onnxruntime", choices=tuple(b.name for b in BACKENDS.values() if ".onnx" in b.suffixes),
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
    cuda_graph: bool = setting(False, help="Replay CUDA graphs (torch, tensorrt; CUDA only).")
    compile: bool = setting(False, help="torch.compile the model (torch backend, CUDA only).")


__all__ = ["PRECISIONS", "STATS", "BenchSettings", "EvalSettings", "VerifySettings", "check_data_spec"]
