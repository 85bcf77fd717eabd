import math

import pytest
import torch
from torch import nn

from jacinv.models import build_model
from jacinv.operators import BlurDecimate, GaussianCS, Identity
from jacinv.regularizers import (REGULARIZERS, JacobianProducts, SpectralJacobianPenalty, auto_weight,
                                 build_regularizer, jacobian_frobenius_sq, jacobian_spectral_norm, power_iteration,
                                 products)

from jacobians import exact_jacobians, grads


@pytest.fixture(autouse=True)
def _float64():
    """Numerical claims are checked in float64."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def small_net(q=8, side=4, width=20, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(q, width), nn.Tanh(), nn.Linear(width, side * side), nn.Unflatten(1, (1, side, side)))


def conv_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 1, 3, padding=1))


@pytest.fixture
def cs_problem():
    op = GaussianCS((1, 4, 4), 8, seed=0).double()
    return small_net(), op, torch.randn(5, 8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("with_operator", [True, False])
def test_spectral_norm_converges_to_exact_from_below(cs_problem, with_operator):
    f, op, y = cs_problem
    op = op if with_operator else None
    jac = exact_jacobians(f, y)
    m = jac @ op.to_dense() if op is not None else jac
    exact = torch.linalg.matrix_norm(m, ord=2).detach()
    for iters in (1, 3, 10):
        est = jacobian_spectral_norm(f, y, op, iters=iters, generator=torch.Generator().manual_seed(0)).detach()
        assert bool((est <= exact * (1 + 1e-9)).all())
    est = jacobian_spectral_norm(f, y, op, iters=300, generator=torch.Generator().manual_seed(0)).detach()
    torch.testing.assert_close(est, exact, rtol=1e-6, atol=0)


def test_spectral_norm_on_conv_net_with_blur_operator():
    f = conv_net()
    op = BlurDecimate((1, 8, 8), factor=2).double()
    # the network maps the low-resolution y through A^T to the image grid
    g = lambda y: f(op.adjoint(y))  # noqa: E731
    y = torch.randn(2, 1, 4, 4)
    exact = torch.linalg.matrix_norm(exact_jacobians(g, y) @ op.to_dense(), ord=2).detach()
    est = jacobian_spectral_norm(g, y, op, iters=300).detach()
    torch.testing.assert_close(est, exact, rtol=1e-6, atol=0)


def test_spectral_penalty_gradient_matches_exact_norm_gradient(cs_problem):
    f, op, y = cs_problem
    params = list(f.parameters())
    est = jacobian_spectral_norm(f, y, op, iters=3000).max()
    g_est = grads(est, params)
    exact = torch.linalg.matrix_norm(exact_jacobians(f, y) @ op.to_dense(), ord=2).max()
    g_exact = grads(exact, params)
    for a, b in zip(g_est, g_exact):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("projection", ["gaussian", "rademacher", "sphere"])
@pytest.mark.parametrize("with_operator", [True, False])
def test_frobenius_estimates_are_unbiased(cs_problem, projection, with_operator):
    f, op, y = cs_problem
    op = op if with_operator else None
    jac = exact_jacobians(f, y)
    m = jac @ op.to_dense() if op is not None else jac
    exact = m.pow(2).sum((1, 2)).detach()
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([jacobian_frobenius_sq(f, y, op, projection=projection, generator=g).detach()
                         for _ in range(1500)])
    se = draws.std(0) / math.sqrt(draws.shape[0])
    # 30 comparisons across the parametrisation: 4 standard errors keeps the family-wise
    # false-alarm rate near 0.2% while a bias of a few percent still fails
    assert bool(((draws.mean(0) - exact).abs() <= 4 * se + 1e-12).all()), (draws.mean(0), exact, se)


def test_frobenius_gradient_is_unbiased_in_expectation(cs_problem):
    f, op, y = cs_problem
    params = list(f.parameters())
    exact = (exact_jacobians(f, y) @ op.to_dense()).pow(2).sum()
    g_exact = torch.cat([g.flatten() for g in grads(exact, params)])
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([torch.cat([g.flatten() for g in grads(
        jacobian_frobenius_sq(f, y, op, n_projections=1, generator=gen).sum(), params)]) for _ in range(800)])
    se = draws.std(0) / math.sqrt(draws.shape[0])
    z = (draws.mean(0) - g_exact).abs() / (se + 1e-12)
    assert float(z.max()) <= 4.5 and float(z.mean()) <= 1.2  # hundreds of coordinates; mean |z| ~ 0.8 if unbiased


@pytest.mark.parametrize("store_dtype, rtol", [(torch.float64, 1e-5), (torch.float16, 1e-2)])
def test_warm_started_argmax_penalty_matches_full_computation(cs_problem, store_dtype, rtol):
    """The shortcuts (warm start, refresh of likely maxima only, differentiable pass on the
    arg-max) give the full computation's value and gradient; float16 storage of the vectors
    limits the gradient's accuracy to about its rounding error."""
    f, op, y = cs_problem
    penalty = SpectralJacobianPenalty({"sja": op, "sj": None}, iters=1, candidates=2, refresh=1,
                                      store_dtype=store_dtype)
    index = torch.arange(y.shape[0]) + 10
    for _ in range(2000):  # parameters fixed: warm-started vectors converge
        values, stats = penalty(f, y, index=index)
    params = list(f.parameters())
    for name, target in (("sja", op), ("sj", None)):
        full = jacobian_spectral_norm(f, y, target, iters=3000).max()
        torch.testing.assert_close(values[name].detach(), full.detach(), rtol=1e-7, atol=0)
        for a, b in zip(grads(values[name], params), grads(full, params)):
            torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * float(b.abs().max()))
        assert stats[name].shape == (y.shape[0],)


