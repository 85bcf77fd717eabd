"""Image folders (DIV2K, BSD300/500, Set5/Set14, your own): PNG/JPEG/TIFF, any depth of subfolders."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from .._checks import choice, positive_int
from .embedded import grid_patches

BT601_LUMA = (0.299, 0.587, 0.114)  # Y' = 0.299 R + 0.587 G + 0.114 B
EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def list_images(root) -> list[Path]:
    """Sorted image files under ``root`` (recursively)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)
    if not files:
        raise ValueError(f"image folder {root} holds no images; expected files ending in {list(EXTENSIONS)}")
    return files


def read_image(path: Path, channels: int) -> np.ndarray:
    """(C, H, W) float32 in [0, 1]; ``channels`` 1 (BT.601 luma Y' of colour images) or 3 (RGB)."""
    from skimage import io, util

    try:
        img = io.imread(path)
    except Exception as err:  # skimage raises many types for broken files
        raise ValueError(f"image file {path} cannot be read ({type(err).__name__}: {err})") from err
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    if img.ndim not in (2, 3):
        raise ValueError(f"image file {path} has shape {img.shape}; expected (H, W) or (H, W, 3)")
    img = util.img_as_float32(img)
    if channels == 1:
        img = img @ np.array(BT601_LUMA, dtype=img.dtype) if img.ndim == 3 else img
        return img[None].astype(np.float32)
    img = np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img
    return np.moveaxis(img, -1, 0).astype(np.float32)


def folder_patches(root, patch_size: int, channels: int = 1, mode: str = "grid", stride: int | None = None,
                   patches_per_image: int = 16, split: str = "all", test_fraction: float = 0.2, seed: int = 0,
                   skip_corrupt: bool = False) -> torch.Tensor:
    """Patches (N, C, patch_size, patch_size) in [0, 1] from the images under ``root``.

    ``mode`` "grid" (stride ``stride``, default non-overlapping) or "random"
    (``patches_per_image`` per image, from ``seed``).  ``split`` "train"/"test" splits by
    image file (a seeded permutation of the sorted list), so no test patch shares an
    image with a training patch; "all" keeps every image.  A file that cannot be read
    stops the run unless ``skip_corrupt`` (then it is skipped with a warning).
    """
    positive_int(patch_size, "patch_size")
    choice(channels, "channels", (1, 3))
    choice(mode, "mode", ("grid", "random"))
    choice(split, "split", ("train", "test", "all"))
    files = list_images(root)
    if split != "all":
        order = np.random.default_rng(seed).permutation(len(files))
        n_test = max(1, int(round(test_fraction * len(files))))
        if n_test >= len(files):
            raise ValueError(f"image folder {root} has {len(files)} image(s): too few to split off a test set")
        keep = order[:n_test] if split == "test" else order[n_test:]
        files = [files[k] for k in sorted(keep)]
    rng = np.random.default_rng(seed + 1)
    out = []
    for path in files:
        try:
            img = read_image(path, channels)
        except ValueError as err:
            if not skip_corrupt:
                raise
            warnings.warn(f"skipping {path}: {err}", stacklevel=2)
            continue
        _, h, w = img.shape
        if h < patch_size or w < patch_size:
            raise ValueError(f"image file {path} ({h}x{w}) is smaller than patch_size {patch_size}")
        if mode == "grid":
            step = positive_int(stride if stride is not None else patch_size, "stride")
            out.append(np.stack([grid_patches(c, patch_size, step) for c in img], axis=1))
        else:
            tops = rng.integers(0, h - patch_size + 1, patches_per_image)
            lefts = rng.integers(0, w - patch_size + 1, patches_per_image)
            out.append(np.stack([img[:, t: t + patch_size, l: l + patch_size] for t, l in zip(tops, lefts)]))
    if not out:
        raise ValueError(f"no readable images under {root}")
    return torch.from_numpy(np.concatenate(out))
