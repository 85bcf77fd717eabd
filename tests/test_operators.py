import math

import numpy as np
import pytest
import torch

from jacinv.operators import (BlurDecimate, ComposedOperator, GaussianCS, Identity, KSpaceSubsample,
                              MatrixOperator, build_operator, check_adjoint, make_mask, registered_operators)
from operator_cases import OPERATOR_CASES

CASES = sorted(OPERATOR_CASES)


def dense_sigma_max(op) -> float:
    return float(torch.linalg.svdvals(op.to_dense()).max())


@pytest.mark.parametrize("name", CASES)
def test_adjoint_dot_test(name):
    op = OPERATOR_CASES[name]()
    assert check_adjoint(op, n_trials=4) < 1e-12


@pytest.mark.parametrize("name", CASES)
def test_adjoint_matches_dense_transpose(name):
    op = OPERATOR_CASES[name]()
    mat = op.to_dense()
    y = torch.randn(3, *op.out_shape, dtype=torch.float64)
    expected = (y.reshape(3, -1) @ mat).reshape(3, *op.in_shape)
    torch.testing.assert_close(op.adjoint(y), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", CASES)
def test_spectral_norm_matches_dense_svd(name):
    op = OPERATOR_CASES[name]()
    exact = dense_sigma_max(op)
    assert op.spectral_norm() == pytest.approx(exact, rel=1e-5)
    assert isinstance(op.spectral_norm(), float)


@pytest.mark.parametrize("name", CASES)
def test_power_method_converges_from_below(name):
    op = OPERATOR_CASES[name]()
    exact = dense_sigma_max(op)
    estimate = op.estimate_spectral_norm(iters=2000, tol=1e-12)
    assert estimate <= exact * (1 + 1e-10)
    assert estimate == pytest.approx(exact, rel=1e-4)


@pytest.mark.parametrize("name", CASES)
def test_pseudo_inverse_matches_lstsq(name):
    op = OPERATOR_CASES[name]()
    mat = op.to_dense().numpy()
    y = torch.randn(2, *op.out_shape, dtype=torch.float64)
    expected = np.stack([np.linalg.lstsq(mat, yi.reshape(-1).numpy(), rcond=None)[0] for yi in y])
    got = op.pseudo_inverse(y).reshape(2, -1).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", CASES)
def test_pseudo_inverse_in_float32_stays_accurate(name):
    """CG must not break down once float32 rounding is all that is left of the residual."""
    op = OPERATOR_CASES[name]()
    y = torch.randn(3, *op.out_shape, dtype=torch.float64)
    expected = op.pseudo_inverse(y)
    got = op.pseudo_inverse(y.float())
    assert got.dtype == torch.float32
    assert float((got.double() - expected).norm() / expected.norm()) < 1e-4


def test_pseudo_inverse_of_a_brain_sized_mask_operator_in_float32():
    op = KSpaceSubsample(in_shape=(1, 112, 96), acceleration=4, center_fraction=0.08, pattern="random", seed=0)
    x = torch.rand(2, 1, 112, 96)
    got = op.pseudo_inverse(op(x))
    expected = op.pseudo_inverse(op(x.double()))
    assert float((got.double() - expected).norm() / expected.norm()) < 1e-4


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_follows_input_dtype_and_device(name, dtype):
    op = OPERATOR_CASES[name]()
    x = torch.randn(2, *op.in_shape, dtype=dtype)
    y = op(x)
    assert y.shape == (2, *op.out_shape) and y.dtype == dtype and y.device == x.device
    xa = op.adjoint(y)
    assert xa.shape == (2, *op.in_shape) and xa.dtype == dtype


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", CASES)
def test_runs_on_cuda(name):
    op = OPERATOR_CASES[name]().cuda()
    x = torch.randn(2, *op.in_shape, device="cuda")
    assert op(x).device.type == "cuda" and op.adjoint(op(x)).device.type == "cuda"


@pytest.mark.parametrize("name", CASES)
def test_wrong_input_shape_is_rejected(name):
    op = OPERATOR_CASES[name]()
    with pytest.raises(ValueError, match=r"x must have shape \(B, "):
        op(torch.zeros(2, *op.in_shape, 1))
    with pytest.raises(ValueError, match=r"y must have shape \(B, "):
        op.adjoint(torch.zeros(*op.out_shape))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        op(np.zeros((1, *op.in_shape)))


@pytest.mark.parametrize("name", CASES)
def test_as_scipy_agrees_with_dense(name):
    op = OPERATOR_CASES[name]()
    lin = op.as_scipy()
    mat = op.to_dense().numpy()
    v = np.random.default_rng(0).standard_normal(mat.shape[1])
    w = np.random.default_rng(1).standard_normal(mat.shape[0])
    np.testing.assert_allclose(lin.matvec(v), mat @ v, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(lin.rmatvec(w), mat.T @ w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", CASES)
def test_gram_is_adjoint_of_forward(name):
    op = OPERATOR_CASES[name]()
    x = torch.randn(2, *op.in_shape, dtype=torch.float64)
    torch.testing.assert_close(op.gram(x), op.adjoint(op(x)))


def test_plugin_adjoint_is_differentiable_in_y():
    op = build_operator("test_finite_difference", n=5)
    assert not op.spectral_norm_is_exact
    y = torch.randn(1, *op.out_shape, dtype=torch.float64, requires_grad=True)
    xa = op.adjoint(y)
    (g,) = torch.autograd.grad(xa.sum(), y)
    expected = op(torch.ones(1, *op.in_shape, dtype=torch.float64))
    torch.testing.assert_close(g, expected)


def test_builtin_operators_are_registered_and_buildable():
    assert {"gaussian_cs", "blur_decimate", "kspace", "identity", "matrix"} <= set(registered_operators())
    op = build_operator("gaussian_cs", in_shape=(1, 4, 4), n_measurements=5, seed=3)
    assert isinstance(op, GaussianCS) and op.out_shape == (5,)


def test_unknown_operator_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown operator name 'nope'.*gaussian_cs"):
        build_operator("nope")


# ------------------------------------------------------------ Gaussian CS
def test_gaussian_cs_is_reproducible_and_seed_dependent():
    a, b = GaussianCS((1, 5, 5), 7, seed=4), GaussianCS((1, 5, 5), 7, seed=4)
    c = GaussianCS((1, 5, 5), 7, seed=5)
    assert torch.equal(a.matrix, b.matrix) and not torch.equal(a.matrix, c.matrix)


def test_gaussian_cs_entries_have_variance_one_over_q():
    op = GaussianCS((1, 28, 28), 160, seed=0)
    assert op.matrix.var().item() == pytest.approx(1 / 160, rel=0.02)
    assert abs(op.matrix.mean().item()) < 3 * math.sqrt(1 / 160 / op.matrix.numel())


def test_davidson_szarek_bound_holds_and_grows_with_confidence():
    op = GaussianCS((1, 28, 28), 160, seed=0)
    b90, b99 = op.spectral_norm_bound(0.9), op.spectral_norm_bound(0.99)
    assert op.spectral_norm() <= b90 < b99
    assert b90 == pytest.approx(1 + math.sqrt(784 / 160) + math.sqrt(2 * math.log(10)) / math.sqrt(160))


@pytest.mark.parametrize("kwargs, match", [
    (dict(in_shape=(1, 4, 4), n_measurements=0), "n_measurements must be an int >= 1, got 0"),
    (dict(in_shape=(1, 4, 4), n_measurements=2.5), "n_measurements must be an int"),
    (dict(in_shape=(1, 0, 4), n_measurements=3), r"in_shape must contain positive ints only"),
    (dict(in_shape=(1, 4, 4), n_measurements=3, seed=-1), "seed must be an int >= 0, got -1"),
])
def test_gaussian_cs_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        GaussianCS(**kwargs)


def test_gaussian_cs_bound_confidence_checked():
    with pytest.raises(ValueError, match=r"confidence must be a finite number in \(0.0, 1.0\), got 1.0"):
        GaussianCS((4,), 3).spectral_norm_bound(1.0)


def test_matrix_operator_bad_input():
    with pytest.raises(ValueError, match="matrix contains 1 non-finite"):
        MatrixOperator(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match=r"in_shape \(3,\) has 3 entries, expected matrix columns p = 2"):
        MatrixOperator(torch.ones(2, 2), in_shape=(3,))
    with pytest.raises(ValueError, match="matrix must be 2-D"):
        MatrixOperator(torch.ones(2))


# ------------------------------------------------------------ blur + decimation
def test_blur_decimate_matches_direct_circular_convolution():
    op = BlurDecimate((1, 8, 8), factor=2, kernel="gaussian", kernel_size=3, sigma=0.8)
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    psf = op.psf.double()
    blurred = torch.zeros_like(x)
    for i in range(3):
        for j in range(3):
            blurred += psf[i, j] * torch.roll(x, shifts=(i - 1, j - 1), dims=(-2, -1))
    torch.testing.assert_close(op(x), blurred[..., ::2, ::2])


def test_blur_psf_sums_to_one():
    for kernel in ("gaussian", "uniform", "bicubic"):
        op = BlurDecimate((1, 16, 16), factor=2, kernel=kernel)
        assert float(op.psf.sum()) == pytest.approx(1.0, abs=1e-6)


def test_signed_psf_norm_peaks_away_from_dc():
    op = OPERATOR_CASES["blur_signed_x2"]()
    lam = op.alias_eigenvalues()
    assert lam.argmax() != 0  # the closed form must search every frequency
    assert op.spectral_norm() > math.sqrt(float(lam[0, 0]))


@pytest.mark.parametrize("kwargs, match", [
    (dict(in_shape=(1, 9, 8), factor=2), r"factor 2 must divide the image size \(H, W\) = \(9, 8\)"),
    (dict(in_shape=(1, 8, 8), factor=0), "factor must be an int >= 1, got 0"),
    (dict(in_shape=(1, 8, 8), factor=2, kernel="box"), r"kernel must be one of \['gaussian', 'uniform', 'bicubic'\], got 'box'"),
    (dict(in_shape=(1, 8, 8), factor=2, sigma=-1.0), r"sigma must be a finite number in \(0.0, inf\], got -1.0"),
    (dict(in_shape=(1, 4, 4), factor=2, kernel_size=7), r"kernel of shape \(7, 7\) does not fit the image \(4, 4\)"),
    (dict(in_shape=(8, 8), factor=2), r"in_shape must be \(C, H, W\)"),
    (dict(in_shape=(1, 8, 8), factor=2, kernel=torch.tensor([[1.0, -1.0]])), "kernel sums to 0"),
    (dict(in_shape=(1, 8, 8), factor=2, kernel=torch.tensor([[1.0, float("inf")]])), "kernel contains 1 non-finite"),
])
def test_blur_decimate_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        BlurDecimate(**kwargs)


# ------------------------------------------------------------ MRI
def test_kspace_forward_is_orthonormal_centred_fft():
    op = KSpaceSubsample((1, 6, 8), mask=torch.ones(8, dtype=torch.bool))
    x = torch.randn(2, 1, 6, 8, dtype=torch.float64)
    k = torch.view_as_complex(op(x).contiguous())
    ref = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x.to(torch.complex128), dim=(-2, -1)), norm="ortho"),
                             dim=(-2, -1))
    torch.testing.assert_close(k, ref)
    torch.testing.assert_close(op.pseudo_inverse(op(x)), x)


