"""Datasets for training the from-scratch network: local files only, never a download.

    from gemmlab.data import load_dataset, normalize
    ds = normalize(load_dataset())                 # scikit-learn's bundled 8x8 digits
    ds = normalize(load_dataset("mnist.pkl.gz"))   # the fast.ai course's pickle
    ds = normalize(load_dataset("data/mnist/"))    # a directory of original MNIST IDX files

Every loader returns a `Dataset` of flattened float32 images and int64 labels 0..9. Anything wrong
with a file (missing, truncated, malformed, inconsistent) raises `DataError` naming the file and
what was expected, rather than a struct, pickle or index error from deep inside the parsing.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

N_CLASSES = 10

# IDX element types (the third header byte). MNIST uses only unsigned bytes.
_IDX_UBYTE = 0x08

# Errors that reading a damaged or foreign file can raise; all are turned into DataError.
_READ_ERRORS = (OSError, EOFError, zlib.error, pickle.UnpicklingError, AttributeError, ImportError,
                IndexError, KeyError, TypeError, ValueError)


class DataError(ValueError):
    """A dataset file is missing, truncated, malformed or inconsistent."""


@dataclass(frozen=True)
class Dataset:
    """Train and validation splits: x is float32 (N, features), y is int64 (N,) with labels 0..9."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_valid: torch.Tensor
    y_valid: torch.Tensor
    name: str

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_classes(self) -> int:
        return N_CLASSES

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={len(self.y_train)}, valid={len(self.y_valid)}, "
                f"features={self.n_features})")


# ---------------------------------------------------------------------------------------------
# Shared checks


def _as_tensors(x: np.ndarray, y: np.ndarray, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Check one split's arrays and turn them into float32 / int64 tensors."""
    if x.ndim != 2:
        raise DataError(f"{source}: expected images as a 2-D array (N, features), got shape {x.shape}")
    if y.ndim != 1:
        raise DataError(f"{source}: expected labels as a 1-D array (N,), got shape {y.shape}")
    if len(x) != len(y):
        raise DataError(f"{source}: expected as many labels as images, got {len(x)} images "
                        f"and {len(y)} labels")
    if x.dtype.kind not in "fiu":
        raise DataError(f"{source}: expected numeric images, got dtype {x.dtype}")
    if y.dtype.kind not in "iu":
        raise DataError(f"{source}: expected integer labels, got dtype {y.dtype}")
    if len(y) and (y.min() < 0 or y.max() >= N_CLASSES):
        raise DataError(f"{source}: expected labels in 0..{N_CLASSES - 1}, "
                        f"got values from {y.min()} to {y.max()}")
    # torch.from_numpy shares memory and warns on read-only buffers, so copy those.
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.ascontiguousarray(y, dtype=np.int64)
    if not x.flags.writeable:
        x = x.copy()
    if not y.flags.writeable:
        y = y.copy()
    return torch.from_numpy(x), torch.from_numpy(y)


def _make(name: str, train: tuple, valid: tuple, source: str) -> Dataset:
    x_train, y_train = _as_tensors(*train, source=f"{source} (train)")
    x_valid, y_valid = _as_tensors(*valid, source=f"{source} (valid)")
    if x_train.shape[1] != x_valid.shape[1]:
        raise DataError(f"{source}: expected train and valid images of the same size, got "
                        f"{x_train.shape[1]} and {x_valid.shape[1]} features")
    return Dataset(x_train, y_train, x_valid, y_valid, name)


# ---------------------------------------------------------------------------------------------
# scikit-learn's digits


def load_digits(valid_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, 64 features), split by a seeded permutation.

    Pixel values (0..16 in the original) are scaled to [0, 1] to match MNIST.
    """
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be strictly between 0 and 1, got {valid_fraction}")
    from sklearn.datasets import load_digits as _sklearn_digits  # slow import: only when used

    bunch = _sklearn_digits()
    x = bunch.data.astype(np.float32) / np.float32(16.0)
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_valid = max(1, round(len(y) * valid_fraction))
    valid, train = order[:n_valid], order[n_valid:]
    return _make("digits", (x[train], y[train]), (x[valid], y[valid]), "sklearn digits")


# ---------------------------------------------------------------------------------------------
# The fast.ai course's mnist.pkl.gz


def load_mnist_pickle(path: str | os.PathLike) -> Dataset:
    """The course's `mnist.pkl.gz` (or an uncompressed `.pkl`): ((x, y) train, (x, y) valid, (x, y) test).

    The test split is ignored. Unpickling runs code from the file: only load files you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected the MNIST pickle, e.g. mnist.pkl.gz)")
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            # The course's file was written by Python 2: latin1 decodes its NumPy byte strings.
            data = pickle.load(f, encoding="latin1")
    except _READ_ERRORS as e:
        raise DataError(f"{path}: could not read the pickle ({type(e).__name__}: {e}); expected a "
                        f"{'gzip-compressed ' if opener is gzip.open else ''}pickle of "
                        f"((x_train, y_train), (x_valid, y_valid), (x_test, y_test))") from e

    expected = "a tuple ((x_train, y_train), (x_valid, y_valid), (x_test, y_test)) of NumPy arrays"
    if not isinstance(data, (tuple, list)) or len(data) < 2:
        raise DataError(f"{path}: expected {expected}, got {type(data).__name__}")
    splits = []
    for which, split in zip(("train", "valid"), data[:2]):
        if not isinstance(split, (tuple, list)) or len(split) != 2:
            raise DataError(f"{path}: expected {expected}; the {which} entry is not an (x, y) pair")
        if not all(isinstance(a, np.ndarray) for a in split):
            raise DataError(f"{path}: expected {expected}; the {which} entry holds "
                            f"{type(split[0]).__name__} and {type(split[1]).__name__}")
        splits.append(split)
    return _make("mnist", splits[0], splits[1], str(path))


