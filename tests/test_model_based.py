"""Model-based networks (A inside the net): shapes on every operator kind, their algorithms, the
Jacobian regularisers on the whole map y -> x_hat against exact Jacobians, and the model registry."""
import math

import pytest
import torch
from torch import nn

from jacinv.models import MoDL, UnrolledProximalGradient, VarNet, build_model, count_parameters, register_model
from jacinv.operators import BlurDecimate, GaussianCS, Identity, KSpaceSubsample, build_operator
from jacinv.operators.fourier import ifft2c
from jacinv.regularizers import (REGULARIZERS, JacobianProducts, SpectralJacobianPenalty, build_regularizer, jacobian_frobenius_sq,
                                 jacobian_spectral_norm)

import operator_cases  # noqa: F401  registers the forward-only plug-in operator "test_finite_difference"
from jacobians import exact_jacobians, grads

OPERATORS = {
    "cs": lambda: GaussianCS((1, 12, 12), 60, seed=0),
    "blur_rgb": lambda: BlurDecimate((3, 16, 16), factor=2),
    "kspace_real": lambda: KSpaceSubsample((1, 16, 16), acceleration=4, center_fraction=0.125),
    "kspace_complex": lambda: KSpaceSubsample((1, 16, 16, 2), acceleration=4, center_fraction=0.125),
    "identity": lambda: Identity((1, 12, 12)),
    "plug_in": lambda: build_operator("test_finite_difference", n=12),
}
SMALL = {"unrolled": dict(iterations=2, depth=3, features=8), "modl": dict(iterations=2, cg_iters=4, depth=3, features=8),
         "varnet": dict(cascades=2, chans=4, num_pool_layers=2)}


@pytest.mark.parametrize("op_name", sorted(OPERATORS))
@pytest.mark.parametrize("name", ["unrolled", "modl"])
def test_model_based_nets_take_every_operator_kind(name, op_name):
    op = OPERATORS[op_name]()
    model = build_model(name, op, **SMALL[name])
    x = torch.rand(2, *op.in_shape)
    out = model(op(x))
    assert out.shape == (2, *op.in_shape) and bool(torch.isfinite(out).all())
    out.sum().backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in model.parameters())


@pytest.mark.parametrize("op_name", ["kspace_real", "kspace_complex"])
def test_varnet_takes_real_and_complex_images(op_name):
    op = OPERATORS[op_name]()
    model = build_model("varnet", op, **SMALL["varnet"])
    assert model(op(torch.rand(2, *op.in_shape))).shape == (2, *op.in_shape)


@pytest.mark.parametrize("name, kwargs, n_params", [
    ("unrolled", {}, 141_770), ("unrolled", {"shared": True}, 28_358), ("modl", {}, 28_354),
])
def test_parameter_counts_quoted_in_the_docstrings(name, kwargs, n_params):
    assert count_parameters(build_model(name, GaussianCS((1, 28, 28), 160), **kwargs)) == n_params


def test_varnet_parameter_count_quoted_in_the_docstring():
    assert count_parameters(build_model("varnet", KSpaceSubsample((1, 32, 32)))) == 962_840


def test_unrolled_steps_start_at_one_over_the_squared_spectral_norm():
    op = GaussianCS((1, 8, 8), 20, seed=0)
    model = build_model("unrolled", op, iterations=3)
    expected = torch.full((3,), 1.0 / op.spectral_norm() ** 2)
    torch.testing.assert_close(model.log_steps.exp().detach(), expected, rtol=1e-6, atol=0)


def test_unrolled_with_identity_cnns_is_gradient_descent_from_the_scaled_adjoint():
    """With R_k = 0 the net is K steps of gradient descent on 1/2 ||A x - y||^2 with step 1/||A||^2."""
    torch.set_default_dtype(torch.float64)
    try:
        op = GaussianCS((1, 6, 6), 20, seed=1)
        model = UnrolledProximalGradient(op, iterations=4, depth=2, features=2)
        for cnn in model.cnns:
            nn.init.zeros_(cnn.net[-1].weight)
            nn.init.zeros_(cnn.net[-1].bias)
        y = torch.randn(3, 20)
        step = 1.0 / op.spectral_norm() ** 2
        x = op.adjoint(y) * step
        for _ in range(4):
            x = x - step * op.adjoint(op(x) - y)
        torch.testing.assert_close(model(y), x, rtol=1e-10, atol=1e-12)
    finally:
        torch.set_default_dtype(torch.float32)


