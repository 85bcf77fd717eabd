"""Model plug-in registry: ``register_model(name, factory)`` and ``build_model(name, operator, **kwargs)``.

A factory is ``factory(operator, **kwargs) -> nn.Module`` whose module maps measurements
(B, *operator.out_shape) to signals (B, *operator.in_shape); ``build_model`` checks that
with one zero measurement before anything is trained.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..operators import LinearOperator

ModelFactory = Callable[..., nn.Module]
_FACTORIES: dict[str, ModelFactory] = {}


def register_model(name: str, factory: ModelFactory | None = None):
    """Register ``factory`` under ``name`` (then ``model.name=NAME`` works in configs).

    ``register_model("my_net", factory)``, or as a decorator ``@register_model("my_net")``.
    A name can be registered once: registering over it is an error.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"model name must be a non-empty string, got {name!r}")

    def add(fn: ModelFactory) -> ModelFactory:
        if not callable(fn):
            raise TypeError(f"register_model({name!r}, factory): factory must be callable "
                            f"(operator, **kwargs) -> nn.Module, got {fn!r}")
        if name in _FACTORIES:
            raise ValueError(f"model name {name!r} is already registered (to {_FACTORIES[name]!r}); "
                             "choose another name")
        _FACTORIES[name] = fn
        return fn

    return add if factory is None else add(factory)


def registered_models() -> list[str]:
    return sorted(_FACTORIES)


def build_model(name: str, operator: LinearOperator, **kwargs) -> nn.Module:
    """The network registered as ``name``, fitted to ``operator``: it maps y (B, *operator.out_shape)
    to x_hat (B, *operator.in_shape), checked on one zero measurement."""
    if name not in _FACTORIES:
        raise ValueError(f"model name must be one of {registered_models()}, got {name!r}")
    if not isinstance(operator, LinearOperator):
        raise TypeError(f"operator must be a LinearOperator, got {type(operator).__name__}")
    model = _FACTORIES[name](operator, **kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model factory {name!r} must return an nn.Module, got {type(model).__name__}")
    check_model(model, operator)
    return model


def check_model(model: nn.Module, operator: LinearOperator) -> None:
    """Run one measurement through ``model`` and check what a training step relies on: it returns a
    tensor (1, *operator.in_shape) of the measurement's dtype, on its device, that depends on it."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.get_default_dtype()
    name = type(model).__name__
    y = torch.zeros((1, *operator.out_shape), device=device, dtype=dtype, requires_grad=True)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            out = model(y)
    except RuntimeError as err:
        raise ValueError(f"model {name} cannot take measurements of shape "
                         f"(B, {', '.join(map(str, operator.out_shape))}): {err}") from err
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"model {name} returns {type(out).__name__}, expected a tensor "
                         f"(B, {', '.join(map(str, operator.in_shape))})")
    if tuple(out.shape[1:]) != operator.in_shape or out.shape[0] != 1:
        raise ValueError(f"model {name} returns shape {tuple(out.shape)} for one measurement, "
                         f"expected (1, {', '.join(map(str, operator.in_shape))}) (operator.in_shape)")
    if out.dtype != dtype:
        raise ValueError(f"model {name} returns {out.dtype} for {dtype} measurements; expected the measurements' "
                         "dtype (cast inside the model, or build it in that dtype)")
    if out.device != device:
        raise ValueError(f"model {name} returns a tensor on {out.device} for measurements on {device}; expected "
                         "the measurements' device (no hard-coded device inside the model)")
    if not out.requires_grad or torch.autograd.grad(out.sum(), y, allow_unused=True)[0] is None:
        raise ValueError(f"model {name}'s output does not depend on the measurement y (detached, or y unused); "
                         "expected a differentiable map y -> x_hat")
