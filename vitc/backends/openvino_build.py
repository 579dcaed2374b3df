"""``vitc build --backend openvino``: an ONNX file → an OpenVINO IR compiled and cached for this CPU.

The CPU analogue of a TensorRT engine, in the form OpenVINO's own tools use: the IR ``OUT.xml`` +
``OUT.bin`` (what ``ovc model.onnx`` writes, what ``benchmark_app -m`` reads), with weights kept at
the ONNX's precision (``compress_to_fp16=False``: ``ovc``'s default would halve fp32 weights
silently), vitc's metadata (spec, precision, keep ratio, source hash) in its ``rt_info``, and the
compiled model cached in ``CACHE_DIR`` (default ``ov_cache/`` beside OUT, like TensorRT's timing
cache) so the next open on this CPU loads the compiled blob instead of compiling. INT8 comes from a
Q/DQ ONNX (``vitc quantize``), as for TensorRT; the IR keeps it as FakeQuantize.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vitc.core.errors import UsageError
from vitc.core.fileio import check_output_file, file_sha256
from vitc.core.progress import log
from vitc.core.settings import Settings, setting
from vitc.core.version import __version__

DEFAULT_CACHE = "ov_cache"


@dataclass
class OpenVinoBuildSettings(Settings):
    """OpenVINO build options: the inference precision of fp32 files and the compiled-model cache."""

    inference_precision: str = setting("fp32", choices=("fp32", "bf16", "fp16"),
                                       help="OpenVINO inference precision for an fp32 ONNX (bf16/fp16 only where the "
                                            "CPU has them; INT8 and fp16 files ignore it). [openvino]")
    cache_dir: str | None = setting(None, metavar="DIR",
                                    help="OpenVINO compiled-model cache [default: ov_cache beside OUT]. [openvino]")


class _Made:
    """What a build creates besides OUT (its folders, the cache folder or the cache's new entries, the moved .bin),
    so that a failed build takes it all back."""

    def __init__(self, folder: Path, cache: Path) -> None:
        from vitc.core.fileio import first_existing

        self.folder, self.base = folder, first_existing(folder)
        self.cache, self.cache_existed = cache, cache.is_dir()
        self.cached = set(cache.iterdir()) if self.cache_existed else set()
        self.files: list[Path] = []

    def undo(self) -> None:
        import shutil

        for f in self.files:
            f.unlink(missing_ok=True)
        if self.cache.is_dir():
            if not self.cache_existed:
                shutil.rmtree(self.cache, ignore_errors=True)
            else:
                for entry in set(self.cache.iterdir()) - self.cached:
                    shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        folder = self.folder
        while folder != self.base and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent


def build_ir(onnx_path: str | os.PathLike[str], out: str | os.PathLike[str], settings: OpenVinoBuildSettings | None = None,
             **options: Any) -> dict[str, Any]:
    """Write ``out`` (.xml) + its .bin from ``onnx_path``, compile it once into the cache; return the report."""
    from vitc.backends.openvino_runner import IR_SUFFIX, RT_KEY, OpenVinoRunner, read_source, require_openvino

    settings = OpenVinoBuildSettings.with_options(settings, **options)
    out, onnx_path = Path(out), Path(onnx_path)
    if out.suffix.lower() != IR_SUFFIX:
        raise UsageError(f"--out must name the IR's .xml file (its weights go to .bin beside it), got {out}")
    if onnx_path.suffix.lower() != ".onnx":
        raise UsageError(f"vitc build reads an ONNX file, got {onnx_path}")
    check_output_file(out)
    if out.with_suffix(".bin").is_dir():
        raise UsageError(f"the IR's weights file {out.with_suffix('.bin')} (beside --out {out.name}) is a folder; "
                         "move it or name another --out")
    model, meta = read_source(onnx_path)
    version = require_openvino()
    import openvino as ov

    precision = meta.get("vitc.precision", "fp32")
    cache = Path(settings.cache_dir) if settings.cache_dir else out.parent / DEFAULT_CACHE
    if cache.exists() and not cache.is_dir():
        raise UsageError(f"--cache-dir {cache} is a file; give a folder")
    if cache.resolve() in (out.resolve(), out.with_suffix(".bin").resolve()):
        raise UsageError(f"--cache-dir {cache} is the IR's own path ({out.name} + {out.with_suffix('.bin').name}); "
                         "give the cache another folder")
    record = {**meta, "vitc.openvino_source": str(onnx_path), "vitc.openvino_source_sha256": file_sha256(onnx_path),
              "vitc.openvino_version": version, "vitc.openvino_created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "vitc.version": __version__}
    try:
        record["vitc.openvino_cache"] = os.path.relpath(cache, out.parent)
    except ValueError:  # another drive (Windows)
        record["vitc.openvino_cache"] = str(cache)
    model.set_rt_info(json.dumps(record, sort_keys=True), [RT_KEY, "meta"])
    log(f"writing {out} from {onnx_path} [{precision}, OpenVINO {version}]")
    requested = settings.inference_precision if precision == "fp32" else None
    made = _Made(out.parent, cache)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".vitc-ov-", dir=out.parent) as tmp:
            staged = Path(tmp) / out.name
            ov.save_model(model, str(staged), compress_to_fp16=False)
            start = time.perf_counter()  # compile the written IR before it takes OUT's name: no half-built result
            with OpenVinoRunner(staged, precision=requested, cache_dir=cache) as runner:
                seconds = time.perf_counter() - start
                info = runner.describe()
            os.replace(staged.with_suffix(".bin"), out.with_suffix(".bin"))
            made.files.append(out.with_suffix(".bin"))
            os.replace(staged, out)
    except BaseException:
        made.undo()  # a build that fails (a precision this CPU lacks, Ctrl-C) leaves nothing behind
        raise
    log(f"wrote {out} + {out.with_suffix('.bin').name}; compiled in {seconds:.1f} s into cache {cache}")
    return {"ir": str(out), "weights": str(out.with_suffix(".bin")),
            "ir_bytes": out.stat().st_size + out.with_suffix(".bin").stat().st_size,
            "precision": runner.precision, "inference_precision": info["inference_precision"], "openvino": version,
            "cache_dir": str(cache), "compile_seconds": round(seconds, 3), "threads": info["threads"],
            "onnx": str(onnx_path), "onnx_sha256": record["vitc.openvino_source_sha256"]}


def summary_line(r: dict[str, Any]) -> str:
    """The build report as the two lines `vitc build` prints."""
    return (f"wrote {r['ir']} + {Path(r['weights']).name} ({r['ir_bytes'] / 2**20:.1f} MiB, {r['precision']}, inference "
            f"precision {r['inference_precision']}, OpenVINO {r['openvino'].split('-')[0]})\n"
            f"compiled in {r['compile_seconds']:.1f} s ({r['threads']} threads); cache {r['cache_dir']}")
