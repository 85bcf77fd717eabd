import math

import pytest
import torch

from jacinv.evaluation import probe_jacobian_norms
from jacinv.operators import GaussianCS, Identity
from jacinv.regularizers import jacobian_spectral_norm, with_and_without_operator


def _net(n: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(n, 9), torch.nn.Tanh(),
                               torch.nn.Unflatten(1, (1, 3, 3))).double()


@pytest.mark.parametrize("operator", [Identity((1, 3, 3)), GaussianCS((1, 3, 3), 6, seed=0)], ids=["identity", "cs"])
def test_probe_norms_match_the_power_method_for_j_a_and_j(operator):
    operator = operator.double()
    model = _net(math.prod(operator.out_shape))
    y = torch.randn(4, *operator.out_shape, dtype=torch.float64)
    out = probe_jacobian_norms(model, y, operator, iters=40, seed=3)
    for key, op in (("sja", operator), ("sj", None)):
        norms = jacobian_spectral_norm(model, y, op, iters=40, generator=torch.Generator().manual_seed(3)).detach()
        assert out[f"probe_max_{key}"] == pytest.approx(float(norms.max()), rel=1e-12)
        assert out[f"probe_mean_{key}"] == pytest.approx(float(norms.mean()), rel=1e-12)


def test_norms_of_j_a_and_j_are_computed_once_for_an_identity_operator():
    calls = []
    compute = lambda op: calls.append(op) or len(calls)  # noqa: E731
    assert with_and_without_operator(compute, Identity((1, 2, 2))) == {"fa": 1, "f": 1} and len(calls) == 1
    cs = GaussianCS((1, 2, 2), 3, seed=0)
    assert with_and_without_operator(compute, cs) == {"fa": 2, "f": 3} and calls[1:] == [cs, None]