def test_double_vjp_value_is_half_a_power_step_past_the_last_vector(cs_problem):
    """With double-vjp products the value is ||M^T u||, u = M v / ||M v|| (M = J A, v the vector after
    cold_iters - 1 steps): checked against dense M; between ||M v|| and ||M||."""
    f, op, y = cs_problem
    m = exact_jacobians(f, y) @ op.to_dense()
    values, stats = SpectralJacobianPenalty({"sja": op}, cold_iters=3, jvp_mode="double_vjp")(f, y)
    _, v = jacobian_spectral_norm(f, y, op, iters=2, generator=torch.Generator().manual_seed(0), return_vectors=True,
                                  jvp_mode="double_vjp")
    mv = (m @ v.flatten(1).unsqueeze(-1)).squeeze(-1).detach()
    half = (m.transpose(1, 2) @ (mv / mv.norm(dim=1, keepdim=True)).unsqueeze(-1)).squeeze(-1).norm(dim=1).detach()
    torch.testing.assert_close(stats["sja"], half, rtol=1e-10, atol=0)
    torch.testing.assert_close(values["sja"].detach(), half.max(), rtol=1e-10, atol=0)
    exact = torch.linalg.matrix_norm(m, ord=2).detach()
    assert bool((half >= mv.norm(dim=1)).all()) and bool((half <= exact * (1 + 1e-9)).all())
    assert float((half - mv.norm(dim=1)).min()) > 0  # not converged after 2 steps: the half step gains


def test_krylov_estimate_is_between_the_power_estimate_and_the_exact_norm():
    """On a linear map with clustered top singular values, the Krylov estimate from the same products
    is a lower bound no smaller than plain power iteration's, and far closer to the norm."""
    torch.manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(30, 30))
    v, _ = torch.linalg.qr(torch.randn(20, 20))
    singular = torch.cat([torch.tensor([1.0, 0.99, 0.98, 0.97]), torch.linspace(0.9, 0.1, 16)])
    layer = nn.Linear(20, 30, bias=False)
    layer.weight.data = u[:, :20] @ torch.diag(singular) @ v.T
    y = torch.randn(6, 20)
    v0 = torch.randn(6, 20, generator=torch.Generator().manual_seed(1))
    products = JacobianProducts(layer, y, "double_vjp")
    for iters in (1, 2, 4, 7):
        _, (plain,) = power_iteration(products, [None], [v0], iters)
        _, (krylov,) = power_iteration(products, [None], [v0], iters, krylov=4)
        assert bool((krylov <= 1.0 + 1e-9).all()) and bool((krylov >= plain - 1e-9).all())
        if iters == 1:
            torch.testing.assert_close(krylov, plain, rtol=1e-12, atol=0)
    assert float((1 - krylov).mean()) < 0.5 * float((1 - plain).mean())


