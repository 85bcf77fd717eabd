"""Multi-coil Cartesian MRI: y = M F S x, coil sensitivities S, centred orthonormal FFT F, column mask M."""
from __future__ import annotations

import copy

import numpy as np
import scipy.sparse.linalg
import torch

from .._checks import as_shape
from ..operators.base import LinearOperator
from ..operators.fourier import center_crop, center_pad, fft2c, ifft2c
from .coils import acs_maps, birdcage_maps, check_maps, normalise_maps, rss
from .masks import ColumnSampling, column_mask


def complex_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a b for complex tensors with a trailing (real, imag) axis (broadcasting)."""
    return torch.stack((a[..., 0] * b[..., 0] - a[..., 1] * b[..., 1], a[..., 0] * b[..., 1] + a[..., 1] * b[..., 0]),
                       dim=-1)


def complex_conj(a: torch.Tensor) -> torch.Tensor:
    return torch.stack((a[..., 0], -a[..., 1]), dim=-1)


LANCZOS_RESTARTS = 20   # ``MultiCoilKSpace.spectral_norm``: restarts of 24 vectors before the power method instead


class MultiCoilKSpace(ColumnSampling, LinearOperator):
    """y = M F S x: each coil c sees the image weighted by its sensitivity S_c, then the centred orthonormal 2-D
    FFT of every coil image, then the sampled columns.

    Shapes: x (B, 1, H, W) for real images or (B, 1, H, W, 2) for complex ones; y (B, coils, H, W, 2), the full
    k-space grid of every coil with the unsampled columns zero.  ``maps`` (coils, H, W, 2) (or complex
    (coils, H, W)) are scaled to unit root-sum-of-squares; without them, ``coils`` analytic birdcage maps
    (``coils.birdcage_maps``).  The mask: ``mask`` (bool (W,)) or (acceleration, center_fraction, pattern,
    seed), as for ``KSpaceSubsample``.

    ||A||: with unit root-sum-of-squares maps, A^H A = S^H F^H M F S <= S^H S <= I, so ||A|| <= 1
    (``spectral_norm_bound``); with every column sampled and maps covering every pixel, A^H A = I and
    ||A|| = 1 exactly (real images too: Re(S^H S) = I).  With a mask the norm depends on how the maps spread
    energy across columns: ``spectral_norm()`` is then an estimate (a certified lower bound; see there).
    """

    def __init__(self, in_shape, coils: int | None = None, maps=None, acceleration: float = 4.0,
                 center_fraction: float = 0.08, pattern: str = "random", seed: int = 0, key: str | None = None,
                 mask=None):
        in_shape = as_shape(in_shape, "in_shape")
        if in_shape[0] != 1 or len(in_shape) not in (3, 4) or (len(in_shape) == 4 and in_shape[-1] != 2):
            raise ValueError(f"in_shape must be (1, H, W) for real or (1, H, W, 2) for complex images, got {in_shape}")
        self.complex_input = len(in_shape) == 4
        h, w = in_shape[1:3]
        if (maps is None) == (coils is None):
            raise ValueError(f"give either maps (coils, {h}, {w}, 2) or coils (a number of analytic birdcage maps), "
                             f"got maps={'None' if maps is None else 'a tensor'} and coils={coils!r}")
        maps = birdcage_maps(coils, (h, w)) if maps is None else normalise_maps(check_maps(maps, (h, w)))
        mask, self.pattern = column_mask(w, mask, pattern, acceleration, center_fraction, seed, key)
        super().__init__(in_shape, (maps.shape[0], h, w, 2))
        self.register_buffer("maps", maps)
        self.register_buffer("mask", mask)
        covered = bool((maps.pow(2).sum(dim=(0, -1)) > 0).all())
        self.spectral_norm_is_exact = bool(mask.all()) and covered

    @property
    def coils(self) -> int:
        return self.maps.shape[0]

    row_maps: torch.Tensor | None = None      # (B, coils, H, W, 2) when bound to a batch with its own maps

    def _maps(self, like: torch.Tensor) -> torch.Tensor:
        """S: (coils, H, W, 2), or per row (B, coils, H, W, 2) when bound to a batch with maps of its own."""
        if self.row_maps is None:
            return self.maps.to(like)
        if self.row_maps.shape[0] != like.shape[0]:
            raise ValueError(f"{type(self).__name__} bound to {self.row_maps.shape[0]} measurements applied to a batch "
                             f"of {like.shape[0]}; expected the rows it was bound to")
        return self.row_maps.to(like)

    def with_maps(self, maps: torch.Tensor) -> "MultiCoilKSpace":
        """This operator (bound to a batch, or one A for every sample) with the coil maps ``maps`` (B, coils, H, W, 2)
        of the batch instead (a network's estimate: VarNet's sensitivity net)."""
        bound = copy.copy(self)
        bound.row_maps = maps
        return bound

    def sens_expand(self, image: torch.Tensor) -> torch.Tensor:
        """S z: a complex image (B, 1, H, W, 2) -> coil images (B, coils, H, W, 2)."""
        return complex_mul(image, self._maps(image))

    def sens_reduce(self, coil_images: torch.Tensor) -> torch.Tensor:
        """S^H c: coil images (B, coils, H, W, 2) -> the complex image (B, 1, H, W, 2) they combine to."""
        return complex_mul(coil_images, complex_conj(self._maps(coil_images))).sum(dim=1, keepdim=True)

    def coil_images(self, x: torch.Tensor) -> torch.Tensor:
        """S x: (B, *in_shape) -> (B, coils, H, W, 2)."""
        return self.sens_expand(x if self.complex_input else torch.stack((x, torch.zeros_like(x)), dim=-1))

    def combine(self, coil_images: torch.Tensor) -> torch.Tensor:
        """S^H: (B, coils, H, W, 2) -> (B, *in_shape) (the real part for real images)."""
        z = self.sens_reduce(coil_images)
        return z if self.complex_input else z[..., 0]

    def image(self, k: torch.Tensor) -> torch.Tensor:
        """The image of a full coil k-space estimate k (B, *out_shape): S^H F^-1 k (its real part for real images)."""
        return self.combine(ifft2c(k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = fft2c(self.coil_images(x))
        return k * self._weights(k)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.combine(ifft2c(y * self._weights(y)))

    def spectral_norm(self) -> float:
        """1 when exact (class docstring).  Else a certified lower bound, cached: Lanczos on A^T A (scipy's eigsh,
        a budget of LANCZOS_RESTARTS restarts), which settles the small cases exactly where the power method
        stalls on the clustered top singular values; where Lanczos does not settle within its budget (large
        images: the top of the spectrum is a near-continuum just under 1), the power method's estimate."""
        if self.spectral_norm_is_exact:
            return 1.0
        if self._norm_cache is None:
            self._norm_cache = self._lanczos_norm() or super().spectral_norm()
        return self._norm_cache

    def _lanczos_norm(self) -> float | None:
        """||A v|| at Lanczos' top eigenvector v of A^T A (float64), or None when it does not converge in budget."""
        scipy_op = self.as_scipy()
        n = scipy_op.shape[1]
        gram = scipy.sparse.linalg.LinearOperator((n, n), matvec=lambda v: scipy_op.rmatvec(scipy_op.matvec(v)),
                                                  dtype=np.float64)
        try:
            _, vectors = scipy.sparse.linalg.eigsh(gram, k=1, which="LA", ncv=min(n, 24), tol=1e-10,
                                                   maxiter=LANCZOS_RESTARTS, v0=np.ones(n))
        except scipy.sparse.linalg.ArpackNoConvergence:
            return None
        return float(np.linalg.norm(scipy_op.matvec(vectors[:, 0])) / np.linalg.norm(vectors[:, 0]))

    def spectral_norm_bound(self) -> float:
        """A certified upper bound on ||A||: 1 (unit root-sum-of-squares maps, a mask only removes energy)."""
        return 1.0

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, coils={self.coils}, pattern={self.pattern!r}, "
                f"sampled={int(self.mask.sum())}/{self.mask.numel()} columns")


