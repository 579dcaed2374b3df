"""``vitc build``: an ONNX file → a TensorRT engine, with the TensorRT >= 10 Python API.

* **Strongly typed** network (``1 << STRONGLY_TYPED``): precision comes from the ONNX itself — fp32,
  FP16 from ``vitc export --fp16``, INT8 from the Q/DQ graph of ``vitc quantize``. No ``BuilderFlag``
  precision flags (deprecated in TensorRT 10.12, removed in 11) and no implicit INT8 calibrator.
* **One optimization profile** over the batch range, token and image dimensions taken from the
  ONNX's static shape (:mod:`vitc.onnx.profile`).
* Parser errors are reported per node (index, name, operator, message) before the one-line failure.
* **Timing cache** loaded from and saved back to a file (default ``timing.cache`` beside the engine,
  so engines built into one folder share tactic timings); a cache from another GPU or TensorRT
  version is ignored with a warning, never silently trusted.
* The engine is plain TensorRT bytes (any TensorRT tool can load it), written atomically, with a
  JSON sidecar ``<engine>.json``: TensorRT version, GPU, profile, precision, builder settings, the
  source ONNX's hash and the vitc spec (so ``vitc eval`` knows the input size and normalisation).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitc.backends.tensorrt.common import make_logger, require_tensorrt
from vitc.core.errors import CheckFailed, UsageError, VitcError
from vitc.core.fileio import atomic_path, check_output_file, file_sha256, write_json
from vitc.core.progress import log
from vitc.core.settings import Label, Settings, setting
from vitc.core.version import __version__
from vitc.onnx.profile import BatchProfile, OnnxInfo, batch_profile, read_onnx

if TYPE_CHECKING:
    import tensorrt as trt

SIDECAR_FORMAT = "vitc.engine/1"
DEFAULT_TIMING_CACHE = "timing.cache"
GIB = 1 << 30


@dataclass
class BuildSettings(Settings):
    """Builder options: batch range (images), workspace pool limit (GiB), optimization level 0–5, timing cache."""

    min_batch: int = setting(1, min=1, help="Smallest batch (images) the engine accepts.")
    opt_batch: int = setting(32, min=1, help="Batch (images) TensorRT tunes kernels for.")
    max_batch: int = setting(64, min=1, help="Largest batch (images) the engine accepts.")
    workspace_gb: float = setting(4.0, min=0, min_open=True, help="Builder workspace memory pool limit, GiB.")
    builder_level: int = setting(3, min=0, max=5,
                                 help="TensorRT builder optimization level 0-5 (higher: longer build, maybe faster engine).")
    timing_cache: str | None = setting(None, metavar="FILE",
                                       help="Timing cache file to load (if present) and update [default: timing.cache beside OUT].")
    verbose: bool = setting(False, help="Show TensorRT's verbose log on stderr.")

    def rules(self, label: Label) -> None:
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise UsageError(f"need {label('min_batch')} <= {label('opt_batch')} <= {label('max_batch')}, got "
                             f"{self.min_batch}, {self.opt_batch}, {self.max_batch}")


@dataclass(frozen=True)
class ParserErrorInfo:
    """One ONNX parser error, copied out of TensorRT's ``ParserError``."""

    node: int  # node index in the graph, -1 when the error is not tied to a node
    node_name: str
    operator: str
    desc: str
    code: str

    def __str__(self) -> str:
        where = f"node {self.node}" if self.node >= 0 else "graph"
        if self.node_name:
            where += f" {self.node_name!r}"
        if self.operator:
            where += f" ({self.operator})"
        return f"{where}: {self.desc} [{self.code}]"


def sidecar_path(engine: str | os.PathLike[str]) -> Path:
    """``model.engine`` → ``model.engine.json``."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def timing_cache_path(engine: str | os.PathLike[str], given: str | os.PathLike[str] | None = None) -> Path:
    """The timing cache to load and update: ``given``, else ``timing.cache`` beside the engine."""
    if given is not None:
        path = Path(given)
        if path.is_dir():
            raise UsageError(f"--timing-cache {path} is a folder; give a file path")
        return path
    return Path(engine).parent / DEFAULT_TIMING_CACHE


def read_timing_cache(path: str | os.PathLike[str]) -> bytes:
    """The cache's bytes, or ``b""`` (an empty cache) when the file does not exist yet."""
    path = Path(path)
    if not path.exists():
        return b""
    if not path.is_file():
        raise UsageError(f"timing cache {path} is not a file")
    return path.read_bytes()


