"""Per-sample operators: a measurement's own A_i (``LinearOperator.at``) in the operators, models, baselines and
Jacobian penalties, checked against dense matrices and exact Jacobians on tiny float64 cases."""
import pytest
import torch
from torch import nn

from jacinv.mri import MeasuredKSpace, MeasuredMultiCoilKSpace, MultiCoilKSpace, acs_columns, acs_maps, rss
from jacinv.operators import GaussianCS, make_mask
from jacinv.regularizers import SpectralJacobianPenalty, jacobian_frobenius_sq, jacobian_spectral_norm
from jacobians import exact_jacobians

torch.manual_seed(0)


def dense_rows(bound, rows: int) -> torch.Tensor:
    """(rows, out_dim, in_dim): each row's A_i, column by column from the bound operator."""
    n = torch.Size(bound.in_shape).numel()
    cols = []
    for j in range(n):
        e = torch.zeros(rows, n, dtype=torch.float64)
        e[:, j] = 1
        cols.append(bound(e.view(rows, *bound.in_shape)).reshape(rows, -1))
    return torch.stack(cols, dim=2)


def measured_single(rows: int = 3):
    """MeasuredKSpace (1, 4, 4) in a (6, 6) grid, measurements with masks of their own (float64)."""
    op = MeasuredKSpace((1, 4, 4), (6, 6)).double()
    x = torch.rand(rows, 1, 4, 4, dtype=torch.float64)
    masks = torch.stack([make_mask("random", 6, 2, 0.2, seed=s) for s in range(rows)])
    return op, op(x) * masks.double()[:, None, None, :, None], masks


def measured_multicoil(rows: int = 2, coils: int = 3):
    """MeasuredMultiCoilKSpace (1, 4, 4) in a (coils, 8, 8) grid: coil k-space of smooth complex coil images."""
    op = MeasuredMultiCoilKSpace((1, 4, 4), (coils, 8, 8)).double()
    truth = MultiCoilKSpace((1, 8, 8), coils=coils, mask=torch.ones(8, dtype=torch.bool)).double()
    x = torch.nn.functional.pad(torch.rand(rows, 1, 4, 4, dtype=torch.float64), (2, 2, 2, 2))
    masks = torch.stack([make_mask("equispaced", 8, 2, 0.25, seed=s) for s in range(rows)])
    return op, truth(x) * masks.double()[:, None, None, :, None], masks


def test_at_is_the_operator_itself_where_one_a_measures_every_sample():
    op = GaussianCS(6, 4, seed=0)
    assert op.at(torch.zeros(2, 4)) is op and not op.varies_per_sample


def test_measured_single_coil_rows_are_their_own_masked_operators():
    op, y, masks = measured_single()
    bound = op.at(y)
    assert op.varies_per_sample
    dense = dense_rows(bound, 3)
    full = dense_rows(op, 1)[0]                                     # F P, every column
    for i in range(3):
        keep = masks[i][None, None, :, None].expand(1, 6, 6, 2).reshape(-1).double()
        torch.testing.assert_close(dense[i], keep[:, None] * full)
        assert torch.linalg.matrix_norm(dense[i], ord=2) <= 1 + 1e-12
    u, w = torch.randn(3, 1, 4, 4, dtype=torch.float64), torch.randn_like(y)
    torch.testing.assert_close((bound(u) * w).sum(), (u * bound.adjoint(w)).sum())
    with pytest.raises(ValueError, match="bound to 3 measurements .* batch of 2"):
        bound(u[:2])


