"""Super-resolution forward model: circular blur followed by decimation."""
from __future__ import annotations

import math

import torch

from .._checks import as_shape, choice, finite_number, finite_tensor, positive_int
from .base import LinearOperator

KERNELS = ("gaussian", "uniform", "bicubic")


def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    """(size, size) isotropic Gaussian PSF centred on pixel size // 2 (odd size) / between pixels (even)."""
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    return torch.outer(g, g)


def uniform_kernel(size: int) -> torch.Tensor:
    return torch.ones((size, size), dtype=torch.float64)


def bicubic_kernel(factor: int) -> torch.Tensor:
    """(4 factor, 4 factor) Keys cubic (a = -0.5) antialiasing kernel of downscaling by ``factor``."""
    t = ((torch.arange(4 * factor, dtype=torch.float64) - (4 * factor - 1) / 2) / factor).abs()
    a = -0.5
    w = torch.where(t <= 1, (a + 2) * t**3 - (a + 3) * t**2 + 1,
                    torch.where(t < 2, a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a, torch.zeros_like(t)))
    return torch.outer(w, w)


class BlurDecimate(LinearOperator):
    """y = S (h * x): circular convolution with a PSF h (sum 1), then every ``factor``-th pixel.

    Shapes: x (B, C, H, W) -> y (B, C, H / factor, W / factor); the same PSF for every channel.
    Applied with real FFTs, never a dense matrix.  ``spectral_norm()`` is exact:
    A A^T is circulant on the low-resolution grid with eigenvalues
    lambda(l) = (1 / s^2) sum over the s x s aliases a of |H(l + a M)|^2.

    Args:
        kernel: "gaussian", "uniform", "bicubic" or a 2-D tensor (normalised to sum 1).
        kernel_size: side of the gaussian/uniform PSF (default 5); bicubic uses 4 * factor.
        sigma: standard deviation of the gaussian PSF, in pixels.
    """

    spectral_norm_is_exact = True

    def __init__(self, in_shape, factor: int, kernel="gaussian", kernel_size: int | None = None,
                 sigma: float = 1.0):
        in_shape = as_shape(in_shape, "in_shape")
        if len(in_shape) != 3:
            raise ValueError(f"in_shape must be (C, H, W), got {in_shape}")
        c, h, w = in_shape
        s = positive_int(factor, "factor")
        if h % s or w % s:
            raise ValueError(f"factor {s} must divide the image size (H, W) = ({h}, {w})")
        psf = self._make_psf(kernel, kernel_size, sigma, s)
        if psf.shape[0] > h or psf.shape[1] > w:
            raise ValueError(f"kernel of shape {tuple(psf.shape)} does not fit the image ({h}, {w})")
        super().__init__(in_shape, (c, h // s, w // s))
        self.factor = s
        self.register_buffer("psf", psf.to(torch.get_default_dtype()))
        grid = torch.zeros((h, w), dtype=torch.float64)
        grid[: psf.shape[0], : psf.shape[1]] = psf
        grid = torch.roll(grid, shifts=(-(psf.shape[0] // 2), -(psf.shape[1] // 2)), dims=(0, 1))
        self.register_buffer("psf_grid", grid.to(torch.get_default_dtype()))  # PSF centred at (0, 0)

    @staticmethod
    def _make_psf(kernel, kernel_size, sigma, factor) -> torch.Tensor:
        if isinstance(kernel, torch.Tensor):
            if kernel_size is not None:
                raise ValueError("kernel_size must be None when kernel is a tensor (its shape is the size)")
            psf = kernel.detach().to(torch.float64).cpu()
            if psf.dim() != 2:
                raise ValueError(f"kernel tensor must be 2-D, got shape {tuple(psf.shape)}")
            finite_tensor(psf, "kernel")
        else:
            choice(kernel, "kernel", KERNELS)
            if kernel == "bicubic":
                if kernel_size is not None and kernel_size != 4 * factor:
                    raise ValueError(f"kernel_size for 'bicubic' is 4 * factor = {4 * factor}, got {kernel_size}")
                psf = bicubic_kernel(factor)
            else:
                size = positive_int(5 if kernel_size is None else kernel_size, "kernel_size")
                if kernel == "gaussian":
                    psf = gaussian_kernel(size, finite_number(sigma, "sigma", low=0.0, low_open=True))
                else:
                    psf = uniform_kernel(size)
        total = float(psf.sum())
        if abs(total) < 1e-12:
            raise ValueError("kernel sums to 0; expected a PSF with a non-zero sum (it is normalised to sum 1)")
        return psf / total

    def _otf(self, like: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft2(self.psf_grid.to(dtype=like.dtype, device=like.device))

    def _blur(self, x: torch.Tensor, conjugate: bool) -> torch.Tensor:
        otf = self._otf(x)
        spectrum = torch.fft.rfft2(x) * (otf.conj() if conjugate else otf)
        return torch.fft.irfft2(spectrum, s=x.shape[-2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.factor
        return self._blur(x, conjugate=False)[..., ::s, ::s]

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        s = self.factor
        up = y.new_zeros((y.shape[0], *self.in_shape))
        up[..., ::s, ::s] = y
        return self._blur(up, conjugate=True)

    def alias_eigenvalues(self) -> torch.Tensor:
        """Eigenvalues of A A^T per low-resolution frequency, (H / s, W / s), float64."""
        s = self.factor
        _, h, w = self.in_shape
        power = torch.fft.fft2(self.psf_grid.double().cpu()).abs() ** 2
        return power.reshape(s, h // s, s, w // s).sum(dim=(0, 2)) / s**2

    def spectral_norm(self) -> float:
        if self._norm_cache is None:
            self._norm_cache = math.sqrt(float(self.alias_eigenvalues().max()))
        return self._norm_cache

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, factor={self.factor}, psf={tuple(self.psf.shape)}"
