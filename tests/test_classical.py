import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from jacinv.classical import (baselines, image_gradient, image_gradient_adjoint, tikhonov, total_variation,
                              tv_reconstruction)
from jacinv.operators import GaussianCS, Identity


def test_image_gradient_adjoint_is_the_adjoint():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64)
    d = torch.randn(2, 2, 3, 5, 4, generator=g, dtype=torch.float64)
    assert float((image_gradient(x) * d).sum()) == pytest.approx(float((x * image_gradient_adjoint(d)).sum()), rel=1e-12)


def test_total_variation_of_a_step_edge():
    x = torch.zeros(1, 1, 4, 5, dtype=torch.float64)
    x[..., 2:] = 1.0  # a vertical edge of height 1 across 4 rows
    assert float(total_variation(x)) == pytest.approx(4.0)


def test_tikhonov_matches_the_normal_equations():
    op = GaussianCS((1, 3, 3), 6, seed=0).double()
    y = torch.randn(2, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = op.to_dense()
    expected = torch.linalg.solve(a.T @ a + 0.1 * torch.eye(9, dtype=torch.float64), a.T @ y.T).T
    torch.testing.assert_close(tikhonov(op, y, 0.1).flatten(1), expected)


def test_tv_without_weight_on_the_identity_is_the_clipped_measurement():
    y = torch.randn(2, 1, 5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = tv_reconstruction(Identity((1, 5, 5)).double(), y, mu=0.0, iters=500)
    torch.testing.assert_close(x, y.clamp(0, 1), atol=1e-6, rtol=0)


def test_tv_reconstruction_reaches_the_minimum_of_its_objective():
    op = GaussianCS((1, 5, 5), 15, seed=0).double()
    truth = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    truth[..., 1:4, 2:] = 0.8
    y = op(truth) + 0.05 * torch.randn(1, 15, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    mu = 0.05
    objective = lambda x: 0.5 * float((op(x) - y).pow(2).sum()) + mu * float(total_variation(x).sum())  # noqa: E731
    x_pd = tv_reconstruction(op, y, mu, iters=5000, tol=0.0)

    def smoothed(v):  # the same objective with |g| -> sqrt(|g|^2 + 1e-12), for a box-constrained quasi-Newton
        x = torch.tensor(v, dtype=torch.float64).view(1, 1, 5, 5).requires_grad_()
        value = 0.5 * (op(x) - y).pow(2).sum() + mu * (image_gradient(x).pow(2).sum(1) + 1e-12).sqrt().sum()
        value.backward()
        return float(value.detach()), x.grad.flatten().numpy()

    ref = minimize(smoothed, np.full(25, 0.5), jac=True, method="L-BFGS-B", bounds=[(0, 1)] * 25,
                   options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-12})
    x_ref = torch.tensor(ref.x).view(1, 1, 5, 5)
    assert objective(x_pd) <= objective(x_ref) + 1e-6
    torch.testing.assert_close(x_pd, x_ref, atol=2e-3, rtol=0)
    assert x_pd.min() >= 0 and x_pd.max() <= 1


def test_baselines_add_tv_for_images_only():
    g = torch.Generator().manual_seed(0)
    op = GaussianCS((1, 4, 4), 10, seed=0)
    x = torch.rand(6, 1, 4, 4, generator=g)
    out = baselines(op, op(x[:2]), op(x[2:]), x[2:])
    assert [k.split("(")[0] for k in out] == ["adjoint", "pseudo_inverse", "tikhonov", "tv"]
    flat = GaussianCS((16,), 10, seed=0)
    assert not any(k.startswith("tv") for k in baselines(flat, flat(x.flatten(1)[:2]), flat(x.flatten(1)[2:]),
                                                         x.flatten(1)[2:]))


def test_tv_rejects_signals_that_are_not_images():
    with pytest.raises(ValueError, match=r"operator.in_shape must be \(C, H, W\), got \(16,\)"):
        tv_reconstruction(GaussianCS((16,), 10, seed=0), torch.zeros(1, 10), mu=0.1)


def test_a_weight_at_the_edge_of_its_grid_is_flagged():
    from jacinv.classical import TV_WEIGHTS, weighted_name

    assert weighted_name("tv", min(TV_WEIGHTS), TV_WEIGHTS) == f"tv(mu={min(TV_WEIGHTS):g}, grid edge)"
    assert weighted_name("tv", max(TV_WEIGHTS), TV_WEIGHTS).endswith(", grid edge)")
    assert weighted_name("tv", 0.01, TV_WEIGHTS) == "tv(mu=0.01)"


def fake_reconstruct(best_exponent: float):
    """A reconstruction whose mean l2 error is (log10 mu - best_exponent)^2 + 1 (train_x is zero)."""
    return lambda ys, mu: torch.full((ys.shape[0], 1), (np.log10(mu) - best_exponent) ** 2 + 1.0)


@pytest.mark.parametrize("best, chosen, edge", [(-2.2, -2.0, False), (-2.4, -2.5, False), (-5.3, -5.5, False),
                                                (0.8, 1.0, False), (-9.0, -6.5, True)])
def test_weight_search_widens_at_the_edge_then_refines(best, chosen, edge):
    from jacinv.classical import search_weight, weighted_name

    zeros = torch.zeros(3, 1)
    weight, grid = search_weight(fake_reconstruct(best), zeros, zeros, decades=(-4, 0), extend=2)
    assert np.log10(weight) == pytest.approx(chosen)
    assert grid == tuple(sorted(grid)) and len(grid) <= 5 + 2 + 2
    assert weighted_name("tv", weight, grid).endswith(", grid edge)") is edge


def test_tv_stops_early_at_its_tolerance_without_changing_the_result():
    op = GaussianCS((1, 6, 6), 30, seed=0).double()
    y = op(torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    full = tv_reconstruction(op, y, 0.01, iters=3000, tol=0.0)
    early = tv_reconstruction(op, y, 0.01, iters=3000, tol=1e-7)
    assert float((early - full).abs().max()) < 1e-4