def test_acs_columns_are_the_contiguous_sampled_run_around_the_centre():
    sampled = torch.tensor([[1, 0, 1, 1, 1, 0, 1, 0], [0, 0, 0, 0, 1, 1, 0, 1], [1, 1, 1, 1, 0, 1, 1, 1]], dtype=torch.bool)
    expected = torch.tensor([[0, 0, 1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(acs_columns(sampled), expected)


def test_acs_maps_recover_smooth_coil_maps_and_have_unit_rss():
    """Coil images c = S x of a constant image with smooth maps: the ACS estimate is S itself (the constant's
    low-pass image is the constant) wherever it covers, at unit root-sum-of-squares."""
    truth = MultiCoilKSpace((1, 16, 16), coils=4, mask=torch.ones(16, dtype=torch.bool)).double()
    x = torch.ones(1, 1, 16, 16, dtype=torch.float64)
    y = truth(x) * make_mask("equispaced", 16, 2, 0.5, seed=0).double()[None, None, None, :, None]
    maps = acs_maps(y)
    torch.testing.assert_close(rss(maps), torch.ones(1, 1, 16, 16, dtype=torch.float64))
    err = (maps[0] - truth.maps).norm() / truth.maps.norm()
    assert err < 0.15     # birdcage maps are smooth but not band-limited to 8 columns


def test_measured_multicoil_rows_use_their_masks_and_acs_maps():
    op, y, masks = measured_multicoil()
    bound = op.at(y)
    assert torch.equal(bound.row_masks, masks)
    torch.testing.assert_close(bound.row_maps, acs_maps(y))
    dense = dense_rows(bound, 2)
    for i in range(2):
        single = MultiCoilKSpace((1, 8, 8), maps=bound.row_maps[i], mask=masks[i]).double()
        pad = torch.zeros(64, 16, dtype=torch.float64)
        pad[[r * 8 + c for r in range(2, 6) for c in range(2, 6)], range(16)] = 1
        torch.testing.assert_close(dense[i], dense_rows(single, 1)[0] @ pad)
        assert torch.linalg.matrix_norm(dense[i], ord=2) <= op.spectral_norm() + 1e-12
    u, w = torch.randn(2, 1, 4, 4, dtype=torch.float64), torch.randn_like(y)
    torch.testing.assert_close((bound(u) * w).sum(), (u * bound.adjoint(w)).sum())
    with pytest.raises(ValueError, match=r"coil maps only for given measurements: apply operator.at\(y\)"):
        op(u)


class TinyNet(nn.Module):
    """A smooth per-sample map of k-space to images, float64."""

    def __init__(self, in_dim: int, out_shape):
        super().__init__()
        self.out_shape = out_shape
        self.net = nn.Sequential(nn.Linear(in_dim, 12), nn.Tanh(), nn.Linear(12, torch.Size(out_shape).numel()))
        self.double()

    def forward(self, y):
        return self.net(y.flatten(1)).view(-1, *self.out_shape)


@pytest.mark.parametrize("case", [measured_single, measured_multicoil])
def test_jacobian_penalties_use_each_samples_own_operator(case):
    """||J(y_i) A_i||_2 and ||J(y_i) A_i||_F^2 from the matrix-free estimators equal the exact ones, where
    A_i is row i's dense operator; with the unbound A (every column, or no maps) they would not."""
    op, y, _ = case()
    f = TinyNet(y[0].numel(), op.in_shape)
    jac = exact_jacobians(f, y).detach()                                   # (B, out, in_y)
    a_rows = dense_rows(op.at(y), y.shape[0])                              # (B, in_y, in_x)
    exact_2 = torch.linalg.matrix_norm(jac @ a_rows, ord=2)
    exact_f = torch.linalg.matrix_norm(jac @ a_rows) ** 2
    torch.testing.assert_close(jacobian_spectral_norm(f, y, op, iters=300).detach(), exact_2, rtol=1e-8, atol=0)
    draws = torch.stack([jacobian_frobenius_sq(f, y, op, generator=torch.Generator().manual_seed(s)).detach()
                         for s in range(400)])
    se = draws.std(0) / 20
    assert bool(((draws.mean(0) - exact_f).abs() <= 4.5 * se).all())
    penalty = SpectralJacobianPenalty({"sja": op}, iters=1, candidates=y.shape[0], refresh=1,
                                      store_dtype=torch.float64)
    index = torch.arange(y.shape[0])
    for _ in range(300):
        values, _ = penalty(f, y, index=index)
    torch.testing.assert_close(values["sja"].detach(), exact_2.max(), rtol=1e-7, atol=0)
