"""Measurement noise: uniform on / in an l2 ball (bounded), and Gaussian."""
from __future__ import annotations

import torch

from ._checks import as_shape, choice, finite_number
from .transforms import seed_for

NOISE_MODES = ("sphere", "ball")
DRAW_MODES = ("fixed", "fresh")    # one draw per item, or a new draw every epoch


def _generator(generator: torch.Generator | None, seed: int | None) -> torch.Generator | None:
    if generator is not None and seed is not None:
        raise ValueError("give either generator or seed, not both")
    if seed is not None:
        return torch.Generator(device="cpu").manual_seed(seed)
    return generator


def _standard_normal(shape, generator, dtype, device) -> torch.Tensor:
    """Draw on the CPU generator (reproducible across devices), then move."""
    return torch.randn(shape, generator=generator, dtype=dtype).to(device)


class BoundedNoise:
    """Noise with per-sample l2 norm exactly ``radius`` ("sphere") or at most ``radius`` ("ball").

    Uniform on the sphere: a standard normal draw scaled to norm ``radius``.
    Uniform in the ball: the same direction with norm ``radius * U^(1/d)``, d = entries per sample.
    """

    def __init__(self, radius: float, mode: str = "sphere"):
        self.radius = finite_number(radius, "radius", low=0.0)
        self.mode = choice(mode, "mode", NOISE_MODES)

    def sample(self, shape, generator: torch.Generator | None = None, seed: int | None = None,
               dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        """Noise of ``shape`` = (B, *sample_shape); the norm is taken per leading index."""
        shape = as_shape(tuple(shape), "shape")
        g = _generator(generator, seed)
        z = _standard_normal(shape, g, dtype, device)
        flat = z.reshape(shape[0], -1)
        norms = self.radius / flat.norm(dim=1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
        if self.mode == "ball":
            d = flat.shape[1]
            u = torch.rand((shape[0], 1), generator=g, dtype=dtype).to(device)
            norms = norms * u ** (1.0 / d)
        return (flat * norms).reshape(shape)

    def __repr__(self) -> str:
        return f"BoundedNoise(radius={self.radius}, mode={self.mode!r})"


class GaussianNoise:
    """i.i.d. N(0, sigma^2) noise; E||n||_2 ~ sigma sqrt(d) per sample of d entries."""

    def __init__(self, sigma: float):
        self.sigma = finite_number(sigma, "sigma", low=0.0)

    def sample(self, shape, generator: torch.Generator | None = None, seed: int | None = None,
               dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        shape = as_shape(tuple(shape), "shape")
        return self.sigma * _standard_normal(shape, _generator(generator, seed), dtype, device)

    def __repr__(self) -> str:
        return f"GaussianNoise(sigma={self.sigma})"


def item_noise(noise, shape, seed: int, index: int, draw_mode: str = "fixed", epoch: int = 0) -> torch.Tensor:
    """The noise of one item, ``shape`` = its sample shape: ``noise``'s draw seeded by (seed, index), and by the
    epoch too in "fresh" ``draw_mode``, so a data set's noise depends on nothing else."""
    parts = (seed,) if choice(draw_mode, "draw_mode", DRAW_MODES) == "fixed" else (seed, epoch)
    return noise.sample((1, *shape), seed=seed_for(*parts, int(index)))[0]
