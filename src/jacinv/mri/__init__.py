"""Magnetic resonance imaging: multi-coil k-space operators and coil sensitivities.

``MultiCoilKSpace`` (registered as the operator "multicoil_kspace") is y = M F S x with coil maps S;
``coils`` makes and checks the maps (analytic birdcage maps for simulated data, root-sum-of-squares).
"""
from .. import operators  # noqa: F401 (first: it registers MultiCoilKSpace, importing .multicoil)
from .coils import birdcage_maps, check_maps, normalise_maps, rss
from .multicoil import MultiCoilKSpace

__all__ = ["MultiCoilKSpace", "birdcage_maps", "check_maps", "normalise_maps", "rss"]
