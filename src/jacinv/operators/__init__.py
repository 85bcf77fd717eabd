"""Forward operators of y = A x + n with known spectral norms, and the plug-in registry."""
from .base import LinearOperator, check_adjoint, check_linearity, nonzero_norm
from .blur import BlurDecimate
from .composed import ComposedOperator
from .fourier import center_crop, center_pad, complex_abs, fft2c, ifft2c
from .identity import Identity
from .matrix import GaussianCS, MatrixOperator
from .measured import MeasuredPart
from .registry import build_operator, partially_measuring_operators, register_operator, registered_operators

register_operator("gaussian_cs")(GaussianCS)
register_operator("blur_decimate")(BlurDecimate)
register_operator("identity")(Identity)
register_operator("matrix")(MatrixOperator)

# MRI lives in jacinv.mri, which builds on the modules above; its operators are re-exported here
from ..mri import KSpaceSubsample, MeasuredKSpace, MultiCoilKSpace, make_mask, sampled_columns  # noqa: E402

register_operator("kspace")(KSpaceSubsample)
register_operator("multicoil_kspace")(MultiCoilKSpace)

__all__ = [
    "LinearOperator", "ComposedOperator", "GaussianCS", "BlurDecimate", "KSpaceSubsample", "MeasuredKSpace", "sampled_columns", "Identity",
    "MatrixOperator", "register_operator", "build_operator", "registered_operators", "partially_measuring_operators", "check_adjoint", "check_linearity", "nonzero_norm",
    "MeasuredPart", "make_mask", "fft2c", "ifft2c", "complex_abs", "center_crop", "center_pad", "MultiCoilKSpace",
]
