"""fashion-mnist[:PATH]: IDX files (gzipped or not) read lazily, resized for the model, and every bad file —
missing, wrong magic, truncated, count mismatch, wrong dimensions — one line naming it (exit 2 from the CLI).

Every test writes its own small IDX files (CI has no Debian dataset package); none reads /usr/share.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from vitc.core.data import FASHION_MNIST_FILES, FashionMNISTDataset, parse_data
from vitc.core.errors import UsageError
from vitc.core.idx import idx_bytes, parse_idx, read_idx, write_idx
from vitc.core.models import SMALL_CONFIGS

NANO = SMALL_CONFIGS["vit-nano"]
MICRO = SMALL_CONFIGS["vit-micro"]
STEMS = [stem for split in ("train", "val") for stem in FASHION_MNIST_FILES[split]]


def write_fashion_mnist(folder: Path, n_train: int = 40, n_test: int = 20, *, gz: bool = True, seed: int = 0) -> Path:
    """Four Fashion-MNIST-shaped IDX files in ``folder``: 28×28 uint8 images whose brightness pattern
    depends on the label (so a model can learn something), labels cycling through 0-9."""
    rng = np.random.default_rng(seed)
    suffix = ".gz" if gz else ""
    for split, n in (("train", n_train), ("val", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        images = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
        for i, y in enumerate(labels):
            images[i, 2 * y : 2 * y + 8, 4:24] = 200 + rng.integers(0, 55)
        images_stem, labels_stem = FASHION_MNIST_FILES[split]
        write_idx(folder / f"{images_stem}{suffix}", images)
        write_idx(folder / f"{labels_stem}{suffix}", labels)
    return folder


def _one_line(e: pytest.ExceptionInfo[UsageError], *words: str) -> str:
    text = str(e.value)
    assert "\n" not in text, text
    for w in words:
        assert w in text, text
    return text


# ------------------------------------------------------------------------------------------------
# IDX reading
# ------------------------------------------------------------------------------------------------


def test_idx_reads_a_hand_written_file_gzipped_or_not(tmp_path: Path) -> None:
    """Bytes laid out by hand (magic 0x00000803, big-endian dims, row-major data), not by write_idx."""
    data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = struct.pack(">BBBB", 0, 0, 8, 3) + struct.pack(">III", 2, 3, 4) + data.tobytes()
    (tmp_path / "a-ubyte").write_bytes(raw)
    (tmp_path / "a-ubyte.gz").write_bytes(gzip.compress(raw))
    for name in ("a-ubyte", "a-ubyte.gz"):
        out = read_idx(tmp_path / name, ndim=3)
        assert out.dtype == np.uint8 and out.shape == (2, 3, 4) and np.array_equal(out, data)
    assert idx_bytes(data) == raw
    # a gzipped file is recognised by its signature, not its name
    (tmp_path / "b-ubyte").write_bytes(gzip.compress(raw))
    assert np.array_equal(read_idx(tmp_path / "b-ubyte"), data)
    # other IDX types keep their values (int32, big-endian on disk)
    ints = struct.pack(">BBBB", 0, 0, 0x0C, 1) + struct.pack(">I", 2) + struct.pack(">ii", -5, 70000)
    assert parse_idx(ints, "ints").tolist() == [-5, 70000]


@pytest.mark.parametrize(
    "content,words",
    [
        (b"\x00\x00", "truncated"),
        (b"PK\x03\x04" + bytes(20), "wrong magic number 0x504b0304"),
        (struct.pack(">BBBB", 0, 0, 8, 1) + struct.pack(">I", 5) + bytes(5), "wrong dimensions: 1"),
        (struct.pack(">BBBB", 0, 0, 0x0D, 3) + struct.pack(">III", 1, 1, 1) + bytes(4), "not unsigned bytes"),
        (struct.pack(">BBBB", 0, 0, 8, 3) + struct.pack(">I", 2), "shorter than its 16-byte header"),
        (struct.pack(">BBBB", 0, 0, 8, 3) + struct.pack(">III", 2, 2, 2) + bytes(7), "truncated: 7 data bytes"),
        (struct.pack(">BBBB", 0, 0, 8, 3) + struct.pack(">III", 1, 2, 2) + bytes(6), "2 bytes after the data"),
    ],
)
def test_bad_idx_is_one_line_naming_the_file(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(UsageError) as e:
        read_idx(path, ndim=3)
    _one_line(e, str(path), words)


def test_bad_gzip_is_one_line_naming_the_file(tmp_path: Path) -> None:
    packed = gzip.compress(idx_bytes(np.zeros((50, 28, 28), np.uint8)))
    (tmp_path / "cut-ubyte.gz").write_bytes(packed[: len(packed) // 2])
    (tmp_path / "fake-ubyte.gz").write_bytes(idx_bytes(np.zeros((1, 28, 28), np.uint8)))
    (tmp_path / "bad-ubyte.gz").write_bytes(packed[:10] + bytes(len(packed) - 10))
    for name, words in (("cut-ubyte.gz", "truncated"), ("fake-ubyte.gz", "not a gzip file"), ("bad-ubyte.gz", "damaged gzip")):
        with pytest.raises(UsageError) as e:
            read_idx(tmp_path / name)
        _one_line(e, str(tmp_path / name), words)


# ------------------------------------------------------------------------------------------------
# the data source
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_splits_resize_and_normalise(tmp_path: Path, gz: bool) -> None:
    folder = write_fashion_mnist(tmp_path / "fm", n_train=30, n_test=12, gz=gz)
    src = parse_data(f"fashion-mnist:{folder}")
    assert str(src) == f"fashion-mnist:{folder}" and parse_data(str(src)) == src
    assert src.num_classes() == 10 and src.head_classes() == 10
    spec = MICRO.replace(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    train, val = src.dataset(spec, "train"), src.dataset(spec, "val")
    assert isinstance(train, FashionMNISTDataset) and (len(train), len(val)) == (30, 12)
    raw = read_idx(folder / ("t10k-images-idx3-ubyte" + (".gz" if gz else "")))
    labels = read_idx(folder / ("t10k-labels-idx1-ubyte" + (".gz" if gz else "")))
    for i in (0, 7, 11):
        x, y = val[i]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == int(labels[i])
        grey = x * torch.tensor(spec.std).view(3, 1, 1) + torch.tensor(spec.mean).view(3, 1, 1)
        expected = F.interpolate(torch.from_numpy(raw[i : i + 1, None]).float() / 255, size=(32, 32),
                                 mode="bilinear", align_corners=False)[0, 0]
        for c in range(3):  # replicated to the model's channels
            assert torch.allclose(grey[c], expected, atol=1e-5)
    # one-channel models get one channel; other sizes are resized to theirs
    assert src.dataset(NANO.replace(in_chans=1, mean=(0.5,), std=(0.5,)), "val")[0][0].shape == (1, 16, 16)


def test_fashion_mnist_augments_only_the_training_split(tmp_path: Path) -> None:
    src = parse_data(f"fashion-mnist:{write_fashion_mnist(tmp_path / 'fm')}")
    torch.manual_seed(0)
    aug, plain = src.dataset(MICRO, "train", train_transforms=True), src.dataset(MICRO, "train")
    assert any(not torch.equal(aug[i][0], plain[i][0]) for i in range(8))
    assert all(aug[i][1] == plain[i][1] for i in range(8))
    val_aug = src.dataset(MICRO, "val", train_transforms=True)
    assert torch.equal(val_aug[0][0], src.dataset(MICRO, "val")[0][0])


def test_parse_is_cheap_and_reads_no_file(tmp_path: Path) -> None:
    """parse_data validates configs before any work: it checks the files exist, and reads them only when a
    split is built — garbage files pass parsing, and fail (naming the file) when the dataset is made."""
    folder = tmp_path / "fm"
    folder.mkdir()
    for stem in STEMS:
        (folder / f"{stem}.gz").write_bytes(b"garbage")
    src = parse_data(f"fashion-mnist:{folder}")
    with pytest.raises(UsageError) as e:
        src.dataset(MICRO, "val")
    _one_line(e, "t10k-images-idx3-ubyte.gz", "not a gzip file")


def test_default_folder_is_the_debian_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vitc.core import data

    assert Path("/usr/share/datasets/fashion-mnist") == data.FASHION_MNIST_DIR
    folder = write_fashion_mnist(tmp_path / "fm")
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", folder)  # no test reads outside the repository
    src = parse_data("fashion-mnist")
    assert src.path == folder and str(src) == "fashion-mnist" and len(src.dataset(NANO, "val")) == 20
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(UsageError) as e:
        parse_data("fashion-mnist")
    _one_line(e, "train-images-idx3-ubyte.gz", "does not exist", "apt-get install dataset-fashion-mnist")


@pytest.mark.parametrize("stem", STEMS)
def test_missing_file_names_it_and_how_to_get_it(tmp_path: Path, stem: str) -> None:
    folder = write_fashion_mnist(tmp_path / "fm")
    (folder / f"{stem}.gz").unlink()
    with pytest.raises(UsageError) as e:
        parse_data(f"fashion-mnist:{folder}")
    _one_line(e, f"{folder / stem}.gz", "is missing", "apt-get install dataset-fashion-mnist",
              "https://github.com/zalandoresearch/fashion-mnist")


def test_uncompressed_and_mixed_files_are_found(tmp_path: Path) -> None:
    folder = write_fashion_mnist(tmp_path / "fm")
    raw = gzip.decompress((folder / "train-labels-idx1-ubyte.gz").read_bytes())
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    (folder / "train-labels-idx1-ubyte").write_bytes(raw)
    assert len(parse_data(f"fashion-mnist:{folder}").dataset(NANO, "train")) == 40


def _corrupt(folder: Path, case: str) -> str:
    """Break one file of a good folder; returns the file's name, which the error must carry."""
    images, labels = folder / "train-images-idx3-ubyte.gz", folder / "train-labels-idx1-ubyte.gz"
    if case == "wrong magic":
        write_idx(labels, np.zeros((40, 28, 28), np.uint8))  # an image file where the labels go
        return labels.name
    if case == "wrong magic number":
        data = bytearray(gzip.decompress(images.read_bytes()))
        data[:4] = b"\x00\x00\x08\x09"
        images.write_bytes(gzip.compress(bytes(data)))
        return images.name
    if case == "truncated":
        data = gzip.decompress(images.read_bytes())
        images.write_bytes(gzip.compress(data[:-100]))
        return images.name
    if case == "truncated gzip":
        data = images.read_bytes()
        images.write_bytes(data[: len(data) - 200])
        return images.name
    if case == "count mismatch":
        write_idx(labels, np.zeros(39, np.uint8))
        return labels.name
    if case == "wrong dimensions":
        write_idx(images, np.zeros((40, 32, 32), np.uint8))
        return images.name
    if case == "bad label":
        write_idx(labels, np.full(40, 10, np.uint8))
        return labels.name
    raise AssertionError(case)


