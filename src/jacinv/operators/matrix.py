"""Dense-matrix operators: any matrix, and Gaussian compressed sensing."""
from __future__ import annotations

import math

import torch

from .._checks import as_shape, batched_tensor, finite_number, finite_tensor, positive_int
from .base import LinearOperator


class MatrixOperator(LinearOperator):
    """y = M x for a dense (q, p) matrix M; x has shape (B, *in_shape) with prod(in_shape) = p.

    ``out_shape`` is (q,) unless given.  The matrix is kept as a buffer in the dtype
    it was given (float tensors) and cast to the input's dtype and device per call.
    """

    spectral_norm_is_exact = True

    def __init__(self, matrix, in_shape=None, out_shape=None):
        matrix = torch.as_tensor(matrix)
        if matrix.dim() != 2:
            raise ValueError(f"matrix must be 2-D (q, p), got shape {tuple(matrix.shape)}")
        if matrix.is_complex():
            raise TypeError(f"matrix must be real, got {matrix.dtype}; write a complex matrix M as the real block "
                            "matrix [[Re M, -Im M], [Im M, Re M]] acting on (real, imaginary) stacked signals")
        if not matrix.is_floating_point():
            matrix = matrix.to(torch.get_default_dtype())
        finite_tensor(matrix, "matrix")
        q, p = matrix.shape
        in_shape = (p,) if in_shape is None else as_shape(in_shape, "in_shape")
        out_shape = (q,) if out_shape is None else as_shape(out_shape, "out_shape")
        if math.prod(in_shape) != p:
            raise ValueError(f"in_shape {in_shape} has {math.prod(in_shape)} entries, expected matrix columns p = {p}")
        if math.prod(out_shape) != q:
            raise ValueError(f"out_shape {out_shape} has {math.prod(out_shape)} entries, expected matrix rows q = {q}")
        super().__init__(in_shape, out_shape)
        self.register_buffer("matrix", matrix.contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.matrix.to(dtype=x.dtype, device=x.device)
        return (x.reshape(x.shape[0], -1) @ m.T).reshape(x.shape[0], *self.out_shape)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        m = self.matrix.to(dtype=y.dtype, device=y.device)
        return (y.reshape(y.shape[0], -1) @ m).reshape(y.shape[0], *self.in_shape)

    def spectral_norm(self) -> float:
        """Largest singular value of the matrix (float64 SVD, cached)."""
        if self._norm_cache is None:
            self._norm_cache = float(torch.linalg.matrix_norm(self.matrix.double().cpu(), ord=2))
        return self._norm_cache

    def pseudo_inverse(self, y: torch.Tensor) -> torch.Tensor:
        """A^+ y through the Moore-Penrose pseudo-inverse of the matrix (float64, cached)."""
        if not hasattr(self, "_pinv"):
            self._pinv = torch.linalg.pinv(self.matrix.double())
        pinv = self._pinv.to(dtype=y.dtype, device=y.device)
        flat = batched_tensor(y, self.out_shape, "y").reshape(y.shape[0], -1)
        return (flat @ pinv.T).reshape(y.shape[0], *self.in_shape)

    def to_dense(self, dtype: torch.dtype = torch.float64, chunk: int = 256) -> torch.Tensor:
        return self.matrix.to(dtype)


class GaussianCS(MatrixOperator):
    """Compressed sensing y = A x with A in R^{q x p}, i.i.d. N(0, 1/q) entries.

    Args:
        in_shape: signal shape, e.g. (1, 28, 28); p = prod(in_shape).
        n_measurements: q >= 1.
        seed: the same seed gives the same matrix on every machine (CPU generator).
    """

    def __init__(self, in_shape, n_measurements: int, seed: int = 0):
        in_shape = as_shape(in_shape, "in_shape")
        q = positive_int(n_measurements, "n_measurements")
        positive_int(seed, "seed", minimum=0)
        g = torch.Generator(device="cpu").manual_seed(seed)
        matrix = torch.randn((q, math.prod(in_shape)), generator=g, dtype=torch.float64) / math.sqrt(q)
        super().__init__(matrix.to(torch.get_default_dtype()), in_shape=in_shape)
        self.n_measurements, self.seed = q, seed

    def spectral_norm_bound(self, confidence: float = 0.99) -> float:
        """Davidson-Szarek bound: ||A|| <= 1 + sqrt(p/q) + t/sqrt(q) with probability >= confidence,
        where t = sqrt(2 log(1 / (1 - confidence))) so that P(exceed) <= exp(-t^2/2)."""
        confidence = finite_number(confidence, "confidence", low=0.0, high=1.0, low_open=True, high_open=True)
        q, p = self.matrix.shape
        t = math.sqrt(2.0 * math.log(1.0 / (1.0 - confidence)))
        return 1.0 + math.sqrt(p / q) + t / math.sqrt(q)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, n_measurements={self.n_measurements}, seed={self.seed}"
