"""Batch-max spectral penalties max_i ||J(y_i) A||_2 and max_i ||J(y_i)||_2, fast.

Only the batch maximum receives gradient, so a step needs
  1. estimates good enough to find the arg-max: detached power iterations, warm-started
     from each sample's vector of its previous visit (kept in a ``VectorBank`` keyed by
     dataset index), and run only on the likely maxima — the top ``candidates`` by their
     previous estimate plus the ``refresh`` samples stalest in the bank (a round-robin that
     keeps every estimate honest) and every sample not seen before; with ``screen`` the
     previous estimates are first brought up to date: ||J A v_i|| at each sample's stored v_i
     with the current weights, one forward-mode pass over the batch without a graph;
  2. one differentiable evaluation for the arg-max sample: ||(J A)^T u|| (u = J A v / ||J A v||) from the
     shared graph of the candidates' last power step when products use double-vjp (memory-bound dense
     nets: extra rows are free there), or ||J A v|| from a separate forward-mode pass on the arg-max row
     alone otherwise (compute-bound conv nets), whose iterations use forward mode or, with
     ``jvp_mode="finite_difference"`` / ``"fastest"``, finite differences (one plain forward per
     product instead of a dual pass; the differentiable pass stays exact).
With double-vjp products all targets (J A and J) share one forward pass: their rows are
stacked; the other modes run ``chunk_rows`` rows per pass, which bounds the memory.
Without ``index`` there is no bank: every sample gets ``cold_iters`` iterations.
"""
from __future__ import annotations

import torch
from torch import nn

from .._checks import choice, flag, positive_int
from ..operators import Identity, LinearOperator
from .bank import VectorBank
from .norms import (apply, apply_adjoint, jacobian_input_shape, normalise, per_sample_norm, power_iteration,
                    random_unit_vectors)
from .products import JVP_MODES, JacobianProducts, detached_jvp, resolve_jvp_mode

ALL = "all"  # ``refresh`` value: the whole batch


