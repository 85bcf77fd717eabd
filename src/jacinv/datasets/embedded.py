"""Default data shipped inside installed packages, so every run works offline.

    "patches"  natural-image patches from scikit-image's sample images; train and test
               patches come from different source images
    "digits"   scikit-learn's 8x8 handwritten digits (1,797 images)
    "brain"    axial slices of the MNI152 T1 template shipped by nilearn (optional extra)
All are float32 tensors (N, C, H, W) scaled to [0, 1].
"""
from __future__ import annotations

import numpy as np
import torch

from .._checks import choice, positive_int
from ..operators.fourier import center_crop

EMBEDDED = ("patches", "digits", "brain")
# scikit-image sample images, split by source image (greyscale versions of colour ones)
_TRAIN_IMAGES = ("camera", "astronaut", "coffee", "chelsea", "rocket", "brick", "grass", "gravel", "moon", "page")
_TEST_IMAGES = ("coins", "text", "clock", "immunohistochemistry")  # none is a crop of a train image


def _skimage_grey(name: str) -> np.ndarray:
    from skimage import color, data, util

    img = getattr(data, name)()
    if img.ndim == 3:
        img = color.rgb2gray(img[..., :3])
    return util.img_as_float(img).astype(np.float32)


def grid_patches(image: np.ndarray, size: int, stride: int) -> np.ndarray:
    """(N, size, size) patches of a 2-D image on a regular grid."""
    h, w = image.shape
    if h < size or w < size:
        raise ValueError(f"image of shape {image.shape} is smaller than patch size {size}")
    windows = np.lib.stride_tricks.sliding_window_view(image, (size, size))[::stride, ::stride]
    return windows.reshape(-1, size, size)


def natural_patches(split: str, patch_size: int = 28, stride: int | None = None,
                    min_std: float = 0.01) -> torch.Tensor:
    """Grid patches of the split's source images; flat patches (std < ``min_std``, e.g. the
    black sky of the astronomy images) are left out, since they carry no image to recover."""
    stride = positive_int(stride if stride is not None else patch_size, "stride")
    names = _TRAIN_IMAGES if split == "train" else _TEST_IMAGES
    patches = np.concatenate([grid_patches(_skimage_grey(n), patch_size, stride) for n in names])
    patches = patches[patches.reshape(len(patches), -1).std(1) >= min_std]
    return torch.from_numpy(np.ascontiguousarray(patches))[:, None]


def sklearn_digits(split: str) -> torch.Tensor:
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError("embedded data 'digits' needs scikit-learn: pip install 'jacinv[data]'") from err
    images = load_digits().images.astype(np.float32) / 16.0
    cut = int(0.8 * len(images))  # the file's own order: deterministic
    part = images[:cut] if split == "train" else images[cut:]
    return torch.from_numpy(part)[:, None]


def mni152_slices(split: str, step: int = 1, crop=(224, 192), downsample: int = 1) -> torch.Tensor:
    """Axial slices of the 1 mm MNI152 T1 template holding brain: the central 80% of the slices
    whose mass exceeds 20% of the largest; the test split is every 6th of them (16 slices), and
    the neighbours of test slices are left out of training (49 slices), so no training slice is
    1 mm from a test slice.

    Slices are centre-cropped to ``crop`` (divisible by 16 for the U-Net) and then averaged
    over ``downsample`` x ``downsample`` blocks (2 gives 112 x 96 images)."""
    try:
        from nilearn.datasets import load_mni152_template
    except ImportError as err:
        raise ImportError("embedded data 'brain' needs nilearn: pip install 'jacinv[data]'") from err
    volume = np.asarray(load_mni152_template(resolution=1).get_fdata(), dtype=np.float32)
    volume = volume / volume.max()
    axial = np.transpose(volume, (2, 1, 0))[:, ::-1]  # (z, y, x), anterior up
    mass = axial.reshape(len(axial), -1).sum(1)
    z = np.flatnonzero(mass > 0.2 * mass.max())
    z = z[int(0.1 * len(z)): int(0.9 * len(z))]
    test = set(z[3::6].tolist())
    if split == "test":
        chosen = sorted(test)
    else:
        chosen = [k for k in z.tolist() if k not in test and k - 1 not in test and k + 1 not in test]
    slices = center_crop(torch.from_numpy(np.ascontiguousarray(axial[chosen[::positive_int(step, "step")]])),
                         tuple(crop))[:, None]
    factor = positive_int(downsample, "downsample")
    return torch.nn.functional.avg_pool2d(slices, factor) if factor > 1 else slices


def embedded_dataset(name: str, split: str = "train", **kwargs) -> torch.Tensor:
    """Float tensor (N, C, H, W) in [0, 1] of the embedded data set ``name`` (see module doc)."""
    choice(name, "name", EMBEDDED)
    choice(split, "split", ("train", "test"))
    loader = {"patches": natural_patches, "digits": sklearn_digits, "brain": mni152_slices}[name]
    return loader(split, **kwargs).float()
