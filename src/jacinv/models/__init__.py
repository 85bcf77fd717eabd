"""Reconstruction networks f: y -> x_hat, and ``build_model`` which fits one to an operator.

    build_model(name, operator, **kwargs)
        "fc"     FCNet on the flattened measurement (the seed's CS network)
        "dncnn"  DnCNN on y (denoising) or on A^T y / ||A||^2 (other operators)
        "edsr"   EDSR on the low-resolution image of a decimating operator
        "wdsr"   WDSR, likewise
        "unet"   U-Net on the zero-filled reconstruction of a k-space operator
                 (input="adjoint": A^T y, 2 channels for complex images; "magnitude")
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import choice
from ..operators import LinearOperator
from .dncnn import DnCNN
from .fc import FCNet
from .inputs import AdjointInput, ChannelsToComplex, ComplexToChannels, Reconstructor, ZeroFilledMagnitude
from .sr import EDSR, WDSR
from .unet import UNet

MODELS = ("fc", "dncnn", "edsr", "wdsr", "unet")


def _image_shape(operator: LinearOperator, name: str) -> tuple[int, int, int]:
    if len(operator.in_shape) != 3:
        raise ValueError(f"model {name!r} needs an operator on images (C, H, W); got in_shape {operator.in_shape}")
    return operator.in_shape


def _sr_scale(operator: LinearOperator, name: str) -> int:
    c, h, w = _image_shape(operator, name)
    out = operator.out_shape
    if len(out) != 3 or out[0] != c or h % out[1] or w % out[2] or h // out[1] != w // out[2]:
        raise ValueError(f"model {name!r} needs a decimating operator (C, H, W) -> (C, H/s, W/s); "
                         f"got {operator.in_shape} -> {out}")
    return h // out[1]


def build_model(name: str, operator: LinearOperator, **kwargs) -> nn.Module:
    """A network mapping y (B, *operator.out_shape) to x_hat (B, *operator.in_shape)."""
    choice(name, "model name", MODELS)
    if not isinstance(operator, LinearOperator):
        raise TypeError(f"operator must be a LinearOperator, got {type(operator).__name__}")
    if name == "fc":
        return FCNet(math.prod(operator.out_shape), operator.in_shape, **kwargs)
    if name == "dncnn":
        c = _image_shape(operator, name)[0]
        pre = None if operator.out_shape == operator.in_shape else AdjointInput(operator)
        return Reconstructor(DnCNN(channels=c, **kwargs), pre=pre)
    if name in ("edsr", "wdsr"):
        scale = _sr_scale(operator, name)
        return (EDSR if name == "edsr" else WDSR)(channels=operator.in_shape[0], scale=scale, **kwargs)
    # unet
    out = operator.out_shape
    if len(out) != 4 or out[-1] != 2:
        raise ValueError(f"model 'unet' needs a k-space operator with out_shape (C, H, W, 2); got {out}")
    mode = choice(kwargs.pop("input", "adjoint"), "input", ("adjoint", "magnitude"))
    pools = kwargs.get("num_pool_layers", 4)
    if min(out[1], out[2]) < 2 ** (pools + 1):
        raise ValueError(f"image {out[1:3]} is too small for num_pool_layers={pools}: the U-Net needs "
                         f"H, W >= {2 ** (pools + 1)}; lower num_pool_layers")
    complex_image = len(operator.in_shape) == 4
    coils = out[0]
    if mode == "magnitude":
        if complex_image:
            raise ValueError("input='magnitude' needs a real-image operator; this one reconstructs complex images")
        return Reconstructor(UNet(coils, coils, **kwargs), pre=ZeroFilledMagnitude())
    if complex_image:
        pre = nn.Sequential(AdjointInput(operator), ComplexToChannels())
        return Reconstructor(UNet(2 * coils, 2 * coils, **kwargs), pre=pre, post=ChannelsToComplex())
    return Reconstructor(UNet(coils, coils, **kwargs), pre=AdjointInput(operator))


def check_model(model: nn.Module, operator: LinearOperator) -> None:
    """Run one zero measurement through ``model`` and check it returns (1, *operator.in_shape)."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.get_default_dtype()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros((1, *operator.out_shape), device=device, dtype=dtype))
    except RuntimeError as err:
        raise ValueError(f"model {type(model).__name__} cannot take measurements of shape "
                         f"(B, {', '.join(map(str, operator.out_shape))}): {err}") from err
    finally:
        model.train(was_training)
    if tuple(out.shape[1:]) != operator.in_shape:
        raise ValueError(f"model {type(model).__name__} returns shape {tuple(out.shape[1:])} per sample, "
                         f"but operator.in_shape is {operator.in_shape}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["build_model", "check_model", "count_parameters", "MODELS", "FCNet", "DnCNN", "EDSR", "WDSR", "UNet",
           "Reconstructor", "AdjointInput"]
