"""Magnetic resonance imaging, in one place: Cartesian k-space operators (single- and multi-coil), column masks,
coil sensitivities, fastMRI files and their (y, x) pairs, fastMRI's volume metrics and its submission format.

``KSpaceSubsample`` ("kspace") is y = M F x, ``MeasuredKSpace`` the same with each measurement's own mask (fastMRI
files), ``MultiCoilKSpace`` ("multicoil_kspace") y = M F S x with coil maps S; ``coils`` makes and checks the maps.
The operators are registered, and re-exported by ``jacinv.operators``; the fastMRI readers by ``jacinv.datasets``.
"""
from .coils import birdcage_maps, check_maps, normalise_maps, rss
from .export import ReconstructionWriter
from .fastmri import FastMRISliceDataset
from .kspace import KSpaceSubsample, MeasuredKSpace, mirror_columns, sampled_columns
from .masks import PATTERNS, center_columns, make_mask
from .metrics import VolumeMetrics, volume_metrics
from .multicoil import MultiCoilKSpace
from .pairs import KSPACE_MODES, FastMRIPairs, kspace_operator


def is_kspace(operator) -> bool:
    """Whether ``operator`` measures MRI k-space (single- or multi-coil): MRI's metrics, baselines and nets apply."""
    return isinstance(operator, (KSpaceSubsample, MultiCoilKSpace))


__all__ = ["KSpaceSubsample", "MeasuredKSpace", "MultiCoilKSpace", "sampled_columns", "mirror_columns", "make_mask",
           "center_columns", "PATTERNS", "birdcage_maps", "check_maps", "normalise_maps", "rss", "is_kspace",
           "FastMRISliceDataset", "FastMRIPairs", "kspace_operator", "KSPACE_MODES", "VolumeMetrics", "volume_metrics",
           "ReconstructionWriter"]
