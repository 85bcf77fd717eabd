"""Model-agnostic baselines: weight decay, weight spectral norms, DataGrad, SpectReg."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .norms import normalise


def l2_distance(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample ||pred - target||_2, (B, ...) -> (B,)."""
    return (pred - target).flatten(1).norm(dim=1)


class WeightDecay(nn.Module):
    """sum over weight tensors (dim >= 2) of ||W||_F^2; biases and norm scales are not decayed."""

    def forward(self, f, y, x=None, index=None):
        value = sum((p**2).sum() for p in f.parameters() if p.dim() >= 2)
        return {"wd": value}, {}


class WeightSpectralNorm(nn.Module):
    """sum over Linear and Conv layers of the operator norm of the layer, by one power step per call.

    Persistent vectors per layer (as in spectral normalisation) are updated without
    grad; the differentiable value is ||W v|| at the current unit v.  Convolutions are
    measured as operators on their real input size (recorded on the model's last forward),
    not as reshaped kernels.
    """

    def __init__(self, iters: int = 1):
        super().__init__()
        self.iters = iters
        self.vectors: dict[str, torch.Tensor] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._hooked: set[int] = set()

    def _record_input_shapes(self, f: nn.Module, y: torch.Tensor) -> None:
        if id(f) in self._hooked:
            return
        handles = [m.register_forward_pre_hook(lambda m, a, name=name: self._shapes.__setitem__(name, tuple(a[0].shape[1:])))
                   for name, m in f.named_modules() if isinstance(m, nn.Conv2d)]
        with torch.no_grad():
            f(y[:1])
        for h in handles:
            h.remove()
        self._hooked.add(id(f))

    @staticmethod
    def _layer_map(layer: nn.Module, v: torch.Tensor) -> torch.Tensor:
        if isinstance(layer, nn.Linear):
            return F.linear(v, layer.weight)
        return F.conv2d(v, layer.weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)

    def forward(self, f, y, x=None, index=None):
        self._record_input_shapes(f, y)
        total, stats = 0.0, {}
        for name, layer in f.named_modules():
            if not isinstance(layer, (nn.Linear, nn.Conv2d)):
                continue
            shape = (layer.in_features,) if isinstance(layer, nn.Linear) else self._shapes[name]
            v = self.vectors.get(name)
            if v is None or v.shape[1:] != shape:
                v = normalise(torch.randn((1, *shape), dtype=layer.weight.dtype, device=layer.weight.device))
            for _ in range(self.iters):
                v = v.detach().requires_grad_(True)
                with torch.enable_grad():
                    out = self._layer_map(layer, v)
                    (w,) = torch.autograd.grad(out, v, out.detach())  # (W^T W) v, weights held fixed
                v = normalise(w.detach())
            if self.training:
                self.vectors[name] = v
            sigma = self._layer_map(layer, v).flatten().norm()
            stats[name] = sigma.detach()
            total = total + sigma
        return {"sw": total}, {"sw_layers": stats}

    def get_extra_state(self):
        return {"vectors": dict(self.vectors)}

    def set_extra_state(self, state):
        self.vectors = dict(state["vectors"])


class DataGrad(nn.Module):
    """Double backpropagation: mean_i ||d l(f(y_i), x_i) / d y_i||^2 with l the l2 distance."""

    def forward(self, f, y, x, index=None):
        y = y.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = l2_distance(f(y), x).sum()
            (g,) = torch.autograd.grad(loss, y, create_graph=True)
        per_sample = g.flatten(1).pow(2).sum(1)
        return {"datagrad": per_sample.mean()}, {"datagrad": per_sample.detach()}