def test_modl_data_consistency_solves_the_regularised_normal_equations():
    """One MoDL iteration with converged CG: (A^T A + mu I) x_1 = A^T y + mu D(x_0)."""
    torch.set_default_dtype(torch.float64)
    try:
        op = GaussianCS((1, 6, 6), 15, seed=2)
        model = MoDL(op, iterations=1, cg_iters=200, mu=0.1, depth=3, features=4)
        y = torch.randn(2, 15)
        mu = model.log_mu.exp()
        torch.testing.assert_close(mu, torch.tensor(0.1 * op.spectral_norm() ** 2), rtol=1e-10, atol=0)
        x1 = model(y)
        rhs = op.adjoint(y) + mu * model.denoiser(model.start(y))
        torch.testing.assert_close(op.gram(x1) + mu * x1, rhs, rtol=1e-8, atol=1e-10)
    finally:
        torch.set_default_dtype(torch.float32)


def test_varnet_data_consistency_is_a_gradient_step_in_image_space():
    """A cascade's k <- k - eta M (k - y) is, for complex images, the image-space gradient step
    x <- x - eta A^T (A x - y) with x = F^-1 k (F is unitary).  The first cascade's U-Net is made to
    return a fixed image c (so k_1 = y - F c is off the data), the second's returns zero."""
    torch.set_default_dtype(torch.float64)
    try:
        op = KSpaceSubsample((1, 8, 8, 2), acceleration=2, center_fraction=0.25, seed=3)
        model = VarNet(op, cascades=2, chans=2, num_pool_layers=1)
        c = torch.randn(1, *op.in_shape)
        model.refiners[0].forward = lambda image: c.expand_as(image)
        model.refiners[1].forward = torch.zeros_like
        with torch.no_grad():
            model.dc_weights.copy_(torch.tensor([0.7, 0.3]))
        y = op(torch.randn(2, *op.in_shape))
        x1 = ifft2c(y) - c  # after cascade 1: M (k_0 - y) = 0
        torch.testing.assert_close(model(y), x1 - 0.3 * op.adjoint(op(x1) - y), rtol=1e-10, atol=1e-12)
    finally:
        torch.set_default_dtype(torch.float32)


# --------------------------------------------------------- Jacobian regularisers on the whole map

@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def tiny_problem(name):
    """A tiny float64 instance: the net, its operator and measurements."""
    torch.manual_seed(0)
    if name == "varnet":
        op = KSpaceSubsample((1, 4, 4), acceleration=2, center_fraction=0.25, seed=0)
        model = build_model(name, op, cascades=1, chans=2, num_pool_layers=1)
    else:
        op = GaussianCS((1, 4, 4), 8, seed=0)
        model = build_model(name, op, iterations=2, depth=2, features=3, **({"cg_iters": 3} if name == "modl" else {}))
    y = op(torch.rand(3, *op.in_shape)) + 0.05 * torch.randn(3, *op.out_shape)
    return model, op, y