BAD = {
    "wrong magic": "wrong dimensions: 3",
    "wrong magic number": "wrong dimensions: 9",
    "truncated": "truncated",
    "truncated gzip": "truncated",
    "count mismatch": "39 labels but train-images-idx3-ubyte.gz has 40 images",
    "wrong dimensions": "32x32 pixels",
    "bad label": "label 10 at index 0",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_file_is_one_line_naming_it(tmp_path: Path, case: str) -> None:
    folder = write_fashion_mnist(tmp_path / "fm")
    name = _corrupt(folder, case)
    src = parse_data(f"fashion-mnist:{folder}")  # parsing stays cheap: the fault shows when the split is read
    assert len(src.dataset(NANO, "val")) == 20
    with pytest.raises(UsageError) as e:
        src.dataset(NANO, "train")
    _one_line(e, str(folder / name), BAD[case])


def test_wrong_magic_number_is_named_as_such(tmp_path: Path) -> None:
    folder = write_fashion_mnist(tmp_path / "fm")
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x12\x34\x56\x78" + bytes(40)))
    with pytest.raises(UsageError) as e:
        parse_data(f"fashion-mnist:{folder}").dataset(NANO, "val")
    _one_line(e, str(folder / "t10k-labels-idx1-ubyte.gz"), "wrong magic number 0x12345678", "expected 0x00000801")


@pytest.mark.parametrize("case", ["missing", "wrong magic", "truncated", "count mismatch", "wrong dimensions"])
def test_cli_bad_file_is_exit_2_and_one_line(tmp_path: Path, case: str) -> None:
    from vitc.cli import cli

    folder = write_fashion_mnist(tmp_path / "fm")
    if case == "missing":
        (folder / "t10k-labels-idx1-ubyte.gz").unlink()
        name = "t10k-labels-idx1-ubyte.gz"
    else:
        name = _corrupt(folder, case)
    r = CliRunner().invoke(cli, ["train", "--model", "vit-nano", "--data", f"fashion-mnist:{folder}", "--epochs", "1",
                                 "--batch-size", "8", "--out", str(tmp_path / "out")])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and name in lines[0], r.stderr
    assert "Traceback" not in r.output


def test_cli_trains_and_evaluates_on_fashion_mnist(tmp_path: Path) -> None:
    import json

    from vitc.cli import cli

    folder = write_fashion_mnist(tmp_path / "fm", n_train=64, n_test=32)
    out = tmp_path / "base"
    r = CliRunner().invoke(cli, ["train", "--model", "vit-nano", "--data", f"fashion-mnist:{folder}", "--epochs", "1",
                                 "--batch-size", "16", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["epochs"] == 1
    r = CliRunner().invoke(cli, ["eval", str(out / "model.safetensors"), "--data", f"fashion-mnist:{folder}", "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["images"] == 32 and result["data"] == f"fashion-mnist:{folder}"


def test_pipeline_yaml_accepts_fashion_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vitc.core import data
    from vitc.pipeline.config import config_from_dict, load_config

    folder = write_fashion_mnist(tmp_path / "fm")
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", folder)
    yaml_file = tmp_path / "p.yaml"
    yaml_file.write_text("model: vit-micro\ndata: fashion-mnist\nuvc: {budgets: [0.5]}\n")
    assert load_config(yaml_file).data == "fashion-mnist"
    assert config_from_dict({"model": "vit-micro", "data": f"fashion-mnist:{folder}"}).data == f"fashion-mnist:{folder}"
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(UsageError) as e:
        load_config(yaml_file)
    _one_line(e, "'data'", "t10k-images-idx3-ubyte.gz", "is missing")


def test_bad_specs(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as e:
        parse_data("fashion-mnist:")
    _one_line(e, "give the folder")
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError) as e:
        parse_data(f"fashion-mnist:{tmp_path / 'f'}")
    _one_line(e, "is not a folder")
    with pytest.raises(UsageError) as e:
        parse_data("fashion")
    _one_line(e, "unknown data source", "fashion-mnist[:PATH]")
