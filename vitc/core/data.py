"""Dataset sources named by a string, resolved against a model spec (input size, normalisation).

    digits                 scikit-learn's 1,797 bundled 8×8 handwritten digits, upsampled to the model's
                           input size; fixed, seeded, stratified 80/20 train/val split (1,437 / 360)
    fashion-mnist[:PATH]   Fashion-MNIST's four IDX files (``*-ubyte.gz`` or ``*-ubyte``) in PATH (default
                           /usr/share/datasets/fashion-mnist, Debian's ``dataset-fashion-mnist``): train = the
                           60,000 training images, val = the 10,000 test images, 10 classes; 28×28 grey,
                           resized (bilinear) to the model's input and replicated to its channels
    imagefolder:PATH       ImageNet-style PATH/train and PATH/val class folders (at least 2 classes); timm's
                           transforms resolved from the model's pretrained config (mean, std, interpolation,
                           crop). A file that cannot be decoded stops the run with one line naming it
    synthetic[:N]          N random images per split (default 256) — for throughput only, never accuracy

:func:`parse_data` only checks that the files exist (it validates configs before any work); the images
are read when a split's dataset is built, and a malformed file is one line naming it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from vitc.core.errors import UsageError, VitcError
from vitc.core.spec import ViTSpec

SPLITS = ("train", "val")
DIGITS_SEED = 0
DIGITS_VAL_FRACTION = 0.2

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_URL = "https://github.com/zalandoresearch/fashion-mnist"
FASHION_MNIST_FILES = {  # split -> (images, labels), each as *-ubyte.gz or *-ubyte
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
FASHION_MNIST_SIZE = 28
KINDS = "digits, fashion-mnist[:PATH], imagefolder:PATH or synthetic[:N]"


@dataclass(frozen=True)
class DataSource:
    """A parsed data spec: ``kind`` is digits, fashion-mnist, imagefolder or synthetic."""

    kind: str
    path: Path | None = None
    size: int = 256
    holdout: float = 0.0  # a seeded fraction of the train split kept apart (split "holdout"), out of "train"

    def __str__(self) -> str:
        held = f" ({self.holdout:.0%} of train held out)" if self.holdout else ""
        if self.kind == "imagefolder":
            return f"imagefolder:{self.path}{held}"
        if self.kind == "fashion-mnist":
            return (self.kind if self.path == FASHION_MNIST_DIR else f"fashion-mnist:{self.path}") + held
        return (self.kind if self.kind != "synthetic" or self.size == 256 else f"synthetic:{self.size}") + held

    def with_holdout(self, fraction: float) -> DataSource:
        """This source with ``fraction`` of its train split kept apart as the split ``holdout`` (seeded, the same
        images every time): what ``vitc tune`` chooses on, so that neither training nor the reported (val)
        accuracy sees them."""
        if not 0.0 <= fraction < 1.0:
            raise UsageError(f"the held-out fraction must be in [0, 1), got {fraction}")
        from dataclasses import replace

        return replace(self, holdout=fraction)

    def num_classes(self, spec: ViTSpec | None = None) -> int:
        if self.kind in ("digits", "fashion-mnist"):
            return 10
        if self.kind == "synthetic":
            return spec.num_classes if spec is not None and spec.num_classes > 0 else 10
        return len(self._label_classes())

    def _label_classes(self) -> list[str]:
        """An image folder's classes, which its labels index: train/'s (val/ if there is no train/); >= 2."""
        assert self.path is not None
        splits = [s for s in SPLITS if (self.path / s).is_dir()]
        if not splits:
            raise UsageError(f"{self.path} has neither a train/ nor a val/ folder (expected ImageNet-style class folders)")
        root = self.path / splits[0]
        classes = _folder_classes(root)
        if len(classes) < 2:
            raise UsageError(f"{root} has only one class folder ({classes[0]}/): a classifier needs at least 2 classes")
        return classes

    def head_classes(self) -> int | None:
        """Classes to build a model *by name* with: the data's, or None (the model's own head) for
        synthetic data, whose labels follow the model (a synthetic DeiT-S keeps its 1000 classes)."""
        return None if self.kind == "synthetic" else self.num_classes()

    def dataset(self, spec: ViTSpec, split: str, train_transforms: bool = False) -> Dataset:
        if self.holdout and split in ("train", HOLDOUT):
            from torch.utils.data import Subset

            base = self._dataset(spec, "train", train_transforms and split == "train")
            n = len(base)  # type: ignore[arg-type]  # every vitc dataset is sized
            held = _held_out(n, self.holdout)
            keep = held if split == HOLDOUT else sorted(set(range(n)) - set(held))
            return Subset(base, keep)
        if split == HOLDOUT:
            raise UsageError(f"{self} holds out no images (split {HOLDOUT!r} needs a held-out fraction)")
        return self._dataset(spec, split, train_transforms)

    def _dataset(self, spec: ViTSpec, split: str, train_transforms: bool = False) -> Dataset:
        if split not in SPLITS:
            raise UsageError(f"unknown split {split!r} (expected train or val)")
        if self.kind == "digits":
            return DigitsDataset(spec, split, augment=train_transforms and split == "train")
        if self.kind == "fashion-mnist":
            assert self.path is not None
            return FashionMNISTDataset(spec, self.path, split, augment=train_transforms and split == "train")
        if self.kind == "synthetic":
            return SyntheticDataset(spec, self.size, seed=0 if split == "train" else 1, num_classes=self.num_classes(spec))
        root = self._split_dir(split)
        return _imagefolder(root, spec, train_transforms and split == "train", self._label_classes())

    def _split_dir(self, split: str) -> Path:
        assert self.path is not None
        d = self.path / split
        if not d.is_dir():
            raise UsageError(f"{self.path} has no '{split}/' folder (expected ImageNet-style train/ and val/ class folders)")
        return d


HOLDOUT = "holdout"


def _held_out(n: int, fraction: float) -> list[int]:
    """The indices of a train split of ``n`` images kept apart: a seeded ``fraction`` of them (at least 1)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(1234)).tolist()
    return sorted(order[: max(1, round(fraction * n))])