@pytest.mark.parametrize("pattern", ["random", "equispaced"])
@pytest.mark.parametrize("acceleration", [4, 8])
def test_mask_effective_acceleration(pattern, acceleration):
    width = 320
    counts = [int(make_mask(pattern, width, acceleration, 0.08 if acceleration == 4 else 0.04, seed=s).sum())
              for s in range(200 if pattern == "random" else 5)]
    if pattern == "equispaced":
        assert set(counts) == {round(width / acceleration)}
    else:
        assert np.mean(counts) == pytest.approx(width / acceleration, rel=0.03)


@pytest.mark.parametrize("width, acceleration, center_fraction", [(368, 4, 0.08), (320, 8, 0.04), (640, 4, 0.08)])
def test_equispaced_fraction_samples_a_fraction_of_one_over_the_acceleration(width, acceleration, center_fraction):
    """fastMRI's equispaced_fraction: centre lines plus lines at a constant spacing, about width / acceleration in all."""
    for seed in range(5):
        mask = make_mask("equispaced_fraction", width, acceleration, center_fraction, seed=seed).numpy()
        center = round(width * center_fraction)
        start = (width - center + 1) // 2
        assert mask[start: start + center].all()
        outside = np.flatnonzero(mask[:start])
        assert set(np.diff(outside)) <= {math.floor(np.diff(outside).mean()), math.ceil(np.diff(outside).mean())}
        assert mask.sum() == pytest.approx(width / acceleration, rel=0.04)


