"""The linear operator interface every forward model of jacinv speaks.

A ``LinearOperator`` maps tensors of shape (B, *in_shape) to (B, *out_shape).
Subclasses implement ``forward``; ``adjoint`` defaults to the vector-Jacobian
product of the (linear) forward map, so a plug-in needs nothing else.  Every
public call checks the shape of its input, whoever implemented it.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import scipy.sparse.linalg
import torch
from torch import nn

from .._checks import as_shape, batched_tensor, finite_number, positive_int


def conjugate_gradient(matvec, b: torch.Tensor, iters: int = 200, tol: float = 1e-10) -> torch.Tensor:
    """Solve matvec(x) = b per sample of the batch b (B, ...) for a symmetric positive semi-definite
    map, from x = 0; a sample stops (and stays put) once its residual is below ``tol`` times its initial
    size, ``tol`` raised to 10 x the dtype's epsilon (iterating on rounding noise breaks CG down).
    On a singular system with b in its range the iterates stay there: the minimum-norm solution."""
    positive_int(iters, "iters")
    tiny = torch.finfo(b.dtype).tiny
    tol = max(tol, 10 * torch.finfo(b.dtype).eps)
    dims = tuple(range(1, b.dim()))
    x, r = torch.zeros_like(b), b.clone()
    p, rs = r.clone(), (r * r).sum(dims, keepdim=True)
    stop = (tol**2) * rs.clamp_min(tiny)
    for _ in range(iters):
        active = rs > stop
        if not bool(active.any()):
            break
        ap = matvec(p)
        denom = (p * ap).sum(dims, keepdim=True)
        alpha = torch.where(active & (denom > 0), rs / denom.clamp_min(tiny), torch.zeros_like(rs))
        x, r = x + alpha * p, r - alpha * ap
        rs_new = (r * r).sum(dims, keepdim=True)
        p = r + torch.where(rs > 0, rs_new / rs.clamp_min(tiny), torch.zeros_like(rs)) * p
        rs = rs_new
    return x


def _checked(method, shape_attr: str, arg: str):
    """Wrap ``method(self, t)`` so that ``t`` must have shape (B, *self.<shape_attr>)."""

    @functools.wraps(method)
    def wrapper(self, t, *args, **kwargs):
        batched_tensor(t, getattr(self, shape_attr), f"{type(self).__name__}.{method.__name__}: {arg}")
        return method(self, t, *args, **kwargs)

    wrapper._jacinv_checked = True
    return wrapper


class LinearOperator(nn.Module):
    """A linear map A: R^{in_shape} -> R^{out_shape} acting on batches.

    Attributes:
        in_shape, out_shape: shapes without the batch dimension.
        spectral_norm_is_exact: True when ``spectral_norm()`` is a closed form.
        varies_per_sample: True when each measurement has its own A_i (a mask per fastMRI volume, coil maps per
            slice); ``at(y)`` then gives the batch's operators.
    """

    spectral_norm_is_exact: bool = False
    varies_per_sample: bool = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name, shape_attr, arg in (("forward", "in_shape", "x"), ("adjoint", "out_shape", "y")):
            method = cls.__dict__.get(name)
            if method is not None and not getattr(method, "_jacinv_checked", False):
                setattr(cls, name, _checked(method, shape_attr, arg))

    def __init__(self, in_shape, out_shape):
        super().__init__()
        self.in_shape = as_shape(in_shape, "in_shape")
        self.out_shape = as_shape(out_shape, "out_shape")
        self._norm_cache: float | None = None

    # ------------------------------------------------------------------ maps
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x)")

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """A^T y, (B, *out_shape) -> (B, *in_shape), by a vector-Jacobian product of ``forward``.

        Differentiable with respect to ``y`` when ``y`` requires grad.
        """
        keep_graph = torch.is_grad_enabled() and y.requires_grad
        with torch.enable_grad():
            x0 = torch.zeros((y.shape[0], *self.in_shape), dtype=y.dtype, device=y.device, requires_grad=True)
            (xa,) = torch.autograd.grad(self.forward(x0), x0, grad_outputs=y, create_graph=keep_graph)
        return xa

    def at(self, y: torch.Tensor) -> "LinearOperator":
        """The operators that measured the batch y (B, *out_shape), row i's A_i, as one operator on batches of
        those B rows.  Here one A measures every sample: A itself.  Operators whose sampling or coil maps differ per
        measurement (``varies_per_sample``) override this; models, baselines and penalties apply ``A.at(y)``."""
        return self

    def measured_part(self, e: torch.Tensor) -> torch.Tensor:
        """``e`` (B, *out_shape) with the entries that no measurement carries set to zero (for k-space masks: the
        unsampled positions, which a scanner never records): the part of a perturbation that a real measurement
        can take.  Here every entry is measured: ``e`` itself."""
        return e

    @classmethod
    def measures_every_entry(cls) -> bool:
        """Whether every entry of y is recorded (``measured_part`` not overridden: P is the identity)."""
        return cls.measured_part is LinearOperator.measured_part

    def measured_projector(self) -> "LinearOperator":
        """P, ``measured_part`` as an operator on (B, *out_shape): ``MeasuredPart(self)``, or the identity where every
        entry is measured (then J(y) P is J(y) itself, and penalties share its work)."""
        from .identity import Identity
        from .measured import MeasuredPart

        if self.measures_every_entry():
            return Identity(self.out_shape)
        return MeasuredPart(self)

    def gram(self, x: torch.Tensor) -> torch.Tensor:
        """A^T A x, (B, *in_shape) -> (B, *in_shape)."""
        return self.adjoint(self.forward(x))

    def __matmul__(self, other: "LinearOperator") -> "LinearOperator":
        from .composed import ComposedOperator

        return ComposedOperator(self, other)

    # ----------------------------------------------------------------- norms
    def spectral_norm(self) -> float:
        """||A||_2, the largest singular value.

        Subclasses with a closed form override this and set ``spectral_norm_is_exact``;
        here it is a cached power-method estimate (a lower bound, converged to 1e-7).
        """
        if self._norm_cache is None:
            self._norm_cache = self.estimate_spectral_norm(iters=1000, tol=1e-7)
        return self._norm_cache

    def estimate_spectral_norm(self, iters: int = 100, tol: float = 1e-6, seed: int = 0) -> float:
        """||A||_2 by the power method on A^T A, stopping at relative change < ``tol``.

        Runs in float64 on the operator's device; returns a float (never the squared norm).
        """
        positive_int(iters, "iters")
        finite_number(tol, "tol", low=0.0)
        device = self._device()
        g = torch.Generator(device="cpu").manual_seed(seed)
        v = torch.randn((1, *self.in_shape), generator=g, dtype=torch.float64).to(device)
        v = v / v.norm()
        sigma = 0.0
        with torch.no_grad():
            for _ in range(iters):
                w = self.gram(v)
                w_norm = float(w.norm())
                if w_norm == 0.0:
                    return 0.0
                new_sigma = math.sqrt(w_norm)  # ||A^T A v|| -> sigma^2 for unit v
                v = w / w_norm
                if abs(new_sigma - sigma) <= tol * new_sigma:
                    sigma = new_sigma
                    break
                sigma = new_sigma
            # Rayleigh quotient at the final vector: ||A v|| <= ||A||, a certified lower bound.
            return float(self.forward(v).norm())

    # ------------------------------------------------------------ inversion
    def pseudo_inverse(self, y: torch.Tensor, iters: int = 200, tol: float = 1e-10) -> torch.Tensor:
        """Minimum-norm least-squares solution A^+ y, (B, *out_shape) -> (B, *in_shape).

        Conjugate gradients on the normal equations A^T A x = A^T y from x = 0 (the
        iterates stay in range(A^T), so the limit is the minimum-norm solution), run in
        float64 and returned in y's dtype.
        """
        batched_tensor(y, self.out_shape, "y")
        with torch.no_grad():
            return conjugate_gradient(self.gram, self.adjoint(y.double()), iters, tol).to(y.dtype)

    # ----------------------------------------------------------- matrices
    def to_dense(self, dtype: torch.dtype = torch.float64, chunk: int = 256) -> torch.Tensor:
        """The matrix of A, shape (prod(out_shape), prod(in_shape)); for small cases only."""
        p = math.prod(self.in_shape)
        device = self._device()
        cols = []
        with torch.no_grad():
            for start in range(0, p, chunk):
                stop = min(p, start + chunk)
                basis = torch.zeros((stop - start, p), dtype=dtype, device=device)
                basis[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
                cols.append(self.forward(basis.reshape(-1, *self.in_shape)).reshape(stop - start, -1))
        return torch.cat(cols, 0).T.contiguous()

    def as_scipy(self) -> scipy.sparse.linalg.LinearOperator:
        """A scipy LinearOperator on flattened float64 vectors (for scipy's solvers and svds)."""
        p, q = math.prod(self.in_shape), math.prod(self.out_shape)
        device = self._device()

        def apply(fn, shape, v):
            t = torch.as_tensor(np.asarray(v, dtype=np.float64).reshape(-1), device=device).reshape(1, *shape)
            with torch.no_grad():
                return fn(t).reshape(-1).cpu().numpy()

        return scipy.sparse.linalg.LinearOperator(
            (q, p),
            matvec=lambda v: apply(self.forward, self.in_shape, v),
            rmatvec=lambda v: apply(self.adjoint, self.out_shape, v),
            dtype=np.float64,
        )

    # ------------------------------------------------------------ state
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        """Nothing: an operator is rebuilt from its configuration (its matrix, mask or PSF from the
        seed), so the models and regularisers that hold one never save it, and a checkpoint can be
        evaluated with another operator (e.g. another acceleration) without overriding it."""

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """Nothing to load; entries under this prefix (checkpoints written before operators stopped
        saving their buffers) are ignored."""

    def _device(self) -> torch.device:
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, out_shape={self.out_shape}"


LinearOperator.adjoint = _checked(LinearOperator.adjoint, "out_shape", "y")


def check_adjoint(operator: LinearOperator, n_trials: int = 3, seed: int = 0,
                  dtype: torch.dtype = torch.float64) -> float:
    """Worst relative error of the dot test <A x, y> = <x, A^T y> over random draws.

    The error is |<Ax, y> - <x, A^T y>| / (||A x|| ||y|| + ||x|| ||A^T y||), which is
    scale-free and does not blow up when the inner product happens to be small.
    """
    if not isinstance(operator, LinearOperator):
        raise TypeError(f"operator must be a LinearOperator, got {type(operator).__name__}")
    positive_int(n_trials, "n_trials")
    g = torch.Generator(device="cpu").manual_seed(seed)
    device = operator._device()
    worst = 0.0
    with torch.no_grad():
        for _ in range(n_trials):
            x = torch.randn((2, *operator.in_shape), generator=g, dtype=dtype).to(device)
            y = torch.randn((2, *operator.out_shape), generator=g, dtype=dtype).to(device)
            ax, aty = operator(x), operator.adjoint(y)
            lhs = (ax * y).flatten(1).sum(1)
            rhs = (x * aty).flatten(1).sum(1)
            scale = ax.flatten(1).norm(dim=1) * y.flatten(1).norm(dim=1) + x.flatten(1).norm(dim=1) * aty.flatten(1).norm(dim=1)
            err = (lhs - rhs).abs() / scale.clamp_min(torch.finfo(dtype).tiny)
            worst = max(worst, float(err.max()))
    return worst


def check_linearity(operator: LinearOperator, seed: int = 0, dtype: torch.dtype = torch.float64) -> float:
    """Relative error of A(a x + b z) = a A x + b A z for random x, z and a = 0.7, b = -1.3:
    ||A(a x + b z) - a A x - b A z|| / (|a| ||A x|| + |b| ||A z||); 0 for a linear map (NaN if A maps
    both draws to zero)."""
    if not isinstance(operator, LinearOperator):
        raise TypeError(f"operator must be a LinearOperator, got {type(operator).__name__}")
    g = torch.Generator(device="cpu").manual_seed(seed)
    x, z = torch.randn((2, 1, *operator.in_shape), generator=g, dtype=dtype).to(operator._device())
    a, b = 0.7, -1.3
    with torch.no_grad():
        ax, az, mixed = operator(x), operator(z), operator(a * x + b * z)
    scale = abs(a) * float(ax.norm()) + abs(b) * float(az.norm())
    return float((mixed - a * ax - b * az).norm()) / scale if scale > 0 else math.nan


def refuse_nonlinear(operator: LinearOperator, name: str, rtol: float = 1e-4) -> LinearOperator:
    """``operator`` if it is linear and not zero (``check_linearity``), else a ValueError naming ``name``."""
    error = check_linearity(operator)
    if math.isnan(error):
        raise ValueError(f"operator {name!r} maps random signals to zero; expected a non-zero linear map")
    if error > rtol:
        raise ValueError(f"operator {name!r} is not linear: A(a x + b z) differs from a A x + b A z by "
                         f"{error:.3g} (relative), expected at most {rtol:g}; jacinv solves linear inverse problems")
    return operator


def nonzero_norm(operator: LinearOperator, who: str) -> float:
    """``operator.spectral_norm()``, refused (naming ``who``, the model that scales by it) when zero or not finite."""
    norm = operator.spectral_norm()
    if not (math.isfinite(norm) and norm > 0):
        raise ValueError(f"{who} scales by 1/||A||^2, but the operator {type(operator).__name__} has ||A|| = {norm}; "
                         "expected a non-zero operator")
    return norm
