"""Data: real loaders (MNIST IDX, image folders, fastMRI HDF5, from jacinv.mri), embedded defaults, and the paired
(y, x, index) data set of an inverse problem."""
from .embedded import EMBEDDED, embedded_dataset
from .folder import folder_patches, list_images
from .idx import FASHION_MNIST_DIR, find_idx, load_idx, load_mnist_images
from .paired import InverseProblemDataset
from ..mri import KSPACE_MODES, FastMRIPairs, FastMRISliceDataset, kspace_operator
from ..operators.fourier import center_crop

__all__ = ["load_idx", "find_idx", "load_mnist_images", "FASHION_MNIST_DIR", "embedded_dataset", "EMBEDDED",
           "folder_patches", "list_images", "FastMRISliceDataset", "center_crop", "InverseProblemDataset",
           "FastMRIPairs", "kspace_operator", "KSPACE_MODES"]