def parser_failure_message(onnx_path: str | os.PathLike[str], errors: list[ParserErrorInfo]) -> str:
    """One line for the CLI; the per-node list is logged separately."""
    if not errors:
        return f"TensorRT could not parse {onnx_path} (no parser errors were recorded; rerun with --verbose)"
    more = f" (+{len(errors) - 1} more above)" if len(errors) > 1 else ""
    return f"TensorRT could not parse {onnx_path}: {errors[0]}{more}"


def make_sidecar(info: OnnxInfo, profile: BatchProfile, settings: BuildSettings, *, engine: bytes | memoryview,
                 tensorrt_version: str, gpu: dict[str, Any] | None, timing_cache: Path, timing_cache_reused: bool,
                 build_seconds: float) -> dict[str, Any]:
    """The JSON written beside an engine (see the module docstring)."""
    spec_json = info.metadata.get("vitc.spec")
    return {
        "format": SIDECAR_FORMAT,
        "engine_sha256": hashlib.sha256(engine).hexdigest(),
        "engine_bytes": len(engine),
        "onnx": str(info.path),
        "onnx_sha256": file_sha256(info.path),
        "opset": info.opset,
        "precision": info.precision,
        "strongly_typed": True,
        "tensorrt": tensorrt_version,
        "gpu": gpu,
        "profile": profile.to_dict(),
        "inputs": [{"name": t.name, "dtype": t.dtype, "shape": [d if isinstance(d, int) else -1 for d in t.dims]} for t in info.inputs],
        "outputs": [{"name": t.name, "dtype": t.dtype, "shape": [d if isinstance(d, int) else -1 for d in t.dims]} for t in info.outputs],
        "builder_optimization_level": settings.builder_level,
        "workspace_bytes": int(settings.workspace_gb * GIB),
        "timing_cache": str(timing_cache),
        "timing_cache_reused": timing_cache_reused,
        "build_seconds": round(build_seconds, 3),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "vitc": __version__,
        "spec": json.loads(spec_json) if spec_json else None,
    }