# ---------------------------------------------------------------------------------------------
# Original MNIST IDX files

_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "valid_images": "t10k-images-idx3-ubyte",
    "valid_labels": "t10k-labels-idx1-ubyte",
}


def _read_bytes(path: Path) -> bytes:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except _READ_ERRORS as e:
        raise DataError(f"{path}: could not read the file ({type(e).__name__}: {e})") from e


def _read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """Parse one IDX file of unsigned bytes with `ndim` dimensions (gzipped if it ends in `.gz`)."""
    path = Path(path)
    raw = _read_bytes(path)
    # Header: two zero bytes, the element type, the number of dimensions, then big-endian uint32 sizes.
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: bad magic number {raw[:4].hex() or '(empty file)'}; expected an IDX "
                        f"file starting 00 00 08 {ndim:02x}")
    if raw[2] != _IDX_UBYTE or raw[3] != ndim:
        raise DataError(f"{path}: IDX header says type 0x{raw[2]:02x} with {raw[3]} dimensions; "
                        f"expected type 0x{_IDX_UBYTE:02x} (unsigned byte) with {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header: {len(raw)} bytes, expected at least {header}")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != expected:
        raise DataError(f"{path}: expected {expected} data bytes for shape {shape}, "
                        f"got {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx(directory: Path, name: str) -> Path:
    """The file for `name`, also accepting a `.gz` suffix and the dotted `train-images.idx3-ubyte` form."""
    dotted = name.replace("-idx", ".idx")
    for candidate in (name, name + ".gz", dotted, dotted + ".gz"):
        if (directory / candidate).is_file():
            return directory / candidate
    raise DataError(f"{directory / name}: file not found (expected {name} or {name}.gz in {directory})")


def load_mnist_idx(directory: str | os.PathLike) -> Dataset:
    """The original MNIST IDX files in `directory`: train-* become train, t10k-* become valid.

    Images are flattened and scaled from 0..255 to float32 in [0, 1].
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: directory not found (expected a directory of MNIST IDX files)")
    paths = {key: _find_idx(directory, name) for key, name in _IDX_FILES.items()}
    arrays = {key: _read_idx(p, ndim=3 if key.endswith("images") else 1) for key, p in paths.items()}

    splits = []
    for split in ("train", "valid"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        source = f"{paths[f'{split}_images']} and {paths[f'{split}_labels']}"
        if len(images) != len(labels):
            raise DataError(f"{source}: expected as many labels as images, got {len(images)} images "
                            f"and {len(labels)} labels")
        x = images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)
        splits.append((x, labels))
    return _make("mnist", splits[0], splits[1], str(directory))


# ---------------------------------------------------------------------------------------------
# Dispatch and normalisation


def load_dataset(path: str | os.PathLike | None = None) -> Dataset:
    """None: digits; a `.pkl.gz` / `.pkl` file: the course's pickle; a directory: MNIST IDX files."""
    if path is None:
        return load_digits()
    path = Path(path)
    if path.name.endswith((".pkl.gz", ".pkl")):
        return load_mnist_pickle(path)
    if path.is_dir():
        return load_mnist_idx(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory (expected a .pkl.gz / .pkl file or a "
                        f"directory of MNIST IDX files)")
    raise DataError(f"{path}: unknown dataset kind; expected a .pkl.gz or .pkl file (the course's MNIST "
                    f"pickle) or a directory of MNIST IDX files")


def normalize(ds: Dataset) -> Dataset:
    """A new Dataset with train and valid x both scaled by the TRAINING set's scalar mean and std.

    The validation set must use the training statistics, never its own: otherwise it would be shifted
    differently from the data the model learnt on.
    """
    mean, std = ds.x_train.mean(), ds.x_train.std()
    if not torch.isfinite(std) or std == 0:
        raise DataError(f"{ds.name}: cannot normalize, the training images have std {std.item()}")
    return dataclasses.replace(ds, x_train=(ds.x_train - mean) / std, x_valid=(ds.x_valid - mean) / std)