def parse_data(text: str | DataSource) -> DataSource:
    """Parse ``digits`` / ``fashion-mnist[:PATH]`` / ``synthetic[:N]`` / ``imagefolder:PATH``; bad input is a
    one-line error. Cheap: it checks that the files exist, and reads none of them. A parsed source (one with a
    held-out part, say) is taken as it is."""
    if isinstance(text, DataSource):
        return text
    text = text.strip()
    if text == "digits":
        return DataSource("digits")
    if text == "fashion-mnist" or text.startswith("fashion-mnist:"):
        folder = FASHION_MNIST_DIR
        if ":" in text:
            raw = text.split(":", 1)[1].strip()
            if not raw:
                raise UsageError("bad data spec 'fashion-mnist:': give the folder of the four IDX files, or write "
                                 f"fashion-mnist for {FASHION_MNIST_DIR}")
            folder = Path(os.path.expanduser(raw))
        for split in SPLITS:
            fashion_mnist_files(folder, split)
        return DataSource("fashion-mnist", path=folder)
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
    raise UsageError(f"unknown data source {text!r} (expected {KINDS})")


def normalize_params(spec: ViTSpec) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(-1, 1, 1)
    return mean, std


# Upsampled images are cached when they fit in this many bytes (digits at up to 64×64: 71 MB); larger
# sets (Fashion-MNIST's 60,000 at 32×32 would be 737 MB of floats) are resized per item instead, from
# their small uint8 originals.
UPSAMPLED_CACHE_BYTES = 96 << 20


