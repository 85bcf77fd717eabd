import math

import numpy as np
import pytest
import torch

from jacinv.bounds import (covering_number, estimate_lipschitz, fit_manifold, generalization_bound, greedy_net,
                           per_sample_norms, regression_bound, twonn_dimension)
from jacinv.operators import GaussianCS, Identity

ARGS = dict(lip_fa=2.0, lip_f=0.5, noise_radius=0.3, max_loss=10.0, n_train=500, delta=0.05,
            manifold_constant=1.5, intrinsic_dim=3)


def test_bound_matches_the_formula_by_hand():
    b = generalization_bound(**ARGS, gamma=0.2)
    n = (2 * 1.5 / 0.2) ** 3
    expected = 2 * 3.0 * 0.2 + 2 * 0.5 * 0.3 + 10 * math.sqrt((2 * n * math.log(2) + 2 * math.log(20)) / 500)
    assert b.total == pytest.approx(expected, rel=1e-12)
    assert b.terms["noise"] == pytest.approx(0.3) and b.vacuous == (expected >= 10)
    assert covering_number(0.2, 1.5, 3) == pytest.approx(n)
    assert covering_number(5.0, 1.5, 3) == 1.0  # a single ball covers once gamma >= 2 C_M


def test_optimal_gamma_minimises_the_bound():
    b = generalization_bound(**ARGS)
    grid = np.logspace(-6, math.log10(3.0), 4000)
    brute = min(generalization_bound(**ARGS, gamma=float(g)).total for g in grid)
    assert b.total <= brute * (1 + 1e-9)


@pytest.mark.parametrize("key, larger, direction", [
    ("n_train", 5000, -1), ("delta", 0.2, -1), ("lip_fa", 4.0, +1), ("lip_f", 2.0, +1), ("noise_radius", 0.6, +1),
])
def test_bound_is_monotone(key, larger, direction):
    base = generalization_bound(**ARGS).total
    moved = generalization_bound(**{**ARGS, key: larger}).total
    assert (moved - base) * direction > 0


def test_regression_bound_formula():
    b = regression_bound(lip_f=1.0, max_loss=2.0, n_train=100, delta=0.1, manifold_constant=1.0,
                         intrinsic_dim=2, psi=0.5)
    n = (2 * 1.0 / 0.25) ** 2
    assert b.total == pytest.approx(2 * 0.5 + 2 * math.sqrt((2 * n * math.log(2) + 2 * math.log(10)) / 100))


@pytest.mark.parametrize("kwargs, match", [
    (dict(delta=1.0), r"delta must be a finite number in \(0.0, 1.0\), got 1.0"),
    (dict(n_train=0), "n_train must be an int >= 1, got 0"),
    (dict(lip_fa=-1.0), r"lip_fa must be a finite number in \[0.0, inf\]"),
    (dict(max_loss=0.0), r"max_loss must be a finite number in \(0.0, inf\]"),
])
def test_bound_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        generalization_bound(**{**ARGS, **kwargs})


def test_greedy_net_is_a_valid_cover():
    pts = np.random.default_rng(0).random((400, 3))
    centres = greedy_net(pts, 0.2)
    dist = np.linalg.norm(pts[:, None] - pts[centres][None], axis=-1)
    assert dist.min(1).max() <= 0.2
    between = np.linalg.norm(pts[centres][:, None] - pts[centres][None], axis=-1)
    assert between[~np.eye(len(centres), dtype=bool)].min() > 0.2


def test_twonn_recovers_known_dimensions():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((50, 3)))[0]
    subspace = rng.standard_normal((2000, 3)) @ basis.T
    assert twonn_dimension(subspace) == pytest.approx(3, rel=0.1)
    t = rng.uniform(0, 2 * np.pi, 1000)
    circle = np.stack([np.cos(t), np.sin(t)], 1) @ rng.standard_normal((2, 10))
    assert twonn_dimension(circle) == pytest.approx(1, rel=0.1)
    c_m, k = fit_manifold(subspace)
    assert c_m > 0 and k == pytest.approx(3, rel=0.1)


def test_estimate_lipschitz_of_a_linear_model_is_exact():
    torch.manual_seed(0)
    op = GaussianCS((1, 3, 3), 6, seed=0).double()
    model = torch.nn.Sequential(torch.nn.Linear(6, 9, bias=True), torch.nn.Unflatten(1, (1, 3, 3))).double()
    y = torch.randn(5, 6, dtype=torch.float64)
    est = estimate_lipschitz(model, op, y, iters=500, ascent_steps=2)
    w = model[0].weight.detach()
    assert est["lip_f"] == pytest.approx(float(torch.linalg.matrix_norm(w, ord=2)), rel=1e-9)
    assert est["lip_fa"] == pytest.approx(float(torch.linalg.matrix_norm(w @ op.to_dense(), ord=2)), rel=1e-9)
    assert est["upper_f"] == pytest.approx(est["lip_f"], rel=1e-9)
    assert est["upper_fa"] >= est["lip_fa"]


def test_estimate_lipschitz_reuses_the_norms_of_an_identity_operator_exactly():
    torch.manual_seed(0)
    op = Identity((1, 3, 3)).double()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(9, 9), torch.nn.Tanh(),
                                torch.nn.Unflatten(1, (1, 3, 3))).double()
    y = torch.randn(5, 1, 3, 3, dtype=torch.float64)
    est = estimate_lipschitz(model, op, y, iters=50, ascent_steps=2)
    assert est["lip_f"] == est["lip_fa"]
    np.testing.assert_array_equal(est["per_sample_f"], per_sample_norms(model, None, y, iters=50).numpy())


def test_per_sample_norms_do_not_depend_on_the_rows_per_pass():
    """Start vectors are drawn per block of DRAW_BLOCK samples, so a small ``rows`` (for a large net) changes
    the memory, not the numbers; with rows = DRAW_BLOCK they are jacobian_spectral_norm's on each block."""
    from jacinv.bounds import DRAW_BLOCK
    from jacinv.regularizers import jacobian_spectral_norm

    model = torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.Tanh(), torch.nn.Linear(9, 4)).double()
    op = GaussianCS((6,), 6, seed=0).double()
    y = torch.randn(DRAW_BLOCK + 9, 6, dtype=torch.float64)
    whole = per_sample_norms(model, op, y, iters=3, rows=DRAW_BLOCK)
    np.testing.assert_allclose(per_sample_norms(model, op, y, iters=3, rows=5).numpy(), whole.numpy(), rtol=1e-12)
    g = torch.Generator().manual_seed(0)
    by_block = torch.cat([jacobian_spectral_norm(model, y[k: k + DRAW_BLOCK], op, iters=3, generator=g).detach()
                          for k in (0, DRAW_BLOCK)])
    np.testing.assert_allclose(whole.numpy(), by_block.numpy(), rtol=1e-12)
