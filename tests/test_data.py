"""Data sources: digits, imagefolder, synthetic; loaders that shard exactly; one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vitc.core.data import make_loader, parse_data
from vitc.core.errors import UsageError
from vitc.core.models import SMALL_CONFIGS

NANO = SMALL_CONFIGS["vit-nano"]
MICRO = SMALL_CONFIGS["vit-micro"]


def test_digits_split_sizes_and_fixed_split() -> None:
    src = parse_data("digits")
    train, val = src.dataset(NANO, "train"), src.dataset(NANO, "val")
    assert (len(train), len(val)) == (1437, 360)
    assert src.num_classes() == 10
    again = parse_data("digits").dataset(NANO, "val")
    assert torch.equal(val.labels, again.labels)
    assert torch.equal(val[17][0], again[17][0])
    # stratified: every class is in val with 35-37 images
    counts = torch.bincount(val.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37


def test_digits_normalised_and_upsampled_to_model_input() -> None:
    from sklearn.datasets import load_digits

    spec = MICRO.replace(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    ds = parse_data("digits").dataset(spec, "val")
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    # undo the normalisation: every channel is the same [0, 1] grey image, bilinearly upsampled
    mean, std = torch.tensor(spec.mean).view(3, 1, 1), torch.tensor(spec.std).view(3, 1, 1)
    grey = x * std + mean
    assert torch.allclose(grey[0], grey[1], atol=1e-6) and torch.allclose(grey[0], grey[2], atol=1e-6)
    assert grey.min() >= -1e-6 and grey.max() <= 1 + 1e-6
    digits = load_digits()
    match = [i for i in range(len(digits.target)) if digits.target[i] == y]
    small = torch.tensor(np.stack([digits.images[i] for i in match]), dtype=torch.float32) / 16.0
    up = F.interpolate(small.unsqueeze(1), size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    assert (up - grey[0]).abs().amax(dim=(1, 2)).min() < 1e-5  # it is one of the images of its class


def test_digits_augmentation_only_on_train() -> None:
    src = parse_data("digits")
    torch.manual_seed(0)
    aug = src.dataset(NANO, "train", train_transforms=True)
    plain = src.dataset(NANO, "train")
    assert any(not torch.equal(aug[i][0], plain[i][0]) for i in range(8))
    val = src.dataset(NANO, "val", train_transforms=True)
    assert torch.equal(val[0][0], src.dataset(NANO, "val")[0][0])


def test_synthetic_is_deterministic() -> None:
    src = parse_data("synthetic:12")
    assert str(src) == "synthetic:12"
    ds = src.dataset(NANO, "train")
    assert len(ds) == 12 and ds[3][0].shape == NANO.input_shape
    assert torch.equal(ds[3][0], src.dataset(NANO, "train")[3][0])
    assert not torch.equal(ds[3][0], src.dataset(NANO, "val")[3][0])
    assert all(0 <= ds[i][1] < 10 for i in range(12))
    assert len(parse_data("synthetic").dataset(NANO, "val")) == 256


def test_synthetic_data_keeps_the_models_own_head() -> None:
    """A model built by name on synthetic data keeps its classes (a synthetic DeiT-S has 1000)."""
    from vitc.core.models import resolve_model

    assert parse_data("digits").head_classes() == 10
    assert parse_data("synthetic:8").head_classes() is None
    _, spec = resolve_model("deit_tiny_patch16_224", num_classes=parse_data("synthetic:8").head_classes())
    assert spec.num_classes == 1000
    labels = parse_data("synthetic:64").dataset(spec, "train")
    assert max(labels[i][1] for i in range(64)) >= 10  # labels span the model's 1000 classes


def _png_folder(root: Path, layout: dict[str, dict[str, int]]) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, classes in layout.items():
        for cls, n in classes.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    return root


def test_imagefolder(tmp_path: Path) -> None:
    root = _png_folder(tmp_path / "ds", {"train": {"cat": 3, "dog": 2}, "val": {"cat": 1, "dog": 2}})
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    src = parse_data(f"imagefolder:{root}")
    assert src.num_classes() == 2
    train = src.dataset(NANO, "train", train_transforms=True)
    val = src.dataset(NANO, "val")
    assert len(train) == 5 and len(val) == 3
    x, y = val[0]
    assert x.shape == NANO.input_shape and y == 0
    assert sorted(val.targets) == [0, 1, 1]
    batch, labels = next(iter(make_loader(train, 5, shuffle=True, num_workers=0)))
    assert batch.shape == (5, *NANO.input_shape) and sorted(labels.tolist()) == [0, 0, 0, 1, 1]


def test_imagefolder_val_missing_a_class_keeps_train_labels(tmp_path: Path) -> None:
    root = _png_folder(tmp_path / "ds", {"train": {"a": 1, "b": 1, "c": 1}, "val": {"c": 2}})
    val = parse_data(f"imagefolder:{root}").dataset(NANO, "val")
    assert val.targets == [2, 2] and val.classes == ["a", "b", "c"]


@pytest.mark.parametrize(
    "make,spec,split,words",
    [
        (lambda p: f"imagefolder:{p / 'nope'}", None, None, "does not exist"),
        (lambda p: "imagefolder:", None, None, "give the dataset folder"),
        (lambda p: f"imagefolder:{_file(p)}", None, None, "not a folder"),
        (lambda p: f"imagefolder:{_dir(p / 'empty')}", NANO, "train", "no 'train/' folder"),
        (lambda p: f"imagefolder:{_png_folder(p / 'noval', {'train': {'a': 1}})}", NANO, "val", "no 'val/' folder"),
        (lambda p: f"imagefolder:{_dir(p / 'nocls' / 'train')}/..", NANO, "train", "no class folders"),
        (lambda p: f"imagefolder:{_dir(_png_folder(p / 'e', {'train': {'a': 1}}) / 'train' / 'b')}/../..", NANO, "train",
         "without images"),
        (lambda p: f"imagefolder:{_png_folder(p / 'x', {'train': {'a': 1, 'b': 1}, 'val': {'z': 1}})}", NANO, "val",
         "train/ lacks"),
        (lambda p: "mnist", None, None, "unknown data source"),
        (lambda p: "synthetic:many", None, None, "integer"),
        (lambda p: "synthetic:0", None, None, ">= 1"),
        (lambda p: "digits", NANO, "test", "unknown split"),
    ],
)
def test_bad_data_is_a_one_line_usage_error(tmp_path: Path, make, spec, split, words: str) -> None:
    with pytest.raises(UsageError) as e:
        src = parse_data(make(tmp_path))
        src.dataset(spec, split)
    assert words in str(e.value) and "\n" not in str(e.value)


def _file(p: Path) -> Path:
    (p / "f.txt").write_text("x")
    return p / "f.txt"


def _dir(p: Path) -> Path:
    p.mkdir(parents=True)
    return p


@pytest.mark.parametrize("n,batch", [(37, 4), (37, 2), (64, 8), (11, 2)])
def test_sharded_loaders_rebuild_the_one_process_batches(n: int, batch: int) -> None:
    """With drop_last, 2 ranks get equal step counts, and step i's two halves are the 1-process batch i."""
    data = torch.utils.data.TensorDataset(torch.arange(n), torch.zeros(n))
    one = make_loader(data, batch, shuffle=True, seed=3, drop_last=True)
    ranks = [make_loader(data, batch // 2, shuffle=True, seed=3, rank=r, world=2, drop_last=True) for r in (0, 1)]
    for loader in (one, *ranks):
        loader.sampler.set_epoch(5)
    assert len(ranks[0]) == len(ranks[1]) == len(one) == n // batch
    for (full, _), (a, _), (b, _) in zip(one, *ranks):
        assert sorted(full.tolist()) == sorted(a.tolist() + b.tolist())
    # evaluation (no drop_last) covers every image exactly once
    shards = [make_loader(data, 3, shuffle=False, rank=r, world=2) for r in (0, 1)]
    seen = [int(i) for s in shards for x, _ in s for i in x]
    assert sorted(seen) == list(range(n))
