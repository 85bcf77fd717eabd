"""Reconstruction networks f: y -> x_hat, and ``build_model`` which fits one to an operator.

    build_model(name, operator, **kwargs)
        "fc"       FCNet on the flattened measurement (the seed's CS network)
        "dncnn"    DnCNN on y (denoising) or on A^T y / ||A||^2 (other operators)
        "edsr"     EDSR on the low-resolution image of a decimating operator
        "wdsr"     WDSR, likewise
        "unet"     U-Net on the zero-filled reconstruction of a k-space operator
                   (input="adjoint": A^T y, 2 channels for complex images; "magnitude")
      model-based, with A inside the network:
        "unrolled" learned proximal gradient (gradient steps on 1/2 ||A x - y||^2 + CNNs)
        "modl"     MoDL: shared CNN denoiser + conjugate-gradient data consistency
        "varnet"   end-to-end VarNet cascades in k-space (k-space operators)

    register_model(name, factory) adds a network of your own.
"""
from __future__ import annotations

import math

from torch import nn

from .._checks import choice
from ..mri import MultiCoilKSpace
from ..operators import LinearOperator
from .dncnn import DnCNN
from .fc import FCNet
from .inputs import AdjointInput, ChannelsToComplex, ComplexToChannels, Reconstructor, ZeroFilledMagnitude
from .registry import build_model, check_model, register_model, registered_models
from .sr import EDSR, WDSR
from .unet import UNet
from .unrolled import MoDL, UnrolledProximalGradient
from .varnet import VarNet

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


def _fc(operator: LinearOperator, **kwargs) -> nn.Module:
    return FCNet(math.prod(operator.out_shape), operator.in_shape, **kwargs)


def _dncnn(operator: LinearOperator, **kwargs) -> nn.Module:
    c = _image_shape(operator, "dncnn")[0]
    pre = None if operator.out_shape == operator.in_shape else AdjointInput(operator)
    return Reconstructor(DnCNN(channels=c, **kwargs), pre=pre)


def _super_resolution(cls):
    def factory(operator: LinearOperator, **kwargs) -> nn.Module:
        scale = _sr_scale(operator, cls.__name__.lower())
        return cls(channels=operator.in_shape[0], scale=scale, **kwargs)
    return factory


def _unet(operator: LinearOperator, input: str = "adjoint", **kwargs) -> nn.Module:
    out = operator.out_shape
    if len(out) != 4 or out[-1] != 2:
        raise ValueError(f"model 'unet' needs a k-space operator with out_shape (C, H, W, 2); got {out}")
    mode = choice(input, "input", ("adjoint", "magnitude"))
    pools = kwargs.get("num_pool_layers", 4)
    if min(operator.in_shape[1:3]) < 2 ** (pools + 1):
        raise ValueError(f"image {operator.in_shape[1:3]} is too small for num_pool_layers={pools}: the U-Net needs "
                         f"H, W >= {2 ** (pools + 1)}; lower num_pool_layers")
    complex_image = len(operator.in_shape) == 4
    channels = operator.in_shape[0]      # single-coil: one per k-space channel; multi-coil: the combined image
    if mode == "magnitude":
        if complex_image:
            raise ValueError("input='magnitude' needs a real-image operator; this one reconstructs complex images")
        pre = ZeroFilledMagnitude(operator.in_shape[1:3], coils=isinstance(operator, MultiCoilKSpace))
        return Reconstructor(UNet(channels, channels, **kwargs), pre=pre)
    if complex_image:
        pre = nn.Sequential(AdjointInput(operator), ComplexToChannels())
        return Reconstructor(UNet(2 * channels, 2 * channels, **kwargs), pre=pre, post=ChannelsToComplex())
    return Reconstructor(UNet(channels, channels, **kwargs), pre=AdjointInput(operator))


register_model("fc", _fc)
register_model("dncnn", _dncnn)
register_model("edsr", _super_resolution(EDSR))
register_model("wdsr", _super_resolution(WDSR))
register_model("unet", _unet)
register_model("unrolled", UnrolledProximalGradient)
register_model("modl", MoDL)
register_model("varnet", VarNet)
MODELS = tuple(registered_models())  # the built-in names


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["build_model", "register_model", "registered_models", "check_model", "count_parameters", "MODELS",
           "FCNet", "DnCNN", "EDSR", "WDSR", "UNet", "UnrolledProximalGradient", "MoDL", "VarNet", "Reconstructor",
           "AdjointInput"]