class GreyImageDataset(Dataset):
    """Small grey images (N, 1, h, w) as (C, H, W) float tensors for a model: resized (bilinear) to its
    input size, replicated to its channels and normalised with its mean/std; ``augment`` adds a random
    shift of up to 1/16 of the input size. ``images`` are float in [0, 1] or uint8 (divided by 255)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, spec: ViTSpec, augment: bool = False) -> None:
        self._small = images
        self.labels = labels
        self.size = spec.img_size
        self.chans = spec.in_chans
        self.mean, self.std = normalize_params(spec)
        self.augment = augment
        upsampled_bytes = len(images) * self.chans * self.size * self.size * 4
        cache = spec.img_size <= 64 and upsampled_bytes <= UPSAMPLED_CACHE_BYTES
        self._cache = self._upsample(images) if cache else None

    def _upsample(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.to(torch.float32) / 255.0
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


class DigitsDataset(GreyImageDataset):
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
        super().__init__(images[idx].unsqueeze(1), labels[idx], spec, augment)


def fashion_mnist_files(folder: Path, split: str) -> tuple[Path, Path]:
    """The (images, labels) IDX files of a Fashion-MNIST split in ``folder``, each ``*-ubyte`` or
    ``*-ubyte.gz`` (the uncompressed one if both are there); a missing one is one line saying how to get it."""
    found = []
    for stem in FASHION_MNIST_FILES[split]:
        plain, packed = folder / stem, folder / f"{stem}.gz"
        path = plain if plain.is_file() else packed if packed.is_file() else None
        if path is None:
            where = "" if folder.is_dir() else f" ({folder} does not exist)" if not folder.exists() else f" ({folder} is not a folder)"
            raise UsageError(
                f"fashion-mnist: {packed} (or {plain.name}) is missing{where}; install Debian's dataset-fashion-mnist "
                f"(apt-get install dataset-fashion-mnist, files in {FASHION_MNIST_DIR}) or put the four *-ubyte.gz "
                f"files from {FASHION_MNIST_URL} into {folder}")
        found.append(path)
    return found[0], found[1]


def read_fashion_mnist(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images (N, 28, 28), int64 labels (N,)) of a split, every fault one line naming the file."""
    from vitc.core.idx import read_idx

    images_path, labels_path = fashion_mnist_files(folder, split)
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    size = FASHION_MNIST_SIZE
    if images.shape[1:] != (size, size):
        raise UsageError(f"{images_path} has the wrong dimensions: images of {images.shape[1]}x{images.shape[2]} "
                         f"pixels (Fashion-MNIST's are {size}x{size})")
    if len(images) != len(labels):
        raise UsageError(f"{labels_path} has {len(labels)} labels but {images_path.name} has {len(images)} images "
                         "(a label/image count mismatch: the files are from different releases or truncated)")
    if len(labels) == 0:
        raise UsageError(f"{images_path} holds no images")
    bad = labels >= len(FASHION_MNIST_CLASSES)
    if bad.any():
        i = int(bad.argmax())
        raise UsageError(f"{labels_path} has label {int(labels[i])} at index {i}; Fashion-MNIST's labels are 0-9")
    return torch.from_numpy(images), torch.from_numpy(labels.astype("int64"))


class FashionMNISTDataset(GreyImageDataset):
    """A Fashion-MNIST split (train: 60,000 images, val: the 10,000 test images), read from IDX files
    when built, kept as uint8 (47 MB for train) and resized to the model's input per item."""

    classes = FASHION_MNIST_CLASSES

    def __init__(self, spec: ViTSpec, folder: Path, split: str, augment: bool = False) -> None:
        images, labels = read_fashion_mnist(folder, split)
        super().__init__(images.unsqueeze(1), labels, spec, augment)


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


class DataFileError(UsageError):
    """A data file that cannot be read, named in one line — also when it is read in a DataLoader worker
    (every :class:`~vitc.core.errors.VitcError` strips the worker traceback torch adds)."""


def load_image(path: str) -> object:
    """An image file as an RGB PIL image (torchvision's loader); a file PIL cannot decode — not an image,
    corrupt, truncated — is a one-line :class:`DataFileError` naming it (the run stops: an accuracy must
    not silently lose images)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as fh:
            img = Image.open(fh)
            return img.convert("RGB")
    except UnidentifiedImageError:
        raise DataFileError(f"{path}: not an image file that PIL can read (corrupt, or not an image despite its suffix)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataFileError(f"{path}: cannot read the image ({reason})") from None


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
        ds = ImageFolder(str(root), transform=transform, loader=load_image, is_valid_file=_has_image_suffix)
    except FileNotFoundError as e:
        raise UsageError(f"{root} has a class folder without images ({str(e).split('.')[0]})") from None
    if ds.classes != classes:
        index = {c: i for i, c in enumerate(classes)}
        ds.samples = [(p, index[ds.classes[t]]) for p, t in ds.samples]
        ds.imgs, ds.targets = ds.samples, [t for _, t in ds.samples]
        ds.classes, ds.class_to_idx = list(classes), index
    return ds


def _has_image_suffix(path: str) -> bool:
    return path.lower().endswith(_IMG_EXT)


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


class Loader(DataLoader):
    """A ``DataLoader`` whose worker processes stop as soon as a worker's one-line error reaches the caller.

    torch re-raises a worker's exception from a frame that holds it (``ExceptionWrapper.reraise``), so the
    traceback, its frames and the loader's iterator form a reference cycle that only the cyclic garbage
    collector frees — at some later moment, and then in an order that lets the iterator's shutdown wait
    ``MP_STATUS_CHECK_INTERVAL`` (5 s) for each worker. A :class:`VitcError` is one line without a traceback
    (an unreadable data file), so it is raised without torch's frames, after the iterator has shut its
    workers down.
    """

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        batches = super().__iter__()
        try:
            yield from batches
            return
        except VitcError as e:
            error = e.with_traceback(None)
        del batches  # the last reference: its workers are stopped now, not when some traceback is collected
        raise error from None


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
    return Loader(
        dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, num_workers=num_workers,
        worker_init_fn=worker_init, persistent_workers=False,
    )
