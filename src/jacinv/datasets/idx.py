"""MNIST-format IDX files (MNIST, Fashion-MNIST), plain or gzipped."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_PREFIX = {"train": "train", "test": "t10k"}


def load_idx(path) -> np.ndarray:
    """Read an IDX file (``*-ubyte`` or ``*-ubyte.gz``): images (N, 28, 28) uint8, labels (N,) uint8."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"IDX file {path} cannot be read ({err}); expected an IDX file, optionally gzipped") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise ValueError(f"IDX file {path} has no valid magic number (got {data[:4].hex()}); expected 0000 08 0n")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
    dtype = np.dtype(_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(f"IDX file {path} is truncated or padded: header says shape {shape} "
                         f"({expected} bytes), file holds {len(data) - header}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def find_idx(root, split: str = "train", kind: str = "images") -> Path:
    """Path of ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` under ``root``."""
    if split not in _PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if kind not in ("images", "labels"):
        raise ValueError(f"kind must be 'images' or 'labels', got {kind!r}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"IDX directory {root} does not exist")
    stem = f"{_PREFIX[split]}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
    for name in (stem, stem + ".gz"):
        for candidate in (root / name, *root.glob(f"**/{name}")):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"no {stem}[.gz] under {root}; expected MNIST-format IDX files")


def load_mnist_images(root, split: str = "train") -> np.ndarray:
    """(N, 28, 28) uint8 images of an MNIST-format directory (MNIST or Fashion-MNIST)."""
    return load_idx(find_idx(root, split, "images"))
