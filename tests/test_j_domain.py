"""regularizer.j_domain = measured: the ||J|| term on the perturbations a measurement can carry, J(y) P."""
import pytest
import torch

from jacinv.cli import train_main
from jacinv.evaluation import probe_jacobian_norms
from jacinv.operators import Identity, MeasuredPart, build_operator, check_adjoint
from jacinv.regularizers import build_regularizer, jacobian_spectral_norm
from jacinv.regularizers.regularizer import TARGET_MARGIN
from jacinv.schema import ConfigError, check_config, defaults

from test_training import COMMON, ROOT, TINY


def _kspace():
    """4 x 6 k-space, 2 of 6 columns sampled: y (B, 1, 4, 6, 2), 16 of its 48 entries measured."""
    return build_operator("kspace", in_shape=(1, 4, 6), acceleration=2, center_fraction=0.2, pattern="random",
                          seed=0).double()


def _mlp(op, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(torch.Size(op.out_shape).numel(), 32), torch.nn.Tanh(),
                               torch.nn.Linear(32, torch.Size(op.in_shape).numel()),
                               torch.nn.Unflatten(1, tuple(op.in_shape))).double()


def _projector_matrix(op) -> torch.Tensor:
    d = torch.Size(op.out_shape).numel()
    return torch.diag(op.measured_part(torch.ones(1, *op.out_shape, dtype=torch.float64)).reshape(d))


