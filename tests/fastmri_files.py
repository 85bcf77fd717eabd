"""Small files in fastMRI's schemas.  Single-coil: 'kspace' (slices, H, W) complex64 of images with a smooth
phase, 'reconstruction_esc' (the centre crop of |F^-1 kspace|).  Multi-coil (``coils``): 'kspace' (slices, coils,
H, W) of those images seen by birdcage coils, 'reconstruction_rss' (the centre crop of the RSS of the coil
images).  Both: the 'max' attribute, and for challenge-style files their own 'mask' (the k-space is then
undersampled)."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from jacinv.mri import birdcage_maps, rss
from jacinv.operators import center_crop, complex_abs, fft2c, ifft2c, make_mask

SHAPE = (32, 24)
CROP = 16


def write_volume(path: Path, seed: int, slices: int = 3, own_mask: bool = False, coils: int | None = None,
                 shape: tuple[int, int] = SHAPE) -> None:
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    images = []
    for _ in range(slices):
        image = np.zeros(shape)
        for _ in range(4):
            cy, cx, r = rng.uniform(0.3 * h, 0.7 * h), rng.uniform(0.3 * w, 0.7 * w), rng.uniform(2, 6)
            image += rng.uniform(0.3, 1.0) * (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r)
        images.append(image * np.exp(1j * (0.3 * yy / h + 0.2 * xx / w + rng.uniform(0, 1))))
    images = torch.view_as_real(torch.from_numpy(np.stack(images).astype(np.complex64)))
    if coils is None:
        kspace = fft2c(images)
        target = center_crop(complex_abs(ifft2c(kspace)), (CROP, CROP)).numpy()
    else:
        maps = birdcage_maps(coils, shape)
        coil_images = torch.stack((images[:, None, ..., 0] * maps[..., 0] - images[:, None, ..., 1] * maps[..., 1],
                                   images[:, None, ..., 0] * maps[..., 1] + images[:, None, ..., 1] * maps[..., 0]), -1)
        kspace = fft2c(coil_images)
        target = center_crop(rss(coil_images)[:, 0], (CROP, CROP)).numpy()
    kspace = torch.view_as_complex(kspace.contiguous()).numpy()
    with h5py.File(path, "w") as fh:
        if own_mask:
            mask = make_mask("equispaced", w, 4, 0.08, seed=0, key=path.name).numpy()
            fh["mask"] = mask
            kspace = kspace * mask
        fh["kspace"] = kspace
        fh["reconstruction_esc" if coils is None else "reconstruction_rss"] = target
        fh.attrs["max"] = float(target.max())
        fh.attrs["acquisition"] = "CORPD_FBK"


def write_folders(root: Path, n_train: int, n_val: int = 2, n_test: int = 2, coils: int | None = None) -> dict[str, Path]:
    """train/ val/ test/ folders (multi-coil files with ``coils``); the second test volume carries its own mask."""
    folders = {}
    for split, count in (("train", n_train), ("val", n_val), ("test", n_test)):
        folders[split] = root / split
        folders[split].mkdir(parents=True, exist_ok=True)
        for v in range(count):
            write_volume(folders[split] / f"{split}{v:03d}.h5", seed=1000 * len(split) + v,
                         own_mask=split == "test" and v == 1, coils=coils)
    return folders
