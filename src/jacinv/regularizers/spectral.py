"""Batch-max spectral penalties max_i ||J(y_i) A||_2 and max_i ||J(y_i)||_2, fast.

Only the batch maximum receives gradient, so a step needs
  1. estimates good enough to find the arg-max: detached power iterations, warm-started
     from each sample's vector of its previous visit (kept in a ``VectorBank`` keyed by
     dataset index), and run only on the likely maxima — the top ``candidates`` by their
     previous estimate plus the ``refresh`` samples stalest in the bank (a round-robin that
     keeps every estimate honest) and every sample not seen before;
  2. one differentiable evaluation ||J A v|| for the arg-max sample: taken from the
     shared jvp graph of the candidates when products use double-vjp (memory-bound dense
     nets: extra rows are free there), or a separate pass on the arg-max row alone when
     products use forward mode (compute-bound conv nets).
All targets (J A and J) share one forward pass: their rows are stacked.
Without ``index`` there is no bank: every sample gets ``cold_iters`` iterations.
"""
from __future__ import annotations

import torch
from torch import nn

from .._checks import positive_int
from ..operators import Identity, LinearOperator
from .bank import VectorBank
from .norms import apply, apply_adjoint, normalise, per_sample_norm, power_iteration, random_unit_vectors
from .products import JVP_MODES, JacobianProducts, resolve_jvp_mode
from .._checks import choice