@pytest.mark.parametrize("mode", ["forward", "double_vjp"])
@pytest.mark.parametrize("name", ["unrolled", "modl", "varnet"])
def test_jacobian_products_match_exact_jacobians(float64, name, mode):
    """J t and J^T u through the whole net (A, A^T, CG or FFTs inside), in both AD modes."""
    model, op, y = tiny_problem(name)
    jac = exact_jacobians(model, y).detach()
    products = JacobianProducts(model, y, mode)
    t, u = torch.randn_like(y), torch.randn(y.shape[0], *op.in_shape)
    torch.testing.assert_close(products.jvp(t).flatten(1), (jac @ t.flatten(1)[..., None])[..., 0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(products.vjp(u).flatten(1), (jac.transpose(1, 2) @ u.flatten(1)[..., None])[..., 0],
                               rtol=1e-9, atol=1e-12)


def top_singular(m):
    """(sigma (B,), right singular vectors (B, n)) of a batch of matrices."""
    _, s, vh = torch.linalg.svd(m)
    return s[:, 0], vh[:, 0]


@pytest.mark.parametrize("with_operator", [True, False])
@pytest.mark.parametrize("name", ["unrolled", "modl", "varnet"])
def test_spectral_norms_match_exact_jacobians(float64, name, with_operator):
    model, op, y = tiny_problem(name)
    jac = exact_jacobians(model, y).detach()
    m = jac @ op.to_dense() if with_operator else jac
    exact, v = top_singular(m)
    shape = (y.shape[0], *(op.in_shape if with_operator else y.shape[1:]))
    target = op if with_operator else None
    est = jacobian_spectral_norm(model, y, target, iters=40, generator=torch.Generator().manual_seed(0)).detach()
    assert bool((est <= exact * (1 + 1e-9)).all()) and bool((est >= 0.9 * exact).all())  # a lower bound, close
    at_top = jacobian_spectral_norm(model, y, target, iters=2, v0=v.reshape(shape)).detach()
    torch.testing.assert_close(at_top, exact, rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", ["unrolled", "modl"])
def test_spectral_penalty_gradient_matches_the_exact_one(float64, name):
    """At the top singular vector the differentiable norm u^T J A v has the exact norm's parameter gradient."""
    model, op, y = tiny_problem(name)
    params = list(model.parameters())
    exact_all = torch.linalg.matrix_norm(exact_jacobians(model, y) @ op.to_dense(), ord=2)
    i = int(exact_all.argmax())
    _, v = top_singular((exact_jacobians(model, y[i:i + 1]) @ op.to_dense()).detach())
    est = jacobian_spectral_norm(model, y[i:i + 1], op, iters=1, v0=v.reshape(1, *op.in_shape))[0]
    for a, b in zip(grads(est, params), grads(exact_all.max(), params)):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10)


def test_training_penalty_reaches_the_exact_batch_maximum(float64):
    """The training path (warm-started bank, arg-max refresh, forward-mode products) on a model-based net."""
    model, op, y = tiny_problem("unrolled")
    penalty = SpectralJacobianPenalty({"sja": op, "sj": None}, iters=1)
    for _ in range(150):
        values, _ = penalty(model, y, index=torch.arange(3))
    jac = exact_jacobians(model, y)
    for key, m in (("sja", jac @ op.to_dense()), ("sj", jac)):
        exact = torch.linalg.matrix_norm(m, ord=2).max().detach()
        torch.testing.assert_close(values[key].detach(), exact, rtol=1e-6, atol=0)


@pytest.mark.parametrize("with_operator", [True, False])
@pytest.mark.parametrize("name", ["unrolled", "modl"])
def test_frobenius_estimates_are_unbiased(float64, name, with_operator):
    model, op, y = tiny_problem(name)
    target = op if with_operator else None
    jac = exact_jacobians(model, y)
    exact = (jac @ op.to_dense() if with_operator else jac).pow(2).sum((1, 2)).detach()
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([jacobian_frobenius_sq(model, y, target, projection="rademacher", generator=g).detach()
                         for _ in range(300)])
    se = draws.std(0) / math.sqrt(draws.shape[0])
    assert bool(((draws.mean(0) - exact).abs() <= 4 * se + 1e-12).all()), (draws.mean(0), exact, se)


@pytest.mark.parametrize("reg_name", REGULARIZERS)
@pytest.mark.parametrize("name", ["unrolled", "modl", "varnet"])
def test_every_regularizer_trains_a_model_based_net(float64, name, reg_name):
    model, op, y = tiny_problem(name)
    x = torch.rand(3, *op.in_shape)
    reg = build_regularizer(reg_name, operator=op)
    value = reg(model, y, x, index=torch.arange(3), loss=torch.tensor(0.5))
    assert value.dim() == 0 and math.isfinite(float(value))
    if reg_name == "none":
        return
    value.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.parameters())
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)


# ------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("name, op, kwargs, error, match", [
    ("varnet", GaussianCS((1, 8, 8), 20), {}, ValueError,
     r"model 'varnet' needs a k-space operator \(KSpaceSubsample.*got GaussianCS \(1, 8, 8\) -> \(20,\)"),
    ("varnet", KSpaceSubsample((1, 8, 8)), {"num_pool_layers": 4}, ValueError,
     r"image \(8, 8\) is too small for num_pool_layers=4"),
    ("varnet", KSpaceSubsample((1, 16, 16)), {"cascades": 0}, ValueError, "cascades must be an int >= 1, got 0"),
    ("unrolled", GaussianCS((1, 8, 8), 20), {"iterations": 0}, ValueError, "iterations must be an int >= 1, got 0"),
    ("unrolled", GaussianCS((1, 8, 8), 20), {"iterations": 2.5}, TypeError, r"iterations must be an int >= 1, got 2.5"),
    ("unrolled", GaussianCS((1, 8, 8), 20), {"shared": "yes"}, TypeError, "shared must be true or false, got 'yes'"),
    ("unrolled", GaussianCS((64,), 20), {}, ValueError,
     r"model 'unrolled' needs an operator on images, in_shape \(C, H, W\) or \(C, H, W, 2\); got in_shape \(64,\)"),
    ("modl", GaussianCS((1, 8, 8), 20), {"mu": 0.0}, ValueError, r"mu must be a finite number in \(0.0, inf\], got 0.0"),
    ("modl", GaussianCS((1, 8, 8), 20), {"mu": -1}, ValueError, r"mu must be a finite number in \(0.0, inf\], got -1"),
    ("modl", GaussianCS((1, 8, 8), 20), {"cg_iters": 0}, ValueError, "cg_iters must be an int >= 1, got 0"),
    ("modl", GaussianCS((1, 8, 8), 20), {"iterations": -3}, ValueError, "iterations must be an int >= 1, got -3"),
    ("modl", GaussianCS((1, 8, 8), 20), {"steps": 3}, TypeError, "unexpected keyword argument 'steps'"),
])
def test_model_based_bad_arguments(name, op, kwargs, error, match):
    with pytest.raises(error, match=match):
        build_model(name, op, **kwargs)


