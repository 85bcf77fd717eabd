"""Host synchronisations, counted on any device: the counter itself, and none inside a penalised step."""
import pytest
import torch

from jacinv.dispatch_count import DispatchCount
from jacinv.models import build_model
from jacinv.operators import GaussianCS
from jacinv.regularizers import REGULARIZERS, build_regularizer


def test_the_counter_sees_value_reads_and_value_dependent_shapes_and_nothing_else():
    a = torch.tensor([1.0, 3.0, 2.0])
    with DispatchCount() as count:
        b = (a * 2 + 1).sort().values.topk(2).indices     # arithmetic, sorting, fixed-size selection
        a.index_select(0, b)
    assert count.operators >= 5 and count.syncs == 0
    with DispatchCount() as count:
        float(a.sum())                       # a value read
        a[a > 1]                             # a boolean mask
        torch.nonzero(a)                     # a shape that depends on the values
        torch.linalg.eigh(torch.eye(2))      # a convergence flag checked on the host
    assert count.syncs == 4, count.sync_ops
    assert set(count.sync_ops) >= {"aten._local_scalar_dense", "aten.index", "aten.nonzero"}


def test_kernels_leave_out_views_queries_and_zero_tensors_and_keep_in_place_writes():
    a = torch.randn(4, 3)
    with DispatchCount() as count:
        v = a.view(12).expand(2, 12).t().detach()    # views: metadata only
        torch.is_same_size(a, a)                     # a query answered on the host
        torch._efficientzerotensor((3,))             # forward-mode AD's zero tangents: no memory
    assert count.operators >= 6 and count.kernels == 0, dict(count.ops)
    with DispatchCount() as count:
        w = v * 2                                    # arithmetic
        w.add_(1)                                    # an in-place write returns an alias but computes
        w.sum()
        v.contiguous()                               # a copy of a non-contiguous view
    assert dict(count.kernel_ops) == {"aten.mul": 1, "aten.add_": 1, "aten.sum": 1, "aten.clone": 1}, dict(count.ops)


def _problem(model: str):
    op = GaussianCS((1, 6, 6), 12, seed=0)
    torch.manual_seed(0)
    kwargs = {"iterations": 2, "depth": 2, "features": 4} if model == "unrolled" else {}
    x = torch.rand(8, 1, 6, 6)
    return build_model(model, op, **kwargs), op, x, op(x)


SPECTRAL_SETTINGS = {
    "defaults": {},
    "cheap": {"every": 2, "iters": 3, "krylov": 4, "jvp_mode": "fastest"},
    "screen+focus": {"screen": True, "focus": 1, "iters": 3, "candidates": 2, "chunk_rows": 3},
    "refresh all": {"refresh": "all", "jvp_mode": "forward"},
    "target": {"target_j": 0.5},
}


@pytest.mark.parametrize("model", ["fc", "unrolled"])
@pytest.mark.parametrize("name", REGULARIZERS)
def test_no_penalty_makes_the_host_wait_for_the_device(model, name):
    """The penalty's forward and backward passes, on cold and warm steps, read nothing back from the device (on
    a GPU every read stalls the queue of small kernels these nets run on)."""
    f, op, x, y = _problem(model)
    settings = SPECTRAL_SETTINGS if name in ("sj", "sja+sj") else {"defaults": {}}
    for label, options in settings.items():
        reg = build_regularizer(name, operator=op, **options)
        for step in range(4):   # the first visits every sample cold, the next ones are warm
            index = torch.arange(4) + 4 * (step % 2)
            loss = ((f(y[index]) - x[index]) ** 2).mean()
            with DispatchCount() as count:
                penalty = reg(f, y[index], x[index], index=index, loss=loss.detach())
                if penalty.requires_grad:
                    penalty.backward()
            assert count.syncs == 0, f"{name} {label} step {step}: {dict(count.sync_ops)}"
