import pytest
import torch

from jacinv.models import build_model, check_model, count_parameters
from jacinv.operators import BlurDecimate, GaussianCS, Identity, KSpaceSubsample

MODEL_CASES = [
    ("fc", GaussianCS((1, 28, 28), 160), {}, 1_357_104),
    ("dncnn", Identity((1, 32, 32)), {"depth": 5}, 112_001),
    ("dncnn", Identity((1, 32, 32)), {"depth": 17}, 555_137),
    ("dncnn", Identity((3, 16, 16)), {"depth": 3, "norm": "group"}, None),
    ("dncnn", BlurDecimate((1, 32, 32), factor=2), {"depth": 3}, None),
    ("edsr", BlurDecimate((1, 32, 32), factor=2), {}, 1_367_553),
    ("edsr", BlurDecimate((1, 48, 48), factor=3), {}, 1_552_193),
    ("edsr", BlurDecimate((1, 32, 32), factor=4), {}, 1_515_265),
    ("edsr", BlurDecimate((3, 32, 32), factor=2), {}, 1_369_859),
    ("wdsr", BlurDecimate((1, 32, 32), factor=2), {}, 594_004),
    ("wdsr", BlurDecimate((1, 32, 32), factor=2), {"block": "B"}, 150_756),
    ("wdsr", BlurDecimate((3, 48, 48), factor=3), {"n_blocks": 2}, None),
    ("unet", KSpaceSubsample((1, 32, 32)), {}, 7_756_097),
    ("unet", KSpaceSubsample((1, 32, 32)), {"chans": 16}, 1_939_105),
    ("unet", KSpaceSubsample((1, 20, 28, 2)), {"chans": 4, "num_pool_layers": 2}, None),
    ("unet", KSpaceSubsample((1, 21, 27)), {"chans": 4, "num_pool_layers": 2, "input": "magnitude"}, None),
]


@pytest.mark.parametrize("name, op, kwargs, n_params", MODEL_CASES)
def test_model_maps_measurements_to_signals(name, op, kwargs, n_params):
    model = build_model(name, op, **kwargs)
    check_model(model, op)
    y = op(torch.rand(2, *op.in_shape))
    assert model(y).shape == (2, *op.in_shape)
    if n_params is not None:
        assert count_parameters(model) == n_params  # the figures quoted in the docstrings


def test_fixed_preprocessing_is_not_trained():
    op = BlurDecimate((1, 16, 16), factor=2)
    model = build_model("dncnn", op, depth=3)
    assert count_parameters(model) == count_parameters(model.net)


@pytest.mark.parametrize("name, op, match", [
    ("edsr", GaussianCS((1, 8, 8), 10), r"model 'edsr' needs a decimating operator .* got \(1, 8, 8\) -> \(10,\)"),
    ("edsr", Identity((1, 8, 8)), r"scale must be one of \[2, 3, 4\], got 1"),
    ("fc", KSpaceSubsample((1, 8, 8)), None),
    ("unet", KSpaceSubsample((1, 24, 24)), r"image \(24, 24\) is too small for num_pool_layers=4"),
    ("unet", BlurDecimate((1, 8, 8), 2), r"model 'unet' needs a k-space operator"),
    ("resnet", Identity((1, 8, 8)),
     r"model name must be one of \['dncnn', 'edsr', 'fc', .*'modl', .*'unet', 'unrolled', 'varnet', 'wdsr'\], got 'resnet'"),
])
def test_model_operator_mismatch(name, op, match):
    if match is None:  # fc takes any operator
        check_model(build_model(name, op, width=8), op)
        return
    with pytest.raises(ValueError, match=match):
        build_model(name, op)


def test_check_model_names_the_shape_mismatch():
    model = build_model("fc", GaussianCS((1, 8, 8), 10))
    with pytest.raises(ValueError, match=r"expected \(1, 1, 4, 4\) \(operator.in_shape\)|cannot take measurements"):
        check_model(model, GaussianCS((1, 4, 4), 10))
