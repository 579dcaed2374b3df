"""Data faults in image folders: an unreadable image (corrupt, truncated, not an image despite its suffix) stops
the run with ONE line naming the file — also when a DataLoader worker process reads it — and data with a
single class is refused. Checked on the library, through Click's runner and through a real subprocess."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import VITC, one_error_line, subprocess_env

from vitc.core.data import DataFileError, load_image, make_loader, parse_data
from vitc.core.errors import UsageError
from vitc.core.models import SMALL_CONFIGS

NANO = SMALL_CONFIGS["vit-nano"]


def _jpeg(seed: int = 0, size: int = 48) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _folder(root: Path, layout: dict[str, dict[str, int]]) -> Path:
    for split, classes in layout.items():
        for cls, n in classes.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (root / split / cls / f"{i}.jpg").write_bytes(_jpeg(seed=hash((split, cls, i)) % 1000))
    return root


BROKEN = {
    "truncated": lambda: _jpeg()[: len(_jpeg()) // 2],
    "corrupt": lambda: _jpeg()[:300] + bytes(np.random.default_rng(1).integers(0, 255, len(_jpeg()) - 300, dtype=np.uint8)),
    "not an image": lambda: b"<html>this is not a picture</html>",
    "empty": lambda: b"",
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_unreadable_image_is_one_line_naming_it(tmp_path: Path, case: str) -> None:
    path = tmp_path / "bad.jpg"
    path.write_bytes(BROKEN[case]())
    with pytest.raises(DataFileError) as e:
        load_image(str(path))
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, UsageError) and e.value.exit_code == 2


def test_worker_exception_keeps_one_line(tmp_path: Path) -> None:
    """torch rebuilds a worker's exception as ``type(e)("Caught ... Original Traceback ...")``."""
    from torch._utils import ExceptionWrapper

    try:
        raise DataFileError("/data/x.jpg: cannot read the image (image file is truncated)")
    except DataFileError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(DataFileError) as e:
        wrapped.reraise()
    assert str(e.value) == "/data/x.jpg: cannot read the image (image file is truncated)"


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_names_the_broken_file(tmp_path: Path, workers: int) -> None:
    root = _folder(tmp_path / "ds", {"train": {"a": 3, "b": 3}, "val": {"a": 2, "b": 2}})
    bad = root / "val" / "b" / "broken.jpg"
    bad.write_bytes(BROKEN["truncated"]())
    val = parse_data(f"imagefolder:{root}").dataset(NANO, "val")
    with pytest.raises(DataFileError) as e:
        for _ in make_loader(val, 2, shuffle=False, num_workers=workers):
            pass
    assert str(bad) in str(e.value) and "\n" not in str(e.value) and "Traceback" not in str(e.value)


def test_the_workers_have_stopped_when_their_error_reaches_the_caller(tmp_path: Path) -> None:
    """torch re-raises a worker's error inside a reference cycle that held the loader's iterator, so its worker
    processes lived on until a garbage collection, whose teardown then waited 5 s per worker."""
    import multiprocessing

    root = _folder(tmp_path / "ds", {"train": {"a": 1, "b": 1}, "val": {"a": 2, "b": 2}})
    (root / "val" / "a" / "0.jpg").write_bytes(BROKEN["truncated"]())
    val = parse_data(f"imagefolder:{root}").dataset(NANO, "val")
    before = set(multiprocessing.active_children())  # any other test's processes
    with pytest.raises(DataFileError):
        for _ in make_loader(val, 2, shuffle=False, num_workers=2):
            pass
    assert set(multiprocessing.active_children()) <= before


def test_cli_train_with_a_broken_image_read_in_a_worker(tmp_path: Path) -> None:
    """vitc train on an image folder reads it in DataLoader worker processes: still one line, exit 2."""
    from vitc.cli import cli

    root = _folder(tmp_path / "ds", {"train": {"a": 4, "b": 4}, "val": {"a": 1, "b": 1}})
    bad = root / "train" / "a" / "x.jpg"
    bad.write_bytes(BROKEN["corrupt"]())
    r = CliRunner().invoke(cli, ["train", "--model", "vit-nano", "--data", f"imagefolder:{root}", "--epochs", "1",
                                 "--batch-size", "3", "--warmup-epochs", "0", "--out", str(tmp_path / "out")])
    assert r.exit_code == 2, r.output
    assert one_error_line(r.stderr) == f"error: {bad}: cannot read the image (cannot load this image)"
    assert "Traceback" not in r.output and "worker" not in r.output


def test_subprocess_eval_with_a_non_image_file(tmp_path: Path) -> None:
    """The real console script, stderr as a user sees it: one line naming the file, exit 2."""
    from vitc.core.artifacts import save_model
    from vitc.core.models import resolve_model

    root = _folder(tmp_path / "ds", {"train": {"a": 1, "b": 1}, "val": {"a": 3, "b": 3}})
    bad = root / "val" / "a" / "notes.png"
    bad.write_bytes(BROKEN["not an image"]())
    model, spec = resolve_model("vit-nano", num_classes=2)
    art = save_model(tmp_path / "m.safetensors", model, spec)
    r = subprocess.run([*VITC, "eval", str(art), "--data", f"imagefolder:{root}", "--batch-size", "2"],
                       capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert r.returncode == 2, r.stderr
    line = one_error_line(r.stderr)
    assert str(bad) in line and "not an image file" in line
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1, r.stderr


def test_one_class_is_refused(tmp_path: Path) -> None:
    from vitc.cli import cli

    root = _folder(tmp_path / "ds", {"train": {"only": 3}, "val": {"only": 2}})
    src = parse_data(f"imagefolder:{root}")
    for call in (src.num_classes, src.head_classes, lambda: src.dataset(NANO, "val")):
        with pytest.raises(UsageError) as e:
            call()
        assert "only one class folder (only/)" in str(e.value) and "at least 2 classes" in str(e.value)
        assert "\n" not in str(e.value)
    r = CliRunner().invoke(cli, ["train", "--model", "vit-nano", "--data", f"imagefolder:{root}", "--epochs", "1",
                                 "--batch-size", "2", "--out", str(tmp_path / "out")])
    assert r.exit_code == 2 and "at least 2 classes" in one_error_line(r.stderr)
    # a val/ split that holds one of train/'s classes is fine: its labels index train/'s classes
    root2 = _folder(tmp_path / "ds2", {"train": {"a": 1, "b": 1}, "val": {"b": 2}})
    assert parse_data(f"imagefolder:{root2}").dataset(NANO, "val").targets == [1, 1]
