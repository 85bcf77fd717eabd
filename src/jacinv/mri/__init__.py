"""Magnetic resonance imaging: multi-coil k-space operators and coil sensitivities.

``MultiCoilKSpace`` (registered as the operator "multicoil_kspace") is y = M F S x with coil maps S;
``coils`` makes and checks the maps (analytic birdcage maps for simulated data, root-sum-of-squares).
"""
from ..operators import KSpaceSubsample
from .coils import birdcage_maps, check_maps, normalise_maps, rss
from .multicoil import MultiCoilKSpace


def is_kspace(operator) -> bool:
    """Whether ``operator`` measures MRI k-space (single- or multi-coil): MRI's metrics, baselines and nets apply."""
    return isinstance(operator, (KSpaceSubsample, MultiCoilKSpace))


__all__ = ["MultiCoilKSpace", "birdcage_maps", "check_maps", "normalise_maps", "rss", "is_kspace"]