def _exact_norms(f, y, op) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (||J||_2, ||J P||_2) from the exact Jacobians."""
    jac = torch.stack([torch.autograd.functional.jacobian(lambda t: f(t[None]).reshape(-1), row).reshape(
        -1, row.numel()) for row in y])
    return torch.linalg.matrix_norm(jac, 2), torch.linalg.matrix_norm(jac @ _projector_matrix(op), 2)


def test_the_measured_projector_is_the_orthogonal_projection_on_the_sampled_entries():
    op = _kspace()
    p = op.measured_projector()
    assert isinstance(p, MeasuredPart) and p.in_shape == p.out_shape == op.out_shape
    assert check_adjoint(p) < 1e-12
    e = torch.randn(3, *op.out_shape, dtype=torch.float64)
    assert torch.equal(p(p(e)), p(e)) and torch.equal(p(e), op.measured_part(e))
    assert int(_projector_matrix(op).diag().sum()) == 16 and p.spectral_norm() == 1.0
    # an operator that measures every entry: P is the identity, so J P is J and penalties share its work
    assert isinstance(build_operator("gaussian_cs", in_shape=(6,), n_measurements=3).measured_projector(), Identity)


def test_the_measured_norm_is_the_exact_norm_of_j_p_and_smaller_than_the_whole_one():
    op = _kspace()
    f = _mlp(op)
    y = torch.randn(4, *op.out_shape, dtype=torch.float64)
    whole, measured = _exact_norms(f, y, op)
    assert (measured < 0.9 * whole).all()               # 2/3 of y's entries are unmeasured: J P is much smaller
    estimate = jacobian_spectral_norm(f, y, op.measured_projector(), iters=300, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(estimate.detach(), measured, rtol=1e-6, atol=0)
    reg = build_regularizer("sj", operator=op, lambda_j=1.0, j_domain="measured", cold_iters=300,
                            store_dtype=torch.float64).eval()
    torch.testing.assert_close(reg(f, y).detach(), measured.max(), rtol=1e-6, atol=0)
    probe = probe_jacobian_norms(f, y, op, iters=300, seed=0, j_domain="measured")
    assert probe["probe_max_sj"] == pytest.approx(float(measured.max()), rel=1e-6)


def test_a_measured_target_bounds_j_p_and_leaves_the_unmeasured_directions_free():
    op = _kspace()
    gen = torch.Generator().manual_seed(1)
    d, n = torch.Size(op.out_shape).numel(), 64
    truth = torch.randn(torch.Size(op.in_shape).numel(), d, generator=gen, dtype=torch.float64)
    truth = 3.0 * truth / torch.linalg.matrix_norm(truth, 2)                 # a map of norm 3 on every entry of y
    y = torch.randn(n, *op.out_shape, generator=gen, dtype=torch.float64)
    x = (y.reshape(n, d) @ truth.T).reshape(n, *op.in_shape)
    f = _mlp(op, seed=1)
    bound = 1.0
    reg = build_regularizer("sj", operator=op, lambda_j=1.0, target_j=bound, j_domain="measured",
                            store_dtype=torch.float64)
    opt = torch.optim.Adam(f.parameters(), lr=1e-2)
    steps = 600
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        index = torch.randperm(n, generator=gen)[:16]
        opt.zero_grad()
        loss = (f(y[index]) - x[index]).flatten(1).norm(dim=1).mean()
        penalty = reg(f, y[index], index=index, loss=loss.detach())
        (loss + penalty).backward()
        opt.step()
        schedule.step()
    whole, measured = _exact_norms(f, y, op)
    assert float(measured.max()) <= bound, f"max ||J P|| {float(measured.max()):.4f} over the target {bound}"
    assert float(measured.max()) >= (1 - 3 * TARGET_MARGIN) * bound
    assert float(whole.max()) > 1.5 * bound               # ||J|| itself is not what it bounds


@pytest.mark.parametrize("name, kwargs, match", [
    ("sj", {"j_domain": "sampled"}, r"j_domain must be one of \['all', 'measured'\], got 'sampled'"),
    ("sja", {"j_domain": "measured"}, r"j_domain='measured': regularizer 'sja' has no \|\|J\|\| term"),
    ("wd", {"j_domain": "measured"}, r"j_domain='measured': regularizer 'wd' has no \|\|J\|\| term"),
    ("sj", {"j_domain": "measured", "operator": None}, r"j_domain='measured' needs operator="),
    ("sj", {"j_domain": "measured", "j_operator": None}, r"unknown option\(s\) \['j_operator'\]"),
])
def test_build_regularizer_refuses_a_bad_j_domain(name, kwargs, match):
    kwargs = {"operator": _kspace(), **kwargs}
    with pytest.raises(ValueError, match=match):
        build_regularizer(name, **kwargs)


def test_the_schema_refuses_a_j_domain_without_a_j_term_and_an_unknown_one():
    config = defaults()
    config["regularizer"]["j_domain"] = "everything"
    with pytest.raises(ConfigError, match=r"config key 'regularizer.j_domain'.*'all'.*'measured'"):
        check_config(config)
    config = defaults()
    config["regularizer"].update(name="sja", j_domain="measured")
    with pytest.raises(ConfigError, match=r"config key 'regularizer.j_domain' = 'measured' .*has no effect"):
        check_config(config, explicit=(), inherited=["regularizer.j_domain"])   # an error from a config file too


def test_train_reports_the_measured_norm_against_its_target(tmp_path, capsys):
    overrides = [*TINY["mri_4x_varnet"], *COMMON, "regularizer.name=sj", "regularizer.target_j=0.01",
                 "regularizer.j_domain=measured", "train.epochs=1"]
    assert train_main(["--config", str(ROOT / "configs" / "mri_4x_varnet.yaml"), *overrides, "--run-dir",
                       str(tmp_path / "run"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "||J|| on the measured entries only (J P), aiming at max ||J P|| <= 0.01" in out
    assert "max ||J P|| on probe set" in out and "target max ||J P||" in out and "NOT met on the probe set" in out


@pytest.mark.parametrize("case", ["measured_single", "measured_multicoil"])
def test_on_measured_k_space_each_row_is_projected_on_its_own_sampled_columns(case):
    import test_per_sample

    op, y, masks = getattr(test_per_sample, case)()
    projector = op.measured_projector().at(y)
    e = torch.randn_like(y)
    expected = e * masks.double()[:, None, None, :, None]
    torch.testing.assert_close(projector(e), expected, rtol=0, atol=0)
    torch.testing.assert_close(projector.adjoint(e), expected, rtol=0, atol=0)