def test_forward_mode_chunks_do_not_change_the_penalty():
    """Rows are iterated in chunks of chunk_rows to bound memory; any chunking gives the same values."""
    f = conv_net()
    op = BlurDecimate((1, 8, 8), factor=2)
    g = lambda y: f(op.adjoint(y))  # noqa: E731
    y = torch.randn(7, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    runs = []
    for chunk_rows in (1, 3, 7):
        penalty = SpectralJacobianPenalty({"sja": op, "sj": None}, chunk_rows=chunk_rows, jvp_mode="forward")
        runs.append([penalty(g, y, index=torch.arange(7)) for _ in range(3)])
    for other in runs[1:]:
        for (values_a, stats_a), (values_b, stats_b) in zip(runs[0], other):
            for name in ("sja", "sj"):
                torch.testing.assert_close(values_a[name], values_b[name], rtol=1e-5, atol=0)
                torch.testing.assert_close(stats_a[name], stats_b[name], rtol=1e-5, atol=0)


def blur_problem(rows=7):
    """A conv net behind A^T for BlurDecimate, and low-resolution measurements (rows, 1, 4, 4)."""
    f, op = conv_net(), BlurDecimate((1, 8, 8), factor=2)
    return (lambda y: f(op.adjoint(y))), op, torch.randn(rows, 1, 4, 4, generator=torch.Generator().manual_seed(3))


def relative_errors(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)


def test_finite_difference_products_converge_to_exact_ones_at_first_order(monkeypatch):
    g, _, y = blur_problem()
    t = torch.randn(y.shape, generator=torch.Generator().manual_seed(4))
    exact = JacobianProducts(g, y, "forward").jvp(t)
    errors = []
    for step in (1e-2, 1e-3, 1e-4):
        monkeypatch.setattr(products, "FD_STEP", step)
        errors.append(float(relative_errors(JacobianProducts(g, y, "finite_difference").jvp(t), exact).max()))
    assert errors[0] < 1e-2
    assert 5 < errors[0] / errors[1] < 20 and 5 < errors[1] / errors[2] < 20  # error proportional to the step


def test_finite_difference_products_on_a_float32_relu_net():
    """The regime the mode is meant for: about 1e-3 of ||J t|| (kinks crossed within the step, rounding)."""
    net = build_model("dncnn", Identity((1, 16, 16)), depth=3).float()
    y = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    t = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    exact = JacobianProducts(net, y, "forward").jvp(t)
    assert float(relative_errors(JacobianProducts(net, y, "finite_difference").jvp(t), exact).max()) < 1e-2
    zero = JacobianProducts(net, y, "finite_difference").jvp(torch.zeros_like(t))
    assert torch.equal(zero, torch.zeros_like(zero))


def test_finite_difference_penalty_matches_exact_norms():
    """Finite differences drive the detached power iterations only; the differentiable value is
    forward mode at the final vector, so it stays a lower bound of the exact norm."""
    g, op, y = blur_problem()
    exact = torch.linalg.matrix_norm(exact_jacobians(g, y) @ op.to_dense(), ord=2).detach()
    penalty = SpectralJacobianPenalty({"sja": op}, iters=60, cold_iters=60, jvp_mode="finite_difference")
    values, stats = penalty(g, y, index=torch.arange(y.shape[0]))
    torch.testing.assert_close(stats["sja"], exact, rtol=1e-4, atol=0)
    assert values["sja"].requires_grad
    assert float(exact.max()) * (1 - 1e-4) <= float(values["sja"].detach()) <= float(exact.max()) * (1 + 1e-9)


def test_finite_difference_spectral_norm_is_differentiable_and_matches_exact():
    g, op, y = blur_problem()
    exact = torch.linalg.matrix_norm(exact_jacobians(g, y) @ op.to_dense(), ord=2).detach()
    norms = jacobian_spectral_norm(g, y, op, iters=60, jvp_mode="finite_difference")
    torch.testing.assert_close(norms.detach(), exact, rtol=1e-4, atol=0)
    assert norms.requires_grad


def test_finite_difference_products_are_not_differentiable():
    g, _, y = blur_problem()
    with pytest.raises(ValueError, match="'finite_difference' gives detached products"):
        JacobianProducts(g, y, "finite_difference").jvp(torch.ones_like(y), create_graph=True)


def test_fastest_mode_picks_finite_differences_for_conv_nets_only(cs_problem):
    assert JacobianProducts(conv_net(), torch.zeros(1, 1, 4, 4), "fastest").mode == "finite_difference"
    assert JacobianProducts(cs_problem[0], cs_problem[2], "fastest").mode == "double_vjp"


@pytest.mark.parametrize("screen", [False, True])
# a screened value is one product: finite differences carry their first-order error (about FD_STEP) into it
@pytest.mark.parametrize("jvp_mode, rtol", [("auto", 1e-6), ("finite_difference", 2e-3)])
def test_screen_ranks_samples_by_their_current_norm_at_the_stored_vectors(cs_problem, screen, jvp_mode, rtol):
    """Stale stored estimates that hide the batch maximum mislead the choice of the refreshed sample;
    the screen re-evaluates ||J A v_i|| at the stored vectors and finds it."""
    f, op, y = cs_problem
    exact = torch.linalg.matrix_norm(exact_jacobians(f, y) @ op.to_dense(), ord=2).detach()
    penalty = SpectralJacobianPenalty({"sja": op}, iters=50, cold_iters=50, candidates=1, refresh=0, screen=screen,
                                      store_dtype=torch.float64, jvp_mode=jvp_mode)
    index = torch.arange(y.shape[0])
    penalty(f, y, index=index)                          # first visit: every vector converges
    bank = penalty.banks["sja"]
    bank.values[int(exact.argmax())] = 0.0              # a stale estimate hides the maximum
    bank.values[int(exact.argmin())] = 2 * exact.max()  # and another one pretends to be it
    values, stats = penalty(f, y, index=index)
    found = torch.isclose(values["sja"].detach(), exact.max(), rtol=1e-6)
    assert bool(found) == screen
    row = stats["argmax_sja"]  # the sample the penalty's value was taken at: the stale impostor without the screen
    assert row == (int(exact.argmax()) if screen else int(exact.argmin()))
    # its estimate is the larger of the value and the iterations' own bound (finite differences: within rtol)
    assert float(stats["sja"][row]) == pytest.approx(float(values["sja"]), rel=rtol)
    if screen:  # every sample's estimate is its current norm at its stored vector
        torch.testing.assert_close(stats["sja"], exact, rtol=rtol, atol=0)


def test_refresh_all_iterates_every_sample_whatever_the_stored_estimates(cs_problem):
    """With refresh "all" the stale estimates that mislead the ranking (see the screen test) do not matter:
    every row is iterated, and the value is the batch max."""
    f, op, y = cs_problem
    exact = torch.linalg.matrix_norm(exact_jacobians(f, y) @ op.to_dense(), ord=2).detach()
    penalty = SpectralJacobianPenalty({"sja": op}, iters=50, cold_iters=50, candidates=1, refresh="all",
                                      store_dtype=torch.float64)
    index = torch.arange(y.shape[0])
    penalty(f, y, index=index)
    bank = penalty.banks["sja"]
    bank.values[int(exact.argmax())] = 0.0
    bank.values[int(exact.argmin())] = 2 * exact.max()
    values, stats = penalty(f, y, index=index)
    assert stats["argmax_sja"] == int(exact.argmax())
    assert float(values["sja"]) == pytest.approx(float(exact.max()), rel=1e-6)
    torch.testing.assert_close(stats["sja"], exact, rtol=1e-6, atol=0)
    assert int(bank.age[index].max()) == 0  # every sample refreshed


class _Counting(nn.Module):
    """Wraps a net and counts its forward calls and the rows (samples) they carry."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls, self.rows = net, 0, 0

    def forward(self, y):
        self.calls += 1
        self.rows += y.shape[0]
        return self.net(y)


# rows through the net on a warm step of one target: (rows chosen, iterations, focus) -> rows
_WARM_STEP_ROWS = {
    # a dual pass per step (its primal gives the graph for the vjp), + the differentiable pass on the arg-max
    "forward": lambda chosen, iters, focus: (iters * chosen if not focus else chosen + (iters - 1) * focus) + 1,
    # a graph forward, then a plain forward per step, + the differentiable pass on the arg-max
    "finite_difference": lambda chosen, iters, focus: (
        chosen + iters * chosen if not focus else 2 * chosen + focus + (iters - 1) * focus) + 1,
}


@pytest.mark.parametrize("jvp_mode", ["forward", "finite_difference"])
def test_focus_iterates_only_the_rows_ranked_highest_after_one_step(jvp_mode):
    """With focus = k every chosen row takes one power step and the k then ranked highest take the rest;
    the arg-max's value stays exact once its vector has converged."""
    _, op, y = blur_problem(rows=7)
    net = _Counting(conv_net())
    counted = lambda v: net(op.adjoint(v))  # noqa: E731
    exact = torch.linalg.matrix_norm(exact_jacobians(counted, y) @ op.to_dense(), ord=2).detach()
    index, chosen, iters = torch.arange(y.shape[0]), 4, 5
    for focus in (0, 2):
        penalty = SpectralJacobianPenalty({"sja": op}, iters=iters, cold_iters=80, candidates=3, refresh=1,
                                          store_dtype=torch.float64, jvp_mode=jvp_mode, chunk_rows=8, focus=focus)
        penalty(counted, y, index=index)  # first visit: every row cold and iterated to convergence
        net.rows = 0
        values, stats = penalty(counted, y, index=index)
        assert net.rows == _WARM_STEP_ROWS[jvp_mode](chosen, iters, focus)
        torch.testing.assert_close(values["sja"].detach(), exact.max(), rtol=1e-4, atol=0)
        assert bool((stats["sja"] <= exact * (1 + 2e-3)).all())


def test_cold_penalty_without_index_is_a_lower_bound_on_the_max(cs_problem):
    f, op, y = cs_problem
    exact = torch.linalg.matrix_norm(exact_jacobians(f, y) @ op.to_dense(), ord=2).max().detach()
    values, stats = SpectralJacobianPenalty({"sja": op}, cold_iters=3)(f, y)
    value = float(values["sja"].detach())
    assert 0.7 * float(exact) <= value <= float(exact) * (1 + 1e-9)


def test_identity_target_shares_the_work_of_j():
    f = conv_net()
    penalty = SpectralJacobianPenalty({"sja": Identity((1, 6, 6)), "sj": None})
    values, _ = penalty(f, torch.randn(3, 1, 6, 6), index=torch.arange(3))
    assert values["sja"] is values["sj"] and list(penalty.banks) == ["J"]


def test_bank_state_round_trips_through_state_dict(cs_problem):
    f, op, y = cs_problem
    reg = build_regularizer("sja+sj", operator=op, lambda_ja=0.1, lambda_j=0.1)
    reg(f, y, index=torch.arange(5))
    clone = build_regularizer("sja+sj", operator=op, lambda_ja=0.1, lambda_j=0.1)
    clone.load_state_dict(reg.state_dict())
    for key, bank in reg.terms[0].banks.items():
        assert torch.equal(bank.vectors, clone.terms[0].banks[key].vectors)
    a = reg(f, y, index=torch.arange(5))
    b = clone(f, y, index=torch.arange(5))
    assert float(a) == float(b)


def test_eval_mode_does_not_update_the_bank(cs_problem):
    f, op, y = cs_problem
    reg = build_regularizer("sja", operator=op, lambda_ja=1.0)
    reg(f, y, index=torch.arange(5))
    before = reg.terms[0].banks["sja"].state()
    reg.eval()
    reg(f, y, index=torch.arange(5))
    after = reg.terms[0].banks["sja"].state()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("name", REGULARIZERS)
def test_every_regularizer_builds_and_backpropagates(cs_problem, name):
    f, op, y = cs_problem
    x = torch.randn(5, 1, 4, 4)
    reg = build_regularizer(name, operator=op).to("cpu")  # moves like any module
    value = reg(f, y, x, index=torch.arange(5), loss=torch.tensor(0.5))
    assert value.dim() == 0 and math.isfinite(float(value))
    if name == "none":
        assert float(value) == 0.0
        return
    value.backward()
    grads = [p.grad for p in f.parameters()]
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads)
    assert all(torch.isfinite(g).all() for g in grads if g is not None)


