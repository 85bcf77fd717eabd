import math

import pytest
import torch

from jacinv.noise import BoundedNoise, GaussianNoise


@pytest.mark.parametrize("shape", [(500, 10), (64, 2, 3, 4)])
def test_sphere_noise_has_exact_norm_and_no_mean_direction(shape):
    n = BoundedNoise(0.3, mode="sphere").sample(shape, seed=0, dtype=torch.float64)
    norms = n.reshape(shape[0], -1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, 0.3))
    d = math.prod(shape[1:])
    # the mean of B unit vectors uniform on the sphere has norm ~ 1/sqrt(B) on average
    mean_dir = (n.reshape(shape[0], -1) / 0.3).mean(0).norm()
    assert mean_dir < 3 / math.sqrt(shape[0]) * math.sqrt(1 + 1 / d)


def test_ball_noise_radius_distribution():
    d = 3
    n = BoundedNoise(2.0, mode="ball").sample((20000, d), seed=1, dtype=torch.float64)
    r = n.norm(dim=1) / 2.0
    assert float(r.max()) <= 1.0
    # uniform in the ball: P(r <= t) = t^d
    for t in (0.5, 0.8, 0.95):
        assert float((r <= t).double().mean()) == pytest.approx(t**d, abs=0.015)


def test_noise_reproducible_from_seed_and_generator():
    a = BoundedNoise(1.0).sample((4, 5), seed=7)
    b = BoundedNoise(1.0).sample((4, 5), generator=torch.Generator().manual_seed(7))
    c = BoundedNoise(1.0).sample((4, 5), seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(GaussianNoise(0.1).sample((3, 3), seed=1), GaussianNoise(0.1).sample((3, 3), seed=1))


def test_zero_radius_gives_zero_noise():
    assert torch.count_nonzero(BoundedNoise(0.0).sample((3, 4), seed=0)) == 0


def test_gaussian_noise_standard_deviation():
    n = GaussianNoise(0.2).sample((1000, 100), seed=0, dtype=torch.float64)
    assert float(n.std()) == pytest.approx(0.2, rel=0.01)


@pytest.mark.parametrize("make, match", [
    (lambda: BoundedNoise(-0.1), r"radius must be a finite number in \[0.0, inf\], got -0.1"),
    (lambda: BoundedNoise(float("nan")), "radius must be a finite number"),
    (lambda: BoundedNoise(0.1, mode="cube"), r"mode must be one of \['sphere', 'ball'\], got 'cube'"),
    (lambda: GaussianNoise(-1), r"sigma must be a finite number in \[0.0, inf\], got -1.0"),
    (lambda: BoundedNoise(0.1).sample((0, 3)), "shape must contain positive ints only"),
    (lambda: BoundedNoise(0.1).sample((2, 3), seed=1, generator=torch.Generator()), "either generator or seed"),
])
def test_noise_bad_arguments(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()