# ------------------------------------------------------------------------------ registry

class _Scaled(nn.Module):
    def __init__(self, operator, gain=1.0):
        super().__init__()
        self.operator, self.gain = operator, nn.Parameter(torch.tensor(gain))

    def forward(self, y):
        return self.gain * self.operator.adjoint(y)


register_model("test_scaled_adjoint", lambda operator, **kw: _Scaled(operator, **kw))


def test_registered_model_builds_trains_and_evaluates(tmp_path):
    from jacinv.cli import evaluate_main, train_main

    run = tmp_path / "run"
    code = train_main(["model.name=test_scaled_adjoint", "model.kwargs={gain: 2.0}", "data.n_train=20",
                       "data.n_test=10", "train.batch_size=10", "train.epochs=2", "train.probe_size=2",
                       "train.probe_iters=2", "regularizer.name=sja", "--run-dir", str(run), "--no-progress"])
    assert code == 0
    assert evaluate_main([str(run)]) == 0


def test_registering_over_a_name_is_refused():
    with pytest.raises(ValueError, match="model name 'unrolled' is already registered"):
        register_model("unrolled", lambda operator: nn.Identity())
    with pytest.raises(ValueError, match="model name 'test_scaled_adjoint' is already registered"):
        register_model("test_scaled_adjoint", lambda operator: nn.Identity())


@pytest.mark.parametrize("factory, error, match", [
    (lambda operator: nn.Flatten(), ValueError, r"returns shape \(1, 8\) for one measurement, expected \(1, 1, 4, 4\)"),
    (lambda operator: "not a net", TypeError, "model factory 'test_bad_.*' must return an nn.Module, got str"),
    (lambda operator: nn.Linear(3, 3), ValueError, r"cannot take measurements of shape \(B, 8\)"),
])
def test_a_factory_returning_the_wrong_thing_is_refused(factory, error, match):
    name = f"test_bad_{id(factory)}"
    register_model(name, factory)
    with pytest.raises(error, match=match):
        build_model(name, GaussianCS((1, 4, 4), 8))


@pytest.mark.parametrize("args, error, match", [
    (("", lambda operator: nn.Identity()), TypeError, "model name must be a non-empty string, got ''"),
    (("test_not_callable", 3), TypeError, "factory must be callable .* got 3"),
])
def test_register_model_bad_arguments(args, error, match):
    with pytest.raises(error, match=match):
        register_model(*args)


def test_unknown_model_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"model name must be one of \[.*'modl'.*'unrolled', 'varnet'.*got 'resnet'"):
        build_model("resnet", Identity((1, 8, 8)))


def test_checkpoints_do_not_carry_the_operator():
    """A net trained with a 4x mask, loaded into the same net built for an 8x mask, keeps the 8x mask:
    operators are rebuilt from the configuration, never restored from a model's state."""
    op4 = KSpaceSubsample((1, 16, 16), acceleration=4, center_fraction=0.125, seed=0)
    op8 = KSpaceSubsample((1, 16, 16), acceleration=8, center_fraction=0.0625, seed=0)
    for name in ("varnet", "unrolled", "unet"):
        kwargs = {"unet": {"chans": 4, "num_pool_layers": 2}}.get(name, SMALL.get(name, {}))
        state = build_model(name, op4, **kwargs).state_dict()
        assert not any("mask" in key for key in state), name
        model = build_model(name, op8, **kwargs)
        model.load_state_dict(state)
        assert torch.equal(model.operator.mask if name != "unet" else model.pre.operator.mask, op8.mask)
    old_style = {**state, "pre.operator.mask": op4.mask}  # checkpoints of earlier versions carried it
    model.load_state_dict(old_style)
    assert torch.equal(model.pre.operator.mask, op8.mask)


@pytest.mark.slow
def test_a_short_varnet_run_beats_total_variation(tmp_path):
    """The headline claim at small scale: 30 epochs of `mri_4x_varnet` (about 2 minutes) beat
    evaluate.py's TV row by more than 1 dB on the same test slices."""
    import json
    from pathlib import Path

    from jacinv.cli import evaluate_main, train_main

    run = tmp_path / "run"
    config = Path(__file__).resolve().parents[1] / "configs" / "mri_4x_varnet.yaml"
    assert train_main(["--config", str(config), "train.epochs=30", "train.eval_every=30", "--run-dir", str(run),
                       "--no-progress"]) == 0
    assert evaluate_main([str(run)]) == 0
    summary = json.loads((run / "report.json").read_text())["summary"]
    tv = next(v for k, v in summary.items() if k.startswith("tv("))
    assert summary["network"]["psnr"] > tv["psnr"] + 1.0, (summary["network"]["psnr"], tv["psnr"])