def test_weight_spectral_norm_matches_layer_operator_norms():
    f = conv_net()
    y = torch.randn(2, 1, 6, 6)
    reg = build_regularizer("sw", weight=1.0, iters=10000)
    value = reg(f, y)
    conv1, conv2 = f[0], f[2]
    exact = 0.0
    for conv, c in ((conv1, 1), (conv2, 4)):
        jac = torch.autograd.functional.jacobian(
            lambda t: nn.functional.conv2d(t[None], conv.weight, None, padding=1).reshape(-1), torch.zeros(c, 6, 6))
        exact += float(torch.linalg.matrix_norm(jac.reshape(jac.shape[0], -1), ord=2))
    assert float(value) == pytest.approx(exact, rel=1e-6)


def test_datagrad_is_the_squared_input_gradient_of_the_l2_loss(cs_problem):
    f, op, y = cs_problem
    x = torch.randn(5, 1, 4, 4)
    reg = build_regularizer("datagrad", weight=1.0)
    value = reg(f, y, x)
    expected = 0.0
    for i in range(5):
        yi = y[i: i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad((f(yi) - x[i: i + 1]).norm(), yi)
        expected += float(g.pow(2).sum()) / 5
    assert float(value) == pytest.approx(expected, rel=1e-10)


def test_auto_weight_follows_algorithm_4():
    assert auto_weight(1.0, 0.03, kappa=20) == pytest.approx(10 / 20)
    assert auto_weight(0.2, 5.0, kappa=20) == pytest.approx(0.01 / 20)
    assert auto_weight(1.0, 0.0) == 0.0


def test_batchnorm_in_train_mode_is_refused(cs_problem):
    _, op, y = cs_problem
    f = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Unflatten(1, (1, 4, 4)))
    with pytest.raises(ValueError, match="BatchNorm1d in train mode"):
        build_regularizer("sja", operator=op, lambda_ja=1.0)(f, y)
    f.eval()
    assert math.isfinite(float(build_regularizer("sja", operator=op, lambda_ja=1.0)(f, y)))


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="sjx"), r"unknown regularizer name 'sjx'"),
    (dict(name="sja"), r"'sja' is model-aware and needs operator="),
    (dict(name="sja+sj", operator=Identity((2,)), lambda_ja=-1.0), r"lambda for 'sja' must be a finite number in \[0.0"),
    (dict(name="fj", iters=3), r"unknown option\(s\) \['iters'\] for regularizer 'fj'"),
    (dict(name="sj", candidates=0), "candidates must be an int >= 1, got 0"),
    (dict(name="sj", chunk_rows=0), "chunk_rows must be an int >= 1, got 0"),
    (dict(name="sj", krylov=0), "krylov must be an int >= 1, got 0"),
    (dict(name="sj", screen="yes"), "screen must be true or false, got 'yes'"),
    (dict(name="sj", focus=-1), "focus must be an int >= 0, got -1"),
    (dict(name="sj", refresh="half"), "refresh must be an int >= 0 or 'all', got 'half'"),
    (dict(name="sj", refresh=-1), "refresh must be an int >= 0, got -1"),
    (dict(name="fj", projection="uniform"), r"projection must be one of"),
])
def test_bad_regularizer_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build_regularizer(**kwargs)