class SpectralJacobianPenalty(nn.Module):
    """Per-target batch-max spectral norms of J A for each named target operator.

    Args:
        targets: {"sja": A, "sj": None, ...}; an Identity target shares the work of None.
        iters: power iterations per step on warm-started samples.
        cold_iters: iterations for samples without a stored vector.
        candidates: samples refreshed per step by their previous estimate (the likely maxima).
        refresh: further samples refreshed per step, stalest first.
        store_dtype, store_device: how the per-sample vectors are kept.
        jvp_mode: "auto", "double_vjp" or "forward" (see ``products``).
    """

    def __init__(self, targets: dict[str, LinearOperator | None], iters: int = 2, cold_iters: int = 4,
                 candidates: int = 4, refresh: int = 1, store_dtype: torch.dtype = torch.float16,
                 store_device="cpu", seed: int = 0, jvp_mode: str = "auto"):
        super().__init__()
        if not targets:
            raise ValueError("targets must name at least one operator (or None for J itself)")
        self.iters = positive_int(iters, "iters")
        self.cold_iters = positive_int(cold_iters, "cold_iters")
        self.candidates = positive_int(candidates, "candidates")
        self.refresh = positive_int(refresh, "refresh", minimum=0)
        self.jvp_mode = choice(jvp_mode, "jvp_mode", JVP_MODES)
        # Identity targets are J itself: map every name to a shared key.
        self.keys = {name: ("J" if op is None or isinstance(op, Identity) else name) for name, op in targets.items()}
        self.operators = nn.ModuleDict({self.keys[n]: op for n, op in targets.items() if self.keys[n] != "J"})
        self.store_dtype, self.store_device = store_dtype, store_device
        self.banks: dict[str, VectorBank] = {}
        self.generator = torch.Generator().manual_seed(seed)

    def _operator(self, key: str) -> LinearOperator | None:
        return self.operators[key] if key in self.operators else None

    def _input_shape(self, key: str, y: torch.Tensor) -> tuple[int, ...]:
        op = self._operator(key)
        return op.in_shape if op is not None else tuple(y.shape[1:])

    def _refresh_mask(self, values: torch.Tensor, age: torch.Tensor) -> torch.Tensor:
        """Samples to refresh this step: unseen, top ``candidates`` by estimate, ``refresh`` stalest."""
        unseen = torch.isnan(values)
        chosen = unseen.clone()
        seen = (~unseen).nonzero().flatten()
        if seen.numel():
            top = seen[values[seen].topk(min(self.candidates, seen.numel())).indices]
            chosen[top] = True
            rest = (~chosen).nonzero().flatten()
            if rest.numel() and self.refresh:
                chosen[rest[age[rest].topk(min(self.refresh, rest.numel())).indices]] = True
        return chosen

    def _choose_rows(self, keys, y: torch.Tensor, index):
        """(chosen (B,) bool mask of rows to refresh, {key: (values, vectors, age) of the bank})."""
        if index is None:
            return torch.ones(y.shape[0], dtype=torch.bool), {}
        chosen = torch.zeros(y.shape[0], dtype=torch.bool)
        lookups = {}
        for key in keys:
            if key not in self.banks:
                self.banks[key] = VectorBank(self._input_shape(key, y), self.store_dtype, self.store_device)
            lookups[key] = [t.cpu() for t in self.banks[key].lookup(index)]
            chosen |= self._refresh_mask(lookups[key][0], lookups[key][2])
        return chosen, lookups

    def _start_vectors(self, keys, lookups, sel: torch.Tensor, y: torch.Tensor):
        """Per target, the stored vectors of the selected rows (random for unseen ones); and
        whether any row is unseen (then ``cold_iters`` iterations are run)."""
        vectors, cold = [], not lookups
        for key in keys:
            v0 = random_unit_vectors((sel.numel(), *self._input_shape(key, y)), y, self.generator)
            if key in lookups:
                values, stored, _ = lookups[key]
                warm = ~torch.isnan(values[sel])
                v0[warm.to(v0.device)] = stored[sel][warm].to(v0)
                cold |= not bool(warm.all())
            vectors.append(v0)
        return vectors, cold

    @staticmethod
    def _fused_steps(f, y_rows, operators, vectors, n_iter):
        """Double-vjp products share one graph: the last power step's vjp, taken with create_graph,
        also gives the differentiable norm u^T J A v = ||J A v|| (u = J A v / ||J A v|| fixed),
        whose parameter gradient u^T d(J A) v is that of the norm at v.
        Returns (new vectors, bounds sigma, differentiable norms at the previous vectors) per target."""
        rows = vectors[0].shape[0]
        products = JacobianProducts(f, y_rows, "double_vjp")
        vectors, _ = power_iteration(products, operators, vectors, n_iter - 1)
        tangent = torch.cat([apply(op, v) for op, v in zip(operators, vectors)])
        jv = products.jvp(tangent)
        jtu = products.vjp(normalise(jv), create_graph=True)
        differentiable = list((jtu * tangent).flatten(1).sum(1).split(rows))
        ws = [apply_adjoint(op, g).detach() for op, g in zip(operators, jtu.detach().split(rows))]
        # ||M^T M v|| = ||M^T u|| ||M v||: its square root is the usual power-step bound
        sigmas = [(per_sample_norm(w) * n).sqrt() for w, n in zip(ws, per_sample_norm(jv).split(rows))]
        return [normalise(w) for w in ws], sigmas, differentiable

    def _chunked_steps(self, f, y_sel, stack, operators, vectors, n_iter):
        """Forward-mode products: each is its own forward pass, so rows are iterated in chunks of
        candidates + refresh, and memory stays that of a few samples even when a whole batch is
        new (the first epoch).  Returns (new vectors, bounds sigma) per target."""
        size = self.candidates + max(1, self.refresh)
        parts = [power_iteration(JacobianProducts(f, stack(y_sel[s: s + size]), "forward"), operators,
                                 [v[s: s + size] for v in vectors], n_iter) for s in range(0, y_sel.shape[0], size)]
        return ([torch.cat([p[0][k] for p in parts]) for k in range(len(operators))],
                [torch.cat([p[1][k] for p in parts]) for k in range(len(operators))])

    def forward(self, f, y: torch.Tensor, x=None, index: torch.Tensor | None = None):
        """Returns ({name: differentiable scalar batch max}, {name: (B,) detached estimates}).

        Estimates of samples not refreshed this step are those of their previous visit.
        """
        keys = sorted(set(self.keys.values()))
        operators = [self._operator(k) for k in keys]
        if index is not None:
            index = index.detach().cpu().long()
        chosen, lookups = self._choose_rows(keys, y, index)
        sel = chosen.nonzero().flatten()
        vectors, cold = self._start_vectors(keys, lookups, sel, y)
        n_iter = self.cold_iters if cold else self.iters
        y_sel = y[sel.to(y.device)]
        stack = lambda t: t.repeat(len(keys), *([1] * (y.dim() - 1)))  # noqa: E731  rows of every target
        if resolve_jvp_mode(f, self.jvp_mode) == "double_vjp":
            vectors, sigmas, differentiable = self._fused_steps(f, stack(y_sel), operators, vectors, n_iter)
        else:
            vectors, sigmas = self._chunked_steps(f, y_sel, stack, operators, vectors, n_iter)
            differentiable = None

        estimates, best = {}, {}
        for key, v, sigma in zip(keys, vectors, sigmas):
            estimates[key] = (lookups[key][0].to(y.device, y.dtype) if key in lookups
                              else torch.zeros(y.shape[0], dtype=y.dtype, device=y.device))
            estimates[key][sel.to(y.device)] = sigma
            best[key] = int(sigma.argmax())
            if key in lookups and self.training:
                self.banks[key].store(index, chosen, sigma, v)
        if differentiable is None:
            # one differentiable forward-mode pass on the arg-max rows only
            argmax_rows = torch.stack([y_sel[best[k]] for k in keys])
            tangent = torch.cat([apply(op, v[best[k]: best[k] + 1]) for k, op, v in zip(keys, operators, vectors)])
            jv = JacobianProducts(f, argmax_rows, "forward").jvp(tangent, create_graph=True)
            maxima = dict(zip(keys, per_sample_norm(jv)))
        else:
            maxima = {k: d[best[k]] for k, d in zip(keys, differentiable)}
        for key in keys:
            row = int(sel[best[key]])
            estimates[key][row] = torch.maximum(estimates[key][row], maxima[key].detach())
        return ({n: maxima[k] for n, k in self.keys.items()}, {n: estimates[k] for n, k in self.keys.items()})

    def store_bytes(self, n_samples: int, y_shape: tuple[int, ...]) -> int:
        """Bytes the warm-start vectors of ``n_samples`` training samples will take (one per target)."""
        size = torch.finfo(self.store_dtype).bits // 8
        return sum(n_samples * size * int(torch.Size(self._input_shape(k, torch.empty((1, *y_shape)))).numel())
                   for k in set(self.keys.values()))

    def get_extra_state(self):
        return {"banks": {k: bank.state() for k, bank in self.banks.items()},
                "generator": self.generator.get_state()}

    def set_extra_state(self, state):
        self.generator.set_state(state["generator"])
        for key, bank_state in state["banks"].items():
            bank = VectorBank(tuple(bank_state["vectors"].shape[1:]), self.store_dtype, self.store_device)
            bank.load(bank_state)
            self.banks[key] = bank
