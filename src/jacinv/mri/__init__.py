"""Magnetic resonance imaging, in one place: Cartesian k-space operators (single- and multi-coil), column masks,
coil sensitivities, fastMRI files and their (y, x) pairs, fastMRI's volume metrics and its submission format.

``KSpaceSubsample`` ("kspace") is y = M F x, ``MeasuredKSpace`` the same with each measurement's own mask (fastMRI
files), ``MultiCoilKSpace`` ("multicoil_kspace") y = M F S x with coil maps S, ``MeasuredMultiCoilKSpace`` the same with
each measurement's mask and ACS coil maps (fastMRI multi-coil files); ``coils`` makes, estimates and checks the maps.
Operators whose A differs per measurement give the batch's operators by ``at(y)`` (``LinearOperator.at``).
The operators are registered, and re-exported by ``jacinv.operators``; the fastMRI readers by ``jacinv.datasets``.
"""
from .coils import acs_coil_images, acs_columns, acs_maps, birdcage_maps, check_maps, normalise_maps, rss, unit_rss
from .export import ReconstructionWriter
from .fastmri import FastMRISliceDataset
from .kspace import KSpaceSubsample, MeasuredKSpace, mirror_columns
from .masks import PATTERNS, ColumnSampling, center_columns, column_mask, make_mask, sampled_columns
from .metrics import VolumeMetrics, volume_metrics
from .multicoil import MeasuredMultiCoilKSpace, MultiCoilKSpace
from .pairs import KSPACE_MODES, FastMRIPairs, kspace_operator


def is_kspace(operator) -> bool:
    """Whether ``operator`` measures MRI k-space (single- or multi-coil): MRI's metrics, baselines and nets apply."""
    return isinstance(operator, (KSpaceSubsample, MultiCoilKSpace))


__all__ = ["KSpaceSubsample", "MeasuredKSpace", "MultiCoilKSpace", "MeasuredMultiCoilKSpace", "ColumnSampling",
           "column_mask", "acs_columns", "acs_maps", "acs_coil_images", "unit_rss", "sampled_columns", "mirror_columns", "make_mask",
           "center_columns", "PATTERNS", "birdcage_maps", "check_maps", "normalise_maps", "rss", "is_kspace",
           "FastMRISliceDataset", "FastMRIPairs", "kspace_operator", "KSPACE_MODES", "VolumeMetrics", "volume_metrics",
           "ReconstructionWriter"]