@pytest.mark.parametrize("width", [368, 320, 25])
@pytest.mark.parametrize("acceleration", [4, 8])
def test_magic_masks_never_sample_a_column_and_its_mirror_outside_the_centre(width, acceleration):
    """The magic family: every ``acceleration``-th column on each side of the centre, and no sampled column's mirror
    (its Hermitian partner, the same information for a real image) sampled too, outside the centre lines."""
    from jacinv.mri import mirror_columns

    for seed in range(4):
        mask = make_mask("magic", width, acceleration, 0.04, seed=seed)
        center = torch.zeros(width, dtype=torch.bool)
        n_low = max(1, round(width * 0.04))
        center[(width - n_low + 1) // 2: (width - n_low + 1) // 2 + n_low] = True
        outer = mask & ~center & ~center[mirror_columns(width)]
        assert not bool((outer & outer[mirror_columns(width)]).any())
        positive = torch.nonzero(outer[width // 2:]).flatten()
        assert positive.numel() >= 1 and set(torch.diff(positive).tolist()) <= {acceleration}
    with pytest.raises(ValueError, match="magic mask family needs an integer acceleration, got 2.5"):
        make_mask("magic", 64, 2.5, 0.04)


def test_mask_centre_is_always_sampled_and_keys_reproduce():
    m1 = make_mask("random", 64, 4, 0.08, seed=1, key="file_001.h5")
    m2 = make_mask("random", 64, 4, 0.08, seed=1, key="file_001.h5")
    m3 = make_mask("random", 64, 4, 0.08, seed=1, key="file_002.h5")
    assert torch.equal(m1, m2) and not torch.equal(m1, m3)
    assert bool(m1[30:35].all())


def test_kspace_real_norm_depends_on_mirror_pairs():
    assert OPERATOR_CASES["kspace_real_unpaired"]().spectral_norm() == pytest.approx(1 / math.sqrt(2))
    assert OPERATOR_CASES["kspace_real_random"]().spectral_norm() == 1.0
    assert OPERATOR_CASES["kspace_complex"]().spectral_norm() == 1.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(in_shape=(1, 8, 8), acceleration=0.5), r"acceleration must be a finite number in \[1.0, inf\], got 0.5"),
    (dict(in_shape=(1, 8, 8), center_fraction=1.0), r"center_fraction must be a finite number in \(0.0, 1.0\)"),
    (dict(in_shape=(1, 8, 8), center_fraction=0.0), r"center_fraction must be a finite number in \(0.0, 1.0\)"),
    (dict(in_shape=(1, 8, 8), pattern="radial"), r"pattern must be one of \['random', 'equispaced', 'equispaced_fraction', 'magic'\], got 'radial'"),
    (dict(in_shape=(1, 64, 64), acceleration=8, center_fraction=0.5), "more than width / acceleration"),
    (dict(in_shape=(1, 8, 8), mask=torch.zeros(8)), "mask samples no column"),
    (dict(in_shape=(1, 8, 8), mask=torch.ones(7)), r"mask must have shape \(W,\) = \(8,\), got \(7,\)"),
    (dict(in_shape=(1, 8, 8, 3)), r"in_shape must be \(C, H, W\) for real or \(C, H, W, 2\)"),
])
def test_kspace_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        KSpaceSubsample(**kwargs)


# ------------------------------------------------------------ composition, identity
def test_composition_bound_and_shapes():
    op = OPERATOR_CASES["composed"]()
    assert isinstance(op, ComposedOperator) and not op.spectral_norm_is_exact
    assert op.spectral_norm() <= op.spectral_norm_upper_bound() + 1e-9


def test_composition_shape_mismatch():
    with pytest.raises(ValueError, match=r"inner.out_shape \(1, 5, 5\) != outer.in_shape \(1, 4, 4\)"):
        Identity((1, 4, 4)) @ Identity((1, 5, 5))