class MeasuredMultiCoilKSpace(MultiCoilKSpace):
    """Measured multi-coil k-space (fastMRI multi-coil files): each measurement has its own mask and coil maps, and
    targets lie on a smaller grid than the acquisition.

    Shapes: x (B, 1, h, w) real target images (fastMRI's 320 x 320 crop of the RSS); y (B, coils, H, W, 2) the
    acquired k-space grid of every coil (kspace_shape = (coils, H, W)), unsampled columns zero.

    ``at(y)`` is A_i = M_i F S_i P for each row: P places the target at the centre of the (H, W) grid, S_i are
    the coil maps estimated from y_i's own auto-calibration lines (``coils.acs_maps``: the low-resolution coil
    images over their root-sum-of-squares, so S_i also carries the image's slowly varying phase and a real
    magnitude target is consistent with it), M_i its sampled columns.  Unbound the operator has no maps and only
    ``at`` applies.  Maps at unit root-sum-of-squares and a mask make ||A_i|| <= 1 (``spectral_norm``: that
    bound, for every i).
    """

    varies_per_sample = True
    spectral_norm_is_exact = False

    def __init__(self, in_shape, kspace_shape):
        in_shape = as_shape(in_shape, "in_shape")
        kspace_shape = as_shape(kspace_shape, "kspace_shape")
        if len(in_shape) != 3 or in_shape[0] != 1 or len(kspace_shape) != 3:
            raise ValueError(f"in_shape must be (1, h, w) and kspace_shape (coils, H, W); got {in_shape} and "
                             f"{kspace_shape}")
        if in_shape[1] > kspace_shape[1] or in_shape[2] > kspace_shape[2]:
            raise ValueError(f"the target grid {in_shape[1:]} must fit inside kspace_shape {kspace_shape[1:]}")
        self.complex_input, self.pattern = False, "measured"
        LinearOperator.__init__(self, in_shape, (*kspace_shape, 2))
        self.register_buffer("mask", torch.ones(kspace_shape[2], dtype=torch.bool))

    @property
    def coils(self) -> int:
        return self.out_shape[0]

    def at(self, y: torch.Tensor) -> "MeasuredMultiCoilKSpace":
        """A_i = M_i F S_i P for each row of y (B, *out_shape): its sampled columns and its ACS coil maps."""
        return self.bound_to_rows(y, row_maps=acs_maps(y))

    def _maps(self, like: torch.Tensor) -> torch.Tensor:
        if self.row_maps is None:
            raise ValueError("MeasuredMultiCoilKSpace has coil maps only for given measurements: apply "
                             "operator.at(y), the operators of the batch y")
        return super()._maps(like)

    def coil_images(self, x: torch.Tensor) -> torch.Tensor:
        """S P x: (B, 1, h, w) -> (B, coils, H, W, 2)."""
        padded = center_pad(x, self.out_shape[1:3])
        return self.sens_expand(torch.stack((padded, torch.zeros_like(padded)), dim=-1))

    def combine(self, coil_images: torch.Tensor) -> torch.Tensor:
        """P^T Re S^H: (B, coils, H, W, 2) -> (B, 1, h, w)."""
        return center_crop(self.sens_reduce(coil_images)[..., 0], self.in_shape[1:])

    def image(self, k: torch.Tensor) -> torch.Tensor:
        """fastMRI's image of a full coil k-space estimate k: the centre crop of the RSS of F^-1 k, (B, 1, h, w)."""
        return center_crop(rss(ifft2c(k)), self.in_shape[1:])

    def spectral_norm(self) -> float:
        return 1.0

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, kspace_shape={self.out_shape[:3]}, masks and ACS coil maps from each measurement"
