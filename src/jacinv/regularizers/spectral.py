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
stacked; the other modes stack them too and run ``chunk_rows`` rows per pass (default: as many as the
batch), which bounds the memory.  Without ``index`` there is no bank: every sample gets ``cold_iters`` iterations.
Nothing in a step reads a value back from the device (the host knows which samples are unseen; the rest is
chosen by ``topk`` where the tensors are), so a GPU never waits for the host.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .._checks import choice, flag, positive_int
from ..operators import Identity, LinearOperator
from .bank import VectorBank
from .norms import (apply, apply_adjoint, at_rows, jacobian_input_shape, normalise, per_sample_norm, power_iteration,
                    random_unit_vectors)
from .products import JVP_MODES, JacobianProducts, detached_jvp, resolve_jvp_mode

ALL = "all"  # ``refresh`` value: the whole batch


class SpectralJacobianPenalty(nn.Module):
    """Per-target batch-max spectral norms of J A for each named target operator.

    Args:
        targets: {"sja": A, "sj": None, ...}; an Identity target shares the work of None.
        iters: power iterations per step on warm-started samples.
        cold_iters: iterations for samples without a stored vector (with double-vjp products, for every row
            of a step that has one: they share one graph).
        candidates: samples refreshed per step by their previous estimate (the likely maxima).
        refresh: further samples refreshed per step, stalest first; "all": every sample of the batch, every
            evaluated step (a fresh ranking, needed where many samples lie within a few percent of the batch
            max, at about one power step per row).
        store_dtype: the dtype the per-sample vectors are kept in.
        store_device: the device the per-sample vectors are kept on (None: that of the batches; "cpu" saves
            GPU memory for large training sets at the price of waiting for the device at every step).
        jvp_mode: "auto", "fastest", "double_vjp", "forward" or "finite_difference" (see ``products``).
        chunk_rows: rows per pass of the forward-mode / finite-difference iterations, the targets' rows
            stacked (None: the batch size, so a pass never carries more than a training step).  Memory grows
            with it; CPU time barely; on a GPU fewer passes mean fewer kernel launches.
        krylov: power iterations build a Krylov basis of up to this many vectors and take the best
            estimate in its span (``norms.power_iteration``); 1 is plain power iteration.
        screen: rank the samples by ||J A v_i|| at their stored vectors under the current weights
            (one extra forward-mode pass over the batch per target and step; with finite differences one
            plain forward per target and one shared) instead of by their estimates from the last
            refresh, which go stale as training moves the weights.
        focus: with forward-mode / finite-difference products, where every row costs a pass, the chosen
            rows all take one power step and only the ``focus`` ranked highest by it take the other
            ``iters`` - 1 (0: all take all; unseen rows always take ``cold_iters``).  Only the
            arg-max enters the loss, so the iterations go where it is likely to be.  Double-vjp products
            share one graph, on which extra rows are free: they iterate every row.
    """

    def __init__(self, targets: dict[str, LinearOperator | None], iters: int = 2, cold_iters: int = 4,
                 candidates: int = 4, refresh: int | str = 1, store_dtype: torch.dtype = torch.float16,
                 store_device=None, seed: int = 0, jvp_mode: str = "auto", chunk_rows: int | None = None,
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
        self.chunk_rows = None if chunk_rows is None else positive_int(chunk_rows, "chunk_rows")
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

    def _chosen_rows(self, values: torch.Tensor, age: torch.Tensor, unseen: np.ndarray) -> torch.Tensor:
        """Positions in the batch (rows,) of the samples to refresh this step, on ``values``' device, the
        ``unseen`` ones (host (B,) bool) first: then the top ``candidates`` of the others by their estimate
        ``values`` (B,), and the ``refresh`` stalest of the rest by ``age`` (B,); every sample with ``refresh``
        "all".  How many rows is known on the host: the choice reads nothing back from the device."""
        device = values.device
        seen = torch.from_numpy(np.flatnonzero(~unseen)).to(device)
        parts = [torch.from_numpy(np.flatnonzero(unseen)).to(device)]
        if self.refresh == ALL:
            return torch.cat((*parts, seen))
        n_top = min(self.candidates, seen.numel())
        if n_top:
            top = values[seen].topk(n_top).indices
            parts.append(seen[top])
            n_stale = min(self.refresh, seen.numel() - n_top)
            if n_stale:
                parts.append(seen[age[seen].index_fill(0, top, -1).topk(n_stale).indices])
        return torch.cat(parts)

    def _bank(self, key: str, y: torch.Tensor) -> VectorBank:
        device = torch.device(y.device if self.store_device is None else self.store_device)
        if key not in self.banks:
            self.banks[key] = VectorBank(self._input_shape(key, y), self.store_dtype, device)
        elif self.banks[key].device != device:   # loaded from a checkpoint, or the model moved
            self.banks[key].to(device)
        return self.banks[key]

    def _screened(self, f, key: str, y: torch.Tensor, values: torch.Tensor, index: torch.Tensor, unseen: np.ndarray,
                  mode: str, outputs: dict) -> torch.Tensor:
        """(B,) values with every seen sample's (``unseen``: host (B,) bool) replaced by ||J A v_i|| at its stored
        unit vector under the current weights: a lower bound on ||J A|| as fresh as the step.  Finite differences
        (``mode``) share f(y), kept in ``outputs`` for the other targets of the step."""
        seen = np.flatnonzero(~unseen)
        if not seen.size:
            return values
        if mode == "finite_difference" and "f(y)" not in outputs:
            with torch.no_grad():
                outputs["f(y)"] = f(y.detach())
        rows = torch.from_numpy(seen).to(y.device)
        base = outputs["f(y)"][rows] if mode == "finite_difference" else None
        stored = self.banks[key].vectors_of(index[rows])
        (op,) = at_rows([self._operator(key)], y[rows], [rows.numel()])
        jv = detached_jvp(f, y[rows], apply(op, normalise(stored.to(y))), mode, base)
        return values.index_put((rows.to(values.device),), per_sample_norm(jv).to(values))

    def _plan(self, f, key: str, y: torch.Tensor, index, mode: str, outputs: dict):
        """One target's work this step: (the bank's values (B,) on y's device, or None without ``index``;
        the chosen rows (rows,), unseen ones first; their start vectors; how many are unseen).  ``index``: (the batch's
        dataset indices on y's device, the same on the host) or None.  With ``screen`` the values are the
        screened ones (``mode``, ``outputs``: see ``_screened``)."""
        if index is None:
            shape = (y.shape[0], *self._input_shape(key, y))
            rows = torch.arange(y.shape[0], device=y.device)
            return None, rows, random_unit_vectors(shape, y, self.generator), y.shape[0]
        index, host_index = index
        bank = self._bank(key, y)
        unseen = ~bank.seen(host_index)
        values, age = (t.to(y.device) for t in bank.lookup(index))
        if self.screen:
            values = self._screened(f, key, y, values, index, unseen, mode, outputs)
        rows = self._chosen_rows(values, age, unseen)
        v0 = random_unit_vectors((rows.numel(), *bank.sample_shape), y, self.generator)
        n_unseen = int(unseen.sum())
        if n_unseen == rows.numel():
            return values, rows, v0, n_unseen
        warm = rows[n_unseen:]
        return values, rows, torch.cat((v0[:n_unseen], bank.vectors_of(index[warm]).to(v0))), n_unseen

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
        operators = at_rows(operators, y_rows, sizes)
        jv = products.jvp(torch.cat([apply(op, v) for op, v in zip(operators, vectors)]))
        jtu = products.vjp(normalise(jv), create_graph=True)
        mtu = [apply_adjoint(op, g) for op, g in zip(operators, jtu.split(sizes))]
        differentiable = [per_sample_norm(w) for w in mtu]
        return [normalise(w.detach()) for w in mtu], [d.detach() for d in differentiable], differentiable

    def _chunked_steps(self, f, y_rows, operators, vectors, n_unseen, mode, chunk):
        """Forward-mode or finite-difference products: each is its own forward pass, so the rows of every
        target are stacked and iterated ``chunk`` at a time (few passes: on a GPU each costs its launches
        whatever its rows; a pass carries no more rows than a training step, so memory stays that of one).
        Each target's first ``n_unseen`` rows (no stored vector) take ``cold_iters`` power steps, the others
        ``iters``; with ``focus`` = k, every warm row takes one and only each target's k then ranked highest
        take the other ``iters`` - 1.  Returns (new vectors, bounds sigma) per target."""
        vectors = [v.clone() for v in vectors]
        sigmas = [v.new_zeros(v.shape[0]) for v in vectors]
        device = vectors[0].device
        span = lambda lo, hi: torch.arange(lo, hi, device=device)  # noqa: E731
        cold = [span(0, n) for n in n_unseen]
        warm = [span(n, v.shape[0]) for n, v in zip(n_unseen, vectors)]
        self._stacked_power(f, y_rows, operators, vectors, sigmas, cold, self.cold_iters, mode, chunk)
        if self.focus and self.iters > 1 and any(w.numel() > self.focus for w in warm):
            self._stacked_power(f, y_rows, operators, vectors, sigmas, warm, 1, mode, chunk)
            warm = [w[sigma[w].topk(min(self.focus, w.numel())).indices] for w, sigma in zip(warm, sigmas)]
            self._stacked_power(f, y_rows, operators, vectors, sigmas, warm, self.iters - 1, mode, chunk)
        else:
            self._stacked_power(f, y_rows, operators, vectors, sigmas, warm, self.iters, mode, chunk)
        return vectors, sigmas

    def _stacked_power(self, f, y_rows, operators, vectors, sigmas, picks, n_iter, mode, chunk) -> None:
        """``n_iter`` power steps on M_k = J A_k for the rows ``picks[k]`` (positions in y_rows[k]) of every
        target k, stacked and cut into passes of ``chunk`` rows; writes their vectors and sigma in place."""
        blocks = [(k, p) for k, p in enumerate(picks) if p.numel()]
        if not blocks or not n_iter:
            return
        rows = torch.cat([y_rows[k].index_select(0, p) for k, p in blocks])
        starts = np.cumsum([0] + [p.numel() for _, p in blocks])
        for s in range(0, int(starts[-1]), chunk):
            e = min(s + chunk, int(starts[-1]))
            parts = [(k, p[max(s - a, 0): min(e - a, p.numel())]) for (k, p), a in zip(blocks, starts[:-1])
                     if a < e and a + p.numel() > s]
            new_vectors, new_sigmas = power_iteration(
                JacobianProducts(f, rows[s:e], mode), [operators[k] for k, _ in parts],
                [vectors[k].index_select(0, p) for k, p in parts], n_iter, self.krylov)
            for (k, p), v, sigma in zip(parts, new_vectors, new_sigmas):
                vectors[k].index_copy_(0, p, v)
                sigmas[k].index_copy_(0, p, sigma.to(sigmas[k]))

    def forward(self, f, y: torch.Tensor, x=None, index: torch.Tensor | None = None):
        """Returns ({name: differentiable scalar batch max}, {name: (B,) detached estimates, "argmax_<name>": the
        row (0-d long tensor) whose value is the batch max}).

        Each target refreshes its own likely maxima; estimates of samples not refreshed this step
        are those of their previous visit.  ``index``: the batch's dataset indices (B,), best on the host (the
        DataLoader's): nothing in the step then waits for the device.
        """
        keys = sorted(set(self.keys.values()))
        operators = [self._operator(k) for k in keys]
        if index is not None:
            host_index = index.detach().cpu().numpy().astype(np.int64) if isinstance(index, torch.Tensor) else (
                np.asarray(index, dtype=np.int64))
            index = (torch.from_numpy(host_index).to(y.device), host_index)
        mode, outputs = resolve_jvp_mode(f, self.jvp_mode), {}
        plans = [self._plan(f, key, y, index, mode, outputs) for key in keys]
        sels = [rows for _, rows, _, _ in plans]
        vectors = [v0 for _, _, v0, _ in plans]
        n_unseen = [n for *_, n in plans]
        y_rows = [y.index_select(0, sel) for sel in sels]
        if mode == "double_vjp":
            n_iter = self.cold_iters if any(n_unseen) else self.iters
            vectors, sigmas, differentiable = self._fused_steps(f, torch.cat(y_rows), operators, vectors, n_iter)
        else:
            vectors, sigmas = self._chunked_steps(f, y_rows, operators, vectors, n_unseen, mode,
                                                  self.chunk_rows or y.shape[0])
            differentiable = None

        estimates, best = {}, {}
        for key, (values, _, _, _), sel, v, sigma in zip(keys, plans, sels, vectors, sigmas):
            base = (values.to(y.dtype) if values is not None
                    else torch.zeros(y.shape[0], dtype=y.dtype, device=y.device))
            estimates[key] = base.index_put((sel,), sigma.to(y.dtype))
            best[key] = sigma.argmax().view(1)
            if values is not None and self.training:
                self.banks[key].store(index[0], index[1], sel, sigma, v)
        if differentiable is None:
            # one differentiable forward-mode pass on the arg-max rows only
            argmax_rows = torch.cat([rows.index_select(0, best[k]) for k, rows in zip(keys, y_rows)])
            argmax_ops = at_rows(operators, argmax_rows, [1] * len(keys))
            tangent = torch.cat([apply(op, v.index_select(0, best[k])) for k, op, v in zip(keys, argmax_ops, vectors)])
            jv = JacobianProducts(f, argmax_rows, "forward").jvp(tangent, create_graph=True)
            maxima = dict(zip(keys, per_sample_norm(jv)))
        else:
            maxima = {k: d.index_select(0, best[k])[0] for k, d in zip(keys, differentiable)}
        rows = {key: sel.index_select(0, best[key]) for key, sel in zip(keys, sels)}
        for key, row in rows.items():
            top = torch.maximum(estimates[key].index_select(0, row), maxima[key].detach().view(1))
            estimates[key] = estimates[key].index_put((row,), top)
        stats = {n: estimates[k] for n, k in self.keys.items()}
        stats.update({f"argmax_{n}": rows[k][0] for n, k in self.keys.items()})
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
            bank = VectorBank(tuple(bank_state["vectors"].shape[1:]), self.store_dtype, self.store_device or "cpu")
            bank.load(bank_state)
            self.banks[key] = bank