def read_sidecar(engine: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The sidecar of ``engine``, or None when there is none (an engine built by another tool)."""
    path = sidecar_path(engine)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UsageError(f"{path} is not valid JSON (a truncated sidecar?)") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise UsageError(f"{path} is not a vitc engine sidecar (expected format {SIDECAR_FORMAT!r})")
    return data


def build_engine(onnx_path: str | os.PathLike[str], out: str | os.PathLike[str], settings: BuildSettings | None = None,
                 **options: Any) -> dict[str, Any]:
    """Build ``out`` (a TensorRT engine) and ``out.json`` from ``onnx_path``; return the sidecar dict.

    ``options`` replace fields of ``settings``. Everything that can be checked without TensorRT (the
    ONNX, the profile, the options, the output location) is checked first, so a bad invocation fails
    the same way on every machine.
    """
    settings = BuildSettings.with_options(settings, **options)
    min_batch, opt_batch, max_batch = settings.min_batch, settings.opt_batch, settings.max_batch
    workspace_gb, builder_level, timing_cache, verbose = (settings.workspace_gb, settings.builder_level,
                                                          settings.timing_cache, settings.verbose)
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give the engine's file path (e.g. {out / 'model.engine'})")
    check_output_file(out)
    info = read_onnx(onnx_path)
    profile = batch_profile(info, min_batch, opt_batch, max_batch)
    cache_path = timing_cache_path(out, timing_cache)
    cache_bytes = read_timing_cache(cache_path)
    version = require_tensorrt()
    gpu = _require_gpu()

    log(f"building {out} from {info.path} [{info.precision}, batch {min_batch}/{opt_batch}/{max_batch}, TensorRT {version}]")
    import tensorrt as trt

    logger = make_logger(verbose)
    builder = trt.Builder(logger)
    network = builder.create_network(_strongly_typed_flags())
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(info.path)):
        errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        for err in errors:
            log(f"  parser: {err}")
        raise CheckFailed(parser_failure_message(info.path, errors))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * GIB))
    config.builder_optimization_level = builder_level
    trt_profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile.shapes.items():
        trt_profile.set_shape(name, trt.Dims(list(lo)), trt.Dims(list(opt)), trt.Dims(list(hi)))
    if config.add_optimization_profile(trt_profile) < 0:
        raise CheckFailed(f"TensorRT rejected the optimization profile {profile.to_dict()}")
    reused = _attach_timing_cache(config, cache_bytes, cache_path)

    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise CheckFailed(f"TensorRT could not build an engine from {info.path} (see TensorRT's messages above)")
    engine_bytes = memoryview(serialized)

    with atomic_path(cache_path) as tmp:
        tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
    with atomic_path(out) as tmp:
        tmp.write_bytes(engine_bytes)
    sidecar = make_sidecar(info, profile, settings, engine=engine_bytes, tensorrt_version=version, gpu=gpu,
                           timing_cache=cache_path, timing_cache_reused=reused, build_seconds=seconds)
    write_json(sidecar_path(out), sidecar)
    log(f"wrote {out} ({len(engine_bytes) / 2**20:.1f} MiB) in {seconds:.1f} s")
    return {"engine": str(out), "sidecar": str(sidecar_path(out)), **sidecar}


def _attach_timing_cache(config: trt.IBuilderConfig, data: bytes, path: Path) -> bool:
    """Load ``data`` into the builder config; True when an existing cache was accepted."""
    cache = config.create_timing_cache(data)
    if cache is not None and config.set_timing_cache(cache, False):
        if data:
            log(f"reusing timing cache {path}")
        return bool(data)
    log(f"warning: timing cache {path} was made by another GPU or TensorRT version; starting an empty one")
    fresh = config.create_timing_cache(b"")
    if fresh is None or not config.set_timing_cache(fresh, False):
        raise CheckFailed("TensorRT could not create an empty timing cache")
    return False


def _strongly_typed_flags() -> int:
    """``1 << STRONGLY_TYPED`` (TensorRT 10); TensorRT 11 builds strongly typed by default and may drop the flag."""
    import tensorrt as trt

    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def _parser_error(err: Any) -> ParserErrorInfo:
    """Copy a ``tensorrt.ParserError`` (typed ``...`` in the stubs) into plain values."""
    return ParserErrorInfo(node=int(err.node()), node_name=str(err.node_name()), operator=str(err.node_operator()),
                           desc=str(err.desc()), code=str(err.code()).rsplit(".", 1)[-1])


def _require_gpu() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        raise VitcError("TensorRT builds for the GPU it runs on, and no CUDA GPU is visible here")
    from vitc.core.device import gpu_info

    return gpu_info(torch.cuda.current_device())


def summary_line(r: dict[str, Any]) -> str:
    """The build report as the two lines `vitc build` prints."""
    gpu = (r.get("gpu") or {}).get("name", "?")
    batches = next(iter(r["profile"].values()))
    return (f"wrote {r['engine']} ({r['engine_bytes'] / 2**20:.1f} MiB, {r['precision']}, TensorRT {r['tensorrt']}, {gpu})\n"
            f"batch {batches['min'][0]}..{batches['max'][0]} (opt {batches['opt'][0]}); built in {r['build_seconds']:.1f} s; "
            f"timing cache {r['timing_cache']}{' (reused)' if r['timing_cache_reused'] else ''}")


def inspect_engine(path: Path) -> tuple[Any, dict[str, Any]]:
    """The spec and facts an engine's sidecar records (`vitc info ENGINE`)."""
    from vitc.core.spec import ViTSpec

    if not path.is_file():
        raise UsageError(f"no such engine file: {path}")
    sidecar = read_sidecar(path)
    if not sidecar or not sidecar.get("spec"):
        raise UsageError(f"{path} has no vitc sidecar ({path.name}.json), so its architecture is unknown")
    return ViTSpec.from_dict(sidecar["spec"]), {"format": "tensorrt", "precision": sidecar.get("precision"),
                                                 "tensorrt": sidecar.get("tensorrt")}