def test_auto_weight_without_loss_is_refused(cs_problem):
    f, op, y = cs_problem
    with pytest.raises(ValueError, match="'auto', which needs loss="):
        build_regularizer("sja", operator=op)(f, y)


def test_lazy_regularisation_evaluates_every_kth_step_with_weight_times_k(cs_problem):
    f, op, y = cs_problem
    eager = build_regularizer("sja+sj", operator=op, lambda_ja=0.3, lambda_j=0.2)
    lazy = build_regularizer("sja+sj", operator=op, lambda_ja=0.3, lambda_j=0.2, every=3)
    counted = _Counting(f)
    values = [lazy(counted, y) for _ in range(6)]
    expected = 3 * eager(f, y)
    torch.testing.assert_close(values[0], expected, rtol=1e-12, atol=0)
    assert [float(v) for v in values[1:3]] == [0.0, 0.0] and float(values[3]) > 0 and float(values[4]) == 0.0
    calls_on_first_step = counted.calls // 2
    assert counted.calls == 2 * calls_on_first_step  # off steps never ran the network
    assert lazy.last_stats["lambda_sja"] == pytest.approx(0.9)
    lazy.eval()  # evaluation always computes the penalty, unscaled, and leaves the cycle alone
    assert float(lazy(f, y)) > 0 and lazy.last_stats["lambda_sja"] == pytest.approx(0.3)
    assert float(lazy(f, y)) > 0 and int(lazy.calls) == 6


def test_lazy_regularisation_cycle_survives_a_checkpoint(cs_problem):
    f, op, y = cs_problem
    reg = build_regularizer("sj", lambda_j=1.0, every=2)
    reg(f, y)
    clone = build_regularizer("sj", lambda_j=1.0, every=2)
    clone.load_state_dict(reg.state_dict())
    assert float(clone(f, y)) == 0.0 and float(clone(f, y)) > 0.0
    old_state = {k: v for k, v in reg.state_dict().items() if k != "calls"}  # saved before `every` existed
    build_regularizer("sj", lambda_j=1.0).load_state_dict(old_state)


def test_every_must_be_a_positive_int():
    with pytest.raises(ValueError, match="every must be an int >= 1, got 0"):
        build_regularizer("sj", every=0)
