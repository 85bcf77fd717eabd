"""Multi-coil k-space: the operator against its dense matrix and SVD, and the coil maps."""
import math

import pytest
import torch

from jacinv.mri import MultiCoilKSpace, birdcage_maps, check_maps, normalise_maps, rss
from jacinv.operators import KSpaceSubsample, build_operator, check_adjoint


def _op(complex_input=False, mask=None, coils=4, **kwargs):
    shape = (1, 12, 10, 2) if complex_input else (1, 12, 10)
    return MultiCoilKSpace(shape, coils=coils, mask=mask, acceleration=2, center_fraction=0.2, **kwargs).double()


@pytest.mark.parametrize("complex_input", [False, True])
def test_the_adjoint_is_the_transpose_of_the_dense_matrix(complex_input):
    op = _op(complex_input)
    assert check_adjoint(op) < 1e-12
    dense = op.to_dense()
    y = torch.randn(2, *op.out_shape, dtype=torch.float64)
    torch.testing.assert_close(op.adjoint(y).reshape(2, -1), y.reshape(2, -1) @ dense)


@pytest.mark.parametrize("complex_input", [False, True])
def test_the_norm_is_below_one_with_a_mask_and_its_estimate_is_the_svds(complex_input):
    op = _op(complex_input)
    exact = float(torch.linalg.matrix_norm(op.to_dense(), ord=2))
    assert not op.spectral_norm_is_exact
    assert exact <= op.spectral_norm_bound() + 1e-6
    # a Lanczos estimate: a lower bound, accurate where the top singular values cluster (as here, within 1e-4)
    assert op.spectral_norm() == pytest.approx(exact, rel=1e-7) and op.spectral_norm() <= exact * (1 + 1e-9)


@pytest.mark.parametrize("complex_input", [False, True])
def test_without_a_mask_unit_rss_maps_make_the_operator_an_isometry(complex_input):
    op = _op(complex_input, mask=torch.ones(10, dtype=torch.bool))
    dense = op.to_dense()
    assert op.spectral_norm_is_exact and op.spectral_norm() == 1.0
    singular = torch.linalg.svdvals(dense)
    torch.testing.assert_close(singular, torch.ones_like(singular), rtol=1e-6, atol=0)   # A^T A = I


def test_one_coil_of_unit_sensitivity_is_the_single_coil_operator():
    ones = torch.zeros(1, 12, 10, 2)
    ones[..., 0] = 1.0
    multi = MultiCoilKSpace((1, 12, 10), maps=ones, acceleration=2, center_fraction=0.2, seed=3)
    single = KSpaceSubsample((1, 12, 10), acceleration=2, center_fraction=0.2, seed=3)
    x = torch.rand(3, 1, 12, 10)
    torch.testing.assert_close(multi(x), single(x))
    torch.testing.assert_close(multi.measured_part(multi(x) + 1.0), single.measured_part(single(x) + 1.0))


def test_birdcage_maps_have_unit_rss_and_differ_from_coil_to_coil():
    maps = birdcage_maps(8, (16, 12))
    assert maps.shape == (8, 16, 12, 2)
    torch.testing.assert_close(maps.pow(2).sum(dim=(0, -1)), torch.ones(16, 12), rtol=1e-5, atol=0)
    magnitude = maps.pow(2).sum(-1).sqrt()
    assert all(not torch.allclose(magnitude[0], magnitude[c], rtol=0.05) for c in range(1, 8))
    # each coil is brightest on its own side of the image
    assert magnitude[0][:, -1].mean() > magnitude[0][:, 0].mean()     # coil 0 sits at angle 0: +x
    assert magnitude[4][:, 0].mean() > magnitude[4][:, -1].mean()     # coil 4 at angle pi: -x


def test_rss_of_the_coil_images_of_unit_rss_maps_is_the_image_magnitude():
    op = _op(complex_input=True)
    x = torch.randn(2, 1, 12, 10, 2, dtype=torch.float64)
    torch.testing.assert_close(rss(op.coil_images(x)), x.pow(2).sum(-1).sqrt())


def test_the_registered_operator_builds_birdcage_maps_from_a_coil_count():
    op = build_operator("multicoil_kspace", in_shape=(1, 8, 8), coils=3, acceleration=2, center_fraction=0.25)
    assert op.out_shape == (3, 8, 8, 2) and op.coils == 3


