"""What a piece of torch code costs a GPU beyond its arithmetic, measured on any device: the operators it
dispatches (each a kernel launch or more on CUDA) and the host synchronisations it forces.

    with DispatchCount() as count:
        step()
    count.operators, count.syncs, count.sync_ops     # e.g. 412, 1, {"aten._local_scalar_dense": 1}
    count.kernels                                    # e.g. 230: the operators that compute something

Not every operator is a kernel launch: views (``view``, ``expand``, ``detach``, ``alias``, ...) only make
new metadata, queries (``is_same_size``) return a Python value, and forward-mode AD's efficient zero tensors
hold no memory.  ``kernels`` counts the others, each at least one launch on a GPU; ``operators`` counts all,
each at least one trip through the dispatcher on the host.

A host synchronisation is an operator whose result the host must wait for on CUDA: reading a value
(``.item()``, ``int(t)``, ``bool(t)``, ``if t:``), an output whose shape depends on the values
(``nonzero``, boolean-mask indexing, ``masked_select``, ``unique``), or a linear-algebra routine that checks
its convergence flag on the host (``linalg.eigh`` and kin).  Copies between host and device are not seen on
a CPU run (both sides are the host); on CUDA they are counted when they go to the CPU.
"""
from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

#: Operators that make the host wait for the device whatever their arguments.
SYNCING_OPS = frozenset({
    "aten._local_scalar_dense", "aten.nonzero", "aten.nonzero_static", "aten.masked_select", "aten.unique",
    "aten._unique", "aten._unique2", "aten.unique_dim", "aten.unique_consecutive", "aten.is_nonzero", "aten.equal",
    "aten.repeat_interleave", "aten.masked_scatter", "aten.linalg_eigh", "aten._linalg_eigh", "aten.linalg_eig",
    "aten._linalg_svd", "aten.linalg_cholesky_ex", "aten.linalg_inv_ex", "aten._linalg_solve_ex", "aten.linalg_lu",
    "aten.linalg_lu_factor_ex", "aten._linalg_check_errors",
})
#: Indexing operators that synchronise when an index is a boolean mask (it is turned into positions first).
MASK_INDEXED_OPS = frozenset({"aten.index", "aten.index_put", "aten.index_put_", "aten._index_put_impl_"})


def _launches_no_kernel(func, name: str) -> bool:
    """True for an operator that computes nothing on the device: a view (every output aliases an input
    without writing it), a query with no tensor output, or an efficient zero tensor."""
    if name == "aten._efficientzerotensor":
        return True
    schema = getattr(func, "_schema", None)
    if schema is None or name in SYNCING_OPS:
        return False
    returns = schema.returns
    tensors = [r for r in returns if "Tensor" in str(r.type)]
    if not tensors:
        return bool(returns) and all("bool" in str(r.type).lower() or "int" in str(r.type).lower() for r in returns)
    return all(r.alias_info is not None and not r.alias_info.is_write for r in tensors)


def _name(func) -> str:
    return f"aten.{func._schema.name.split('::')[-1]}" if hasattr(func, "_schema") else str(func)


def _is_sync(name: str, args, kwargs) -> bool:
    if name in SYNCING_OPS:
        return True
    if name in MASK_INDEXED_OPS:
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ())
    if name in ("aten._to_copy", "aten.copy_"):
        source = args[1] if name == "aten.copy_" else args[0]
        target = kwargs.get("device") if name == "aten._to_copy" else args[0].device
        return (isinstance(source, torch.Tensor) and source.device.type != "cpu" and target is not None
                and torch.device(target).type == "cpu")
    return False


class DispatchCount(TorchDispatchMode):
    """Counts, while active, the operators dispatched (``operators``, by name in ``ops``) and the host
    synchronisations among them (``syncs``, by name in ``sync_ops``), and those that compute something on
    the device (``kernels``, by name in ``kernel_ops``: not views, queries or efficient zero tensors)."""

    def __init__(self):
        super().__init__()
        self.ops: Counter = Counter()
        self.sync_ops: Counter = Counter()
        self.kernel_ops: Counter = Counter()

    @property
    def operators(self) -> int:
        return sum(self.ops.values())

    @property
    def kernels(self) -> int:
        return sum(self.kernel_ops.values())

    @property
    def syncs(self) -> int:
        return sum(self.sync_ops.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _name(func.overloadpacket) if hasattr(func, "overloadpacket") else _name(func)
        self.ops[name] += 1
        if not _launches_no_kernel(func, name):
            self.kernel_ops[name] += 1
        if _is_sync(name, args, kwargs):
            self.sync_ops[name] += 1
        return func(*args, **kwargs)