class SpectralJacobianPenalty(nn.Module):
    """Per-target batch-max spectral norms of J A for each named target operator.

    Args:
        targets: {"sja": A, "sj": None, ...}; an Identity target shares the work of None.
        iters: power iterations per step on warm-started samples.
        cold_iters: iterations for samples without a stored vector.
        candidates: samples refreshed per step by their previous estimate (the likely maxima).
        refresh: further samples refreshed per step, stalest first; "all": every sample of the batch, every
            evaluated step (a fresh ranking, needed where many samples lie within a few percent of the batch
            max, at about one power step per row).
        store_dtype: the dtype the per-sample vectors are kept in.
        store_device: the device the per-sample vectors are kept on.
        jvp_mode: "auto", "fastest", "double_vjp", "forward" or "finite_difference" (see ``products``).
        chunk_rows: rows per pass of the forward-mode / finite-difference iterations (memory grows with
            it; CPU time barely).
        krylov: power iterations build a Krylov basis of up to this many vectors and take the best
            estimate in its span (``norms.power_iteration``); 1 is plain power iteration.
        screen: rank the samples by ||J A v_i|| at their stored vectors under the current weights
            (one extra forward-mode pass over the batch per target and step; with finite differences one
            plain forward per target and one shared) instead of by their estimates from the last
            refresh, which go stale as training moves the weights.
        focus: with forward-mode / finite-difference products, where every row costs a pass, the chosen
            rows all take one power step and only the ``focus`` ranked highest by it take the other
            ``iters`` - 1 (0: all take all; steps with unseen samples always iterate every row).  Only the
            arg-max enters the loss, so the iterations go where it is likely to be.  Double-vjp products
            share one graph, on which extra rows are free: they iterate every row.
    """

    def __init__(self, targets: dict[str, LinearOperator | None], iters: int = 2, cold_iters: int = 4,
                 candidates: int = 4, refresh: int | str = 1, store_dtype: torch.dtype = torch.float16,
                 store_device="cpu", seed: int = 0, jvp_mode: str = "auto", chunk_rows: int = 4,
                 krylov: int = 1, screen: bool = False, focus: int = 0):
        super().__init__()
        if not targets:
            raise ValueError("targets must name at least one operator (or None for J itself)")
        self.iters = positive_int(iters, "iters")
        self.cold_iters = positive_int(cold_iters, "cold_iters")
        self.candidates = positive_int(candidates, "candidates")
        if isinstance(refresh, str) and refresh != ALL:
            raise ValueError(f"refresh must be an int >= 0 or {ALL!r}, got {refresh!r}")
        self.refresh = refresh if refresh == ALL else positive_int(refresh, "refresh", minimum=0)
        self.jvp_mode = choice(jvp_mode, "jvp_mode", JVP_MODES)
        self.chunk_rows = positive_int(chunk_rows, "chunk_rows")
        self.krylov = positive_int(krylov, "krylov")
        self.focus = positive_int(focus, "focus", minimum=0)
        self.screen = flag(screen, "screen")
        # Identity targets are J itself: map every name to a shared key.
        self.keys = {name: ("J" if op is None or isinstance(op, Identity) else name) for name, op in targets.items()}
        self.operators = nn.ModuleDict({self.keys[n]: op for n, op in targets.items() if self.keys[n] != "J"})
        self.store_dtype, self.store_device = store_dtype, store_device
        self.banks: dict[str, VectorBank] = {}
        self.generator = torch.Generator().manual_seed(seed)

    def _operator(self, key: str) -> LinearOperator | None:
        return self.operators[key] if key in self.operators else None

    def _input_shape(self, key: str, y: torch.Tensor) -> tuple[int, ...]:
        return jacobian_input_shape(self._operator(key), y)

    def _refresh_mask(self, values: torch.Tensor, age: torch.Tensor) -> torch.Tensor:
        """Samples to refresh this step: unseen, top ``candidates`` by estimate, ``refresh`` stalest (all with
        ``refresh`` "all")."""
        unseen = torch.isnan(values)
        if self.refresh == ALL:
            return torch.ones_like(unseen)
        chosen = unseen.clone()
        seen = (~unseen).nonzero().flatten()
        if seen.numel():
            top = seen[values[seen].topk(min(self.candidates, seen.numel())).indices]
            chosen[top] = True
            rest = (~chosen).nonzero().flatten()
            if rest.numel() and self.refresh:
                chosen[rest[age[rest].topk(min(self.refresh, rest.numel())).indices]] = True
        return chosen

    def _bank(self, key: str, y: torch.Tensor) -> VectorBank:
        if key not in self.banks:
            self.banks[key] = VectorBank(self._input_shape(key, y), self.store_dtype, self.store_device)
        return self.banks[key]

    def _screened(self, f, key: str, y: torch.Tensor, values: torch.Tensor, stored: torch.Tensor, mode: str,
                  outputs: dict) -> torch.Tensor:
        """(B,) values with every seen sample's replaced by ||J A v_i|| at its stored unit vector under the
        current weights: a lower bound on ||J A|| as fresh as the step.  Finite differences (``mode``) share
        f(y), kept in ``outputs`` for the other targets of the step."""
        seen = (~torch.isnan(values)).nonzero().flatten()
        if not seen.numel():
            return values
        if mode == "finite_difference" and "f(y)" not in outputs:
            with torch.no_grad():
                outputs["f(y)"] = f(y.detach())
        rows = seen.to(y.device)
        base = outputs["f(y)"][rows] if mode == "finite_difference" else None
        jv = detached_jvp(f, y[rows], apply(self._operator(key), normalise(stored[seen].to(y))), mode, base)
        values = values.clone()
        values[seen] = per_sample_norm(jv).float().cpu()
        return values

    def _plan(self, f, key: str, y: torch.Tensor, index, mode: str, outputs: dict):
        """One target's work this step: (bank lookup (values, vectors, age) or None, chosen (B,) bool mask,
        start vectors of the chosen rows, whether any chosen row is unseen).  With ``screen`` the
        lookup's values are the screened ones (``mode``, ``outputs``: see ``_screened``)."""
        if index is None:
            shape = (y.shape[0], *self._input_shape(key, y))
            return None, torch.ones(y.shape[0], dtype=torch.bool), random_unit_vectors(shape, y, self.generator), True
        lookup = [t.cpu() for t in self._bank(key, y).lookup(index)]
        if self.screen:
            lookup[0] = self._screened(f, key, y, lookup[0], lookup[1], mode, outputs)
        chosen = self._refresh_mask(lookup[0], lookup[2])
        values, stored = lookup[0][chosen], lookup[1][chosen]
        v0 = random_unit_vectors(stored.shape, y, self.generator)
        warm = ~torch.isnan(values)
        v0[warm.to(v0.device)] = stored[warm].to(v0)
        return lookup, chosen, v0, not bool(warm.all())

    def _fused_steps(self, f, y_rows, operators, vectors, n_iter):
        """Double-vjp products share one graph: the last power step's vjp, taken with create_graph,
        also gives the differentiable norm ||M^T u|| (M = J A, u = M v / ||M v|| fixed): a lower bound on
        ||M|| half a power step past ||M v||, never below it nor below the step's usual bound
        ||M^T M v||^(1/2) = (||M^T u|| ||M v||)^(1/2), whose parameter gradient u^T dM w
        (w = M^T u / ||M^T u||) is that of the norm once v has converged.
        Returns (new vectors w, bounds sigma = the detached norms, differentiable norms) per target."""
        sizes = [v.shape[0] for v in vectors]
        products = JacobianProducts(f, y_rows, "double_vjp")
        vectors, _ = power_iteration(products, operators, vectors, n_iter - 1, self.krylov)
        jv = products.jvp(torch.cat([apply(op, v) for op, v in zip(operators, vectors)]))
        jtu = products.vjp(normalise(jv), create_graph=True)
        mtu = [apply_adjoint(op, g) for op, g in zip(operators, jtu.split(sizes))]
        differentiable = [per_sample_norm(w) for w in mtu]
        return [normalise(w.detach()) for w in mtu], [d.detach() for d in differentiable], differentiable

    def _chunked_steps(self, f, y_rows, operators, vectors, n_iter, mode, focus):
        """Forward-mode or finite-difference products: each is its own forward pass, so each target's rows
        are iterated in chunks of ``chunk_rows``, and memory stays that of a few samples even when a whole
        batch is new (the first epoch).  With ``focus`` = k, every row takes one power step and only the k
        rows then ranked highest take the other ``n_iter`` - 1.  Returns (new vectors, bounds sigma) per target."""
        out_vectors, out_sigmas = [], []
        for rows, op, v in zip(y_rows, operators, vectors):
            if not focus or n_iter == 1 or rows.shape[0] <= focus:
                v, sigma = self._chunked_power(f, rows, op, v, n_iter, mode)
            else:
                v, sigma = self._chunked_power(f, rows, op, v, 1, mode)
                top = sigma.topk(focus).indices
                v[top], sigma[top] = self._chunked_power(f, rows[top], op, v[top], n_iter - 1, mode)
            out_vectors.append(v)
            out_sigmas.append(sigma)
        return out_vectors, out_sigmas

    def _chunked_power(self, f, rows, op, v, n_iter, mode):
        """``n_iter`` power steps on M = J A (``op``; J when None) for ``rows``, ``chunk_rows`` at a time:
        (vectors, sigma)."""
        size = self.chunk_rows
        parts = [power_iteration(JacobianProducts(f, rows[s: s + size], mode), [op], [v[s: s + size]], n_iter,
                                 self.krylov) for s in range(0, rows.shape[0], size)]
        return torch.cat([p[0][0] for p in parts]), torch.cat([p[1][0] for p in parts])

    def forward(self, f, y: torch.Tensor, x=None, index: torch.Tensor | None = None):
        """Returns ({name: differentiable scalar batch max}, {name: (B,) detached estimates, "argmax_<name>": the
        row (int) whose value is the batch max}).

        Each target refreshes its own likely maxima; estimates of samples not refreshed this step
        are those of their previous visit.
        """
        keys = sorted(set(self.keys.values()))
        operators = [self._operator(k) for k in keys]
        if index is not None:
            index = index.detach().cpu().long()
        mode, outputs = resolve_jvp_mode(f, self.jvp_mode), {}
        plans = [self._plan(f, key, y, index, mode, outputs) for key in keys]
        sels = [chosen.nonzero().flatten().to(y.device) for _, chosen, _, _ in plans]
        vectors = [v0 for _, _, v0, _ in plans]
        cold = any(unseen for *_, unseen in plans)
        n_iter = self.cold_iters if cold else self.iters
        y_rows = [y[sel] for sel in sels]
        if mode == "double_vjp":
            vectors, sigmas, differentiable = self._fused_steps(f, torch.cat(y_rows), operators, vectors, n_iter)
        else:
            vectors, sigmas = self._chunked_steps(f, y_rows, operators, vectors, n_iter, mode,
                                                  0 if cold else self.focus)
            differentiable = None

        estimates, best = {}, {}
        for key, (lookup, chosen, _, _), sel, v, sigma in zip(keys, plans, sels, vectors, sigmas):
            estimates[key] = (lookup[0].to(y.device, y.dtype) if lookup is not None
                              else torch.zeros(y.shape[0], dtype=y.dtype, device=y.device))
            estimates[key][sel] = sigma
            best[key] = int(sigma.argmax())
            if lookup is not None and self.training:
                self.banks[key].store(index, chosen, sigma, v)
        if differentiable is None:
            # one differentiable forward-mode pass on the arg-max rows only
            argmax_rows = torch.stack([rows[best[k]] for k, rows in zip(keys, y_rows)])
            tangent = torch.cat([apply(op, v[best[k]: best[k] + 1]) for k, op, v in zip(keys, operators, vectors)])
            jv = JacobianProducts(f, argmax_rows, "forward").jvp(tangent, create_graph=True)
            maxima = dict(zip(keys, per_sample_norm(jv)))
        else:
            maxima = {k: d[best[k]] for k, d in zip(keys, differentiable)}
        rows = {key: int(sel[best[key]]) for key, sel in zip(keys, sels)}
        for key, row in rows.items():
            estimates[key][row] = torch.maximum(estimates[key][row], maxima[key].detach())
        stats = {n: estimates[k] for n, k in self.keys.items()}
        stats.update({f"argmax_{n}": rows[k] for n, k in self.keys.items()})
        return {n: maxima[k] for n, k in self.keys.items()}, stats

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
