"""Measurement noise: uniform on / in an l2 ball (bounded), and Gaussian."""
from __future__ import annotations

import torch

from ._checks import as_shape, choice, finite_number
from .transforms import seed_for

NOISE_MODES = ("sphere", "ball")
DRAW_MODES = ("fixed", "fresh")    # one draw per item, or a new draw every epoch
#: where a draw lands: on the entries of y a measurement records (k-space masks: the sampled positions), as on a
#: scanner, or on every entry of y (as jacinv did before: for k-space the unsampled positions too)
SUPPORTS = ("measured", "all")


def _generator(generator: torch.Generator | None, seed: int | None) -> torch.Generator | None:
    if generator is not None and seed is not None:
        raise ValueError("give either generator or seed, not both")
    if seed is not None:
        return torch.Generator(device="cpu").manual_seed(seed)
    return generator


def _standard_normal(shape, generator, dtype, device, entries: torch.Tensor | None = None) -> torch.Tensor:
    """Draw on the CPU generator (reproducible across devices), zero outside ``entries`` (a bool tensor broadcasting
    over ``shape``; None: every entry), then move."""
    z = torch.randn(shape, generator=generator, dtype=dtype)
    return (z if entries is None else z * entries.to(dtype)).to(device)


def measured_entries(operator) -> torch.Tensor | None:
    """(*out_shape) bool: the entries of y that ``operator``'s measurements record (``measured_part``, a coordinate
    projection: for k-space masks the sampled positions), or None where it records every entry."""
    if operator.measures_every_entry():
        return None
    return operator.measured_part(torch.ones((1, *operator.out_shape)))[0] != 0


class BoundedNoise:
    """Noise with per-sample l2 norm exactly ``radius`` ("sphere") or at most ``radius`` ("ball").

    Uniform on the sphere: a standard normal draw scaled to norm ``radius``.
    Uniform in the ball: the same direction with norm ``radius * U^(1/d)``, d = entries per sample.
    ``support``: "measured" draws on the entries a measurement records only (``sample``'s ``entries``: the
    sphere / ball of that subspace, d = its entries), "all" on every entry of y (SUPPORTS).
    """

    def __init__(self, radius: float, mode: str = "sphere", support: str = "measured"):
        self.radius = finite_number(radius, "radius", low=0.0)
        self.mode = choice(mode, "mode", NOISE_MODES)
        self.support = choice(support, "support", SUPPORTS)

    def sample(self, shape, generator: torch.Generator | None = None, seed: int | None = None,
               dtype: torch.dtype = torch.float32, device=None, entries: torch.Tensor | None = None) -> torch.Tensor:
        """Noise of ``shape`` = (B, *sample_shape); the norm is taken per leading index.  ``entries``: bool
        (*sample_shape), the only entries drawn on (the rest are zero; None: all)."""
        shape = as_shape(tuple(shape), "shape")
        g = _generator(generator, seed)
        z = _standard_normal(shape, g, dtype, device, entries)
        flat = z.reshape(shape[0], -1)
        norms = self.radius / flat.norm(dim=1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
        if self.mode == "ball":
            d = flat.shape[1] if entries is None else int(entries.expand(shape[1:]).sum())
            u = torch.rand((shape[0], 1), generator=g, dtype=dtype).to(device)
            norms = norms * u ** (1.0 / d)
        return (flat * norms).reshape(shape)

    def __repr__(self) -> str:
        return f"BoundedNoise(radius={self.radius}, mode={self.mode!r}, support={self.support!r})"


class GaussianNoise:
    """i.i.d. N(0, sigma^2) noise; E||n||_2 ~ sigma sqrt(d) per sample of d entries (``support`` as BoundedNoise's:
    with "measured", d counts the recorded entries only)."""

    def __init__(self, sigma: float, support: str = "measured"):
        self.sigma = finite_number(sigma, "sigma", low=0.0)
        self.support = choice(support, "support", SUPPORTS)

    def sample(self, shape, generator: torch.Generator | None = None, seed: int | None = None,
               dtype: torch.dtype = torch.float32, device=None, entries: torch.Tensor | None = None) -> torch.Tensor:
        """``entries``: bool (*sample_shape), the only entries drawn on (the rest are zero; None: all)."""
        shape = as_shape(tuple(shape), "shape")
        return self.sigma * _standard_normal(shape, _generator(generator, seed), dtype, device, entries)

    def __repr__(self) -> str:
        return f"GaussianNoise(sigma={self.sigma}, support={self.support!r})"


def item_noise(noise, shape, seed: int, index: int, draw_mode: str = "fixed", epoch: int = 0,
               entries: torch.Tensor | None = None) -> torch.Tensor:
    """The noise of one item, ``shape`` = its sample shape: ``noise``'s draw seeded by (seed, index), and by the
    epoch too in "fresh" ``draw_mode``, so a data set's noise depends on nothing else.  ``entries`` (bool, broadcasting
    over ``shape``; see ``measured_entries``): the entries the item's measurement records, where a noise with
    support "measured" lands (None: every entry)."""
    parts = (seed,) if choice(draw_mode, "draw_mode", DRAW_MODES) == "fixed" else (seed, epoch)
    on = entries if noise.support == "measured" else None
    return noise.sample((1, *shape), seed=seed_for(*parts, int(index)), entries=on)[0]