@pytest.mark.parametrize("kwargs, match", [
    (dict(maps=torch.ones(4, 12, 9, 2)), r"maps must have shape \(coils, 12, 10, 2\).*got \(4, 12, 9, 2\)"),
    (dict(maps=torch.ones(4, 12, 10)), r"maps must have shape \(coils, 12, 10, 2\).*got \(4, 12, 10\)"),
    (dict(maps=torch.full((2, 12, 10, 2), math.nan)), r"maps must be finite, got 480 non-finite entries"),
    (dict(maps=torch.zeros(2, 12, 10, 2)), r"maps are zero at every pixel"),
    (dict(), r"give either maps \(coils, 12, 10, 2\) or coils"),
    (dict(coils=2, maps=torch.ones(2, 12, 10, 2)), r"give either maps"),
    (dict(coils=0), r"coils must be an int >= 1, got 0"),
    (dict(coils=2, mask=torch.ones(9, dtype=torch.bool)), r"mask must have shape \(W,\) = \(10,\)"),
])
def test_bad_maps_and_arguments_are_refused_naming_them(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        MultiCoilKSpace((1, 12, 10), **kwargs)


def test_complex_maps_given_as_a_complex_tensor_are_accepted():
    maps = torch.view_as_complex(birdcage_maps(3, (12, 10)).contiguous())
    op = MultiCoilKSpace((1, 12, 10), maps=maps)
    torch.testing.assert_close(op.maps, check_maps(maps))
    torch.testing.assert_close(normalise_maps(op.maps), op.maps)


def test_varnet_on_one_coil_of_unit_sensitivity_is_the_single_coil_varnet():
    from jacinv.models import build_model

    ones = torch.zeros(1, 16, 16, 2)
    ones[..., 0] = 1.0
    multi_op = MultiCoilKSpace((1, 16, 16), maps=ones, acceleration=4, center_fraction=0.125, seed=1)
    single_op = KSpaceSubsample((1, 16, 16), acceleration=4, center_fraction=0.125, seed=1)
    torch.manual_seed(0)
    single = build_model("varnet", single_op, cascades=2, chans=4, num_pool_layers=2)
    multi = build_model("varnet", multi_op, cascades=2, chans=4, num_pool_layers=2)
    multi.load_state_dict(single.state_dict())
    y = single_op(torch.rand(2, 1, 16, 16))
    torch.testing.assert_close(multi(y), single(y), rtol=1e-5, atol=1e-6)


def test_multicoil_varnet_refines_the_coil_combined_image_and_keeps_the_data():
    """With its U-Nets silenced the multi-coil VarNet is gradient steps on ||M F S x - y||^2 in k-space: from
    k_0 = y the data stay, and the output is S^H F^-1 y (the adjoint)."""
    from jacinv.models import build_model

    op = MultiCoilKSpace((1, 16, 16), coils=3, acceleration=4, center_fraction=0.125, seed=1)
    net = build_model("varnet", op, cascades=2, chans=4, num_pool_layers=2)
    for refine in net.refiners:
        refine.forward = lambda image: torch.zeros_like(image)
    y = op(torch.rand(2, 1, 16, 16))
    torch.testing.assert_close(net(y), op.adjoint(y))


@pytest.mark.parametrize("measured", [False, True])
def test_varnet_sensitivity_net_learns_unit_rss_maps_end_to_end(measured):
    """fastMRI's E2E design: a U-Net on each coil's ACS image gives the maps (unit RSS), and the loss reaches it."""
    from jacinv.models import VarNet
    from jacinv.mri import MeasuredMultiCoilKSpace

    truth = MultiCoilKSpace((1, 16, 16), coils=3, acceleration=2, center_fraction=0.25, pattern="equispaced")
    op = MeasuredMultiCoilKSpace((1, 12, 12), (3, 16, 16)) if measured else truth
    net = VarNet(op, cascades=2, chans=4, num_pool_layers=2, sens_chans=4, sens_pools=1)
    y = truth(torch.rand(2, 1, 16, 16))
    bound = net._operators(y)
    torch.testing.assert_close(rss(bound.row_maps), torch.ones(2, 1, 16, 16))
    out = net(y)
    assert out.shape == (2, *op.in_shape)
    out.square().sum().backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in net.sensitivities.parameters()
               if p.dim() > 1)
    with pytest.raises(ValueError, match="sens_chans=4 learns coil maps, which need a multi-coil operator"):
        VarNet(KSpaceSubsample((1, 16, 16)), sens_chans=4)


@pytest.mark.parametrize("model, kwargs", [("unet", {"input": "magnitude", "chans": 4, "num_pool_layers": 2}),
                                           ("unet", {"chans": 4, "num_pool_layers": 2}),
                                           ("unrolled", {"iterations": 2, "depth": 2, "features": 4}),
                                           ("modl", {"iterations": 2, "cg_iters": 3, "depth": 2, "features": 4})])
@pytest.mark.parametrize("measured", [False, True])
def test_image_domain_and_model_based_nets_take_multicoil_operators(model, kwargs, measured):
    """The U-Net on the RSS of the zero-filled coil images (or on A^T y), and the unrolled nets with each batch's
    A_i = M_i F S_i inside, map multi-coil k-space to the target grid."""
    from jacinv.models import build_model
    from jacinv.mri import MeasuredMultiCoilKSpace

    truth = MultiCoilKSpace((1, 16, 16), coils=3, acceleration=2, center_fraction=0.25, pattern="equispaced")
    op = MeasuredMultiCoilKSpace((1, 12, 12), (3, 16, 16)) if measured else truth
    net = build_model(model, op, **kwargs)
    y = truth(torch.rand(2, 1, 16, 16))
    assert net(y).shape == (2, *op.in_shape)
    if kwargs.get("input") == "magnitude":
        zero_filled = rss(torch.view_as_real(torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(
            torch.view_as_complex(y), dim=(-2, -1)), norm="ortho"), dim=(-2, -1))))
        torch.testing.assert_close(net.pre(y), zero_filled[..., 2:14, 2:14] if measured else zero_filled)


def test_stability_and_subject_shift_run_on_a_multicoil_run(tmp_path, capsys):
    """evaluate.py --stability (perturbations confined to the sampled columns of every coil) and --shift subject on
    the embedded multi-coil default, tiny."""
    import json

    from jacinv.cli import evaluate_main
    from test_training import trained_tiny_run

    run = trained_tiny_run(tmp_path / "run", "mri_4x_multicoil", "data.n_test=2")
    capsys.readouterr()
    assert evaluate_main([str(run), "--stability", "--stability-samples", "2", "--radii", "0.5",
                          "--shift", "subject", "--shift-samples", "2"]) == 0
    report = json.loads((run / "stability.json").read_text())
    assert list(report["curves"])[0] == "network" and any(n.startswith("tv(") for n in report["curves"])
    shift = json.loads((run / "shift_subject.json").read_text())
    assert "network" in json.dumps(shift) and "network" in capsys.readouterr().out
