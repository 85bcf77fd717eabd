"""jacinv: model-aware Jacobian regularisation for learned reconstruction in y = A x + n."""
__version__ = "0.1.0"
