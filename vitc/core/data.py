"""Dataset sources named by a string, resolved against a model spec (input size, normalisation).

    digits            scikit-learn's 1,797 bundled 8×8 handwritten digits, upsampled to the model's
                      input size; fixed, seeded, stratified 80/20 train/val split (1,437 / 360)
    imagefolder:PATH  ImageNet-style PATH/train and PATH/val class folders; timm's transforms
                      resolved from the model's pretrained config (mean, std, interpolation, crop)
    synthetic[:N]     N random images per split (default 256) — for throughput only, never accuracy
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from vitc.core.errors import UsageError
from vitc.core.spec import ViTSpec

SPLITS = ("train", "val")
DIGITS_SEED = 0
DIGITS_VAL_FRACTION = 0.2


@dataclass(frozen=True)
class DataSource:
    """A parsed data spec: ``kind`` is digits, imagefolder or synthetic."""

    kind: str
    path: Path | None = None
    size: int = 256

    def __str__(self) -> str:
        if self.kind == "imagefolder":
            return f"imagefolder:{self.path}"
        return self.kind if self.kind != "synthetic" or self.size == 256 else f"synthetic:{self.size}"

    def num_classes(self, spec: ViTSpec | None = None) -> int:
        if self.kind == "digits":
            return 10
        if self.kind == "synthetic":
            return spec.num_classes if spec is not None and spec.num_classes > 0 else 10
        assert self.path is not None
        splits = [s for s in SPLITS if (self.path / s).is_dir()]
        if not splits:
            raise UsageError(f"{self.path} has neither a train/ nor a val/ folder (expected ImageNet-style class folders)")
        return len(_folder_classes(self.path / splits[0]))

    def head_classes(self) -> int | None:
        """Classes to build a model *by name* with: the data's, or None (the model's own head) for
        synthetic data, whose labels follow the model (a synthetic DeiT-S keeps its 1000 classes)."""
        return None if self.kind == "synthetic" else self.num_classes()

    def dataset(self, spec: ViTSpec, split: str, train_transforms: bool = False) -> Dataset:
        if split not in SPLITS:
            raise UsageError(f"unknown split {split!r} (expected train or val)")
        if self.kind == "digits":
            return DigitsDataset(spec, split, augment=train_transforms and split == "train")
        if self.kind == "synthetic":
            return SyntheticDataset(spec, self.size, seed=0 if split == "train" else 1, num_classes=self.num_classes(spec))
        classes = _folder_classes(self._split_dir("train")) if (self.path / "train").is_dir() else None  # type: ignore[operator]
        return _imagefolder(self._split_dir(split), spec, train_transforms and split == "train", classes)

    def _split_dir(self, split: str) -> Path:
        assert self.path is not None
        d = self.path / split
        if not d.is_dir():
            raise UsageError(f"{self.path} has no '{split}/' folder (expected ImageNet-style train/ and val/ class folders)")
        return d


def parse_data(text: str) -> DataSource:
    """Parse ``digits`` / ``synthetic[:N]`` / ``imagefolder:PATH``; bad input is a one-line error."""
    text = text.strip()
    if text == "digits":
        return DataSource("digits")
    if text == "synthetic" or text.startswith("synthetic:"):
        size = 256
        if ":" in text:
            try:
                size = int(text.split(":", 1)[1])
            except ValueError:
                raise UsageError(f"bad data spec {text!r}: synthetic:N needs an integer N") from None
            if size < 1:
                raise UsageError(f"bad data spec {text!r}: N must be >= 1")
        return DataSource("synthetic", size=size)
    if text.startswith("imagefolder:"):
        raw = text.split(":", 1)[1].strip()
        if not raw:
            raise UsageError("bad data spec 'imagefolder:': give the dataset folder, e.g. imagefolder:/data/imagenet")
        path = Path(os.path.expanduser(raw))
        if not path.exists():
            raise UsageError(f"data path {path} does not exist")
        if not path.is_dir():
            raise UsageError(f"data path {path} is not a folder")
        return DataSource("imagefolder", path=path)
    raise UsageError(f"unknown data source {text!r} (expected digits, synthetic[:N] or imagefolder:PATH)")


def normalize_params(spec: ViTSpec) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(-1, 1, 1)
    return mean, std


class DigitsDataset(Dataset):
    """scikit-learn digits as (C, H, W) float tensors normalised with the spec's mean/std."""

    def __init__(self, spec: ViTSpec, split: str, augment: bool = False) -> None:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32) / 16.0  # (1797, 8, 8) in [0, 1]
        labels = torch.tensor(digits.target, dtype=torch.long)
        idx_train, idx_val = train_test_split(
            list(range(len(labels))), test_size=DIGITS_VAL_FRACTION, random_state=DIGITS_SEED, stratify=digits.target
        )
        idx = torch.tensor(idx_train if split == "train" else idx_val)
        x = images[idx].unsqueeze(1)
        # Upsample once (bilinear) to the model's input size; cheap for small inputs, lazy for large.
        self._small = x
        self.labels = labels[idx]
        self.size = spec.img_size
        self.chans = spec.in_chans
        self.mean, self.std = normalize_params(spec)
        self.augment = augment
        self._cache = self._upsample(x) if spec.img_size <= 64 else None

    def _upsample(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        x = x.expand(-1, self.chans, -1, -1)
        return (x - self.mean) / self.std

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self._cache[i] if self._cache is not None else self._upsample(self._small[i : i + 1])[0]
        if self.augment:
            x = _random_shift(x, max_shift=max(1, self.size // 16))
        return x, int(self.labels[i])


def _random_shift(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Random translation by up to ``max_shift`` pixels (edge-padded); uses torch's global RNG."""
    dx, dy = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,)))
    pad = max_shift
    xp = F.pad(x.unsqueeze(0), (pad, pad, pad, pad), mode="replicate")[0]
    h, w = x.shape[-2:]
    return xp[:, pad + dy : pad + dy + h, pad + dx : pad + dx + w]


class SyntheticDataset(Dataset):
    """Deterministic random images of the spec's input shape; labels are random too."""

    def __init__(self, spec: ViTSpec, size: int, seed: int, num_classes: int) -> None:
        self.size, self.seed, self.shape, self.num_classes = size, seed, spec.input_shape, num_classes

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        return torch.randn(self.shape, generator=g), int(torch.randint(self.num_classes, (1,), generator=g))


_IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff")


def _folder_classes(root: Path) -> list[str]:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise UsageError(f"{root} has no class folders")
    return classes


def _imagefolder(root: Path, spec: ViTSpec, train: bool, classes: list[str] | None = None) -> Dataset:
    """An ImageFolder over ``root`` whose labels index ``classes`` (the train split's), so that a val/
    folder missing a class still labels the others as training did."""
    from timm.data import create_transform
    from torchvision.datasets import ImageFolder

    own = _folder_classes(root)
    classes = classes or own
    unknown = sorted(set(own) - set(classes))
    if unknown:
        raise UsageError(f"{root} has class folders that train/ lacks: {', '.join(unknown[:5])}")
    transform = create_transform(
        input_size=spec.input_shape, is_training=train, mean=spec.mean, std=spec.std,
        interpolation=spec.interpolation, crop_pct=spec.crop_pct,
    )
    try:
        ds = ImageFolder(str(root), transform=transform, is_valid_file=lambda p: p.lower().endswith(_IMG_EXT))
    except FileNotFoundError as e:
        raise UsageError(f"{root} has a class folder without images ({str(e).split('.')[0]})") from None
    if ds.classes != classes:
        index = {c: i for i, c in enumerate(classes)}
        ds.samples = [(p, index[ds.classes[t]]) for p, t in ds.samples]
        ds.imgs, ds.targets = ds.samples, [t for _, t in ds.samples]
        ds.classes, ds.class_to_idx = list(classes), index
    return ds


class ShardSampler(Sampler[int]):
    """Rank ``rank``'s share of a (seeded, per-epoch) permutation; no padding, so counts stay exact.

    ``multiple`` > 1 cuts the permutation to a multiple of it before sharding. For training it is the
    global batch: every rank then gets the same number of whole batches (DDP needs that), and step i's
    global batch holds the same images at any world size.
    """

    def __init__(self, n: int, shuffle: bool, seed: int, rank: int = 0, world: int = 1, multiple: int = 1) -> None:
        self.n, self.shuffle, self.seed, self.rank, self.world, self.epoch = n, shuffle, seed, rank, world, 0
        self.used = n - n % multiple

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.used))
        g = torch.Generator().manual_seed(self.seed * 10_007 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()[: self.used]

    def __iter__(self):
        return iter(self._order()[self.rank :: self.world])

    def __len__(self) -> int:
        return len(range(self.rank, self.used, self.world))


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    rank: int = 0,
    world: int = 1,
    drop_last: bool = False,
    num_workers: int | None = None,
    worker_init: Callable[[int], None] | None = None,
) -> DataLoader:
    """A loader over this rank's shard; ``loader.sampler.set_epoch(e)`` reshuffles deterministically.

    ``batch_size`` is per rank. With ``drop_last`` every rank gets ``len(dataset) // (batch_size * world)``
    whole batches, and step i's batches across ranks are the images a one-process run with batch
    ``batch_size * world`` sees at step i.
    """
    if batch_size < 1:
        raise UsageError(f"batch size must be >= 1, got {batch_size}")
    if num_workers is None:
        num_workers = 0 if not hasattr(dataset, "samples") else min(8, os.cpu_count() or 1)
    sampler = ShardSampler(len(dataset), shuffle=shuffle, seed=seed, rank=rank, world=world,  # type: ignore[arg-type]
                           multiple=batch_size * world if drop_last else 1)
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, num_workers=num_workers,
        worker_init_fn=worker_init, persistent_workers=False,
    )
