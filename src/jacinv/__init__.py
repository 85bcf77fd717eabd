"""jacinv: model-aware Jacobian regularisation for learned reconstruction in y = A x + n."""
from . import operators  # noqa: F401  (first: jacinv.mri builds on the operator base and registers its operators there)

__version__ = "0.1.0"
