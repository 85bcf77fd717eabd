"""Cost and accuracy of the batch-max spectral penalty "sja+sj" against a plain training step.

    python benchmarks/jacobian_cost.py            # full table (about 50 minutes on 2 CPU cores)
    python benchmarks/jacobian_cost.py --quick    # fewer steps
    python benchmarks/jacobian_cost.py --cases fc-cs --update   # re-run one case, keep the other rows
    python benchmarks/jacobian_cost.py --device cuda              # the same on a GPU (jacobian_cost_cuda.json)
    python benchmarks/jacobian_cost.py --methods plain jacinv --options iters=1 candidates=2 --out F
                                                  # other estimator options (SpectralJacobianPenalty's) for jacinv
    python benchmarks/jacobian_cost.py --accuracy-only --seeds 0 1 2 --jobs 2 --cases unrolled-cs \
        --methods jacinv-lazy --options focus=2 --out F   # estimate errors over 3 training seeds, untimed
    python benchmarks/jacobian_cost.py --time-only --cases unrolled-cs --methods jacinv --options iters=1 --out F
                                                  # the time ratio alone (no references, memory or counts)

Each (case, method) runs in fresh worker processes, alone on the machine:
  accuracy   from initialisation, the batch maxima reported on the first CHECKS (4) evaluated steps from
             step 10 on ("early": ||J A|| moves fastest there) are checked against references;
             then training goes on (Adam, lr 1e-3) to TRAIN_STEPS steps, the next TIMED_STEPS steps
             are timed (mean of forward + penalty + backward + Adam; with every = k the mean covers
             whole cycles of k) in blocks of 4 between blocks of 4 plain steps (no penalty) timed as
             well, which give the time ratio ("same process": it does not drift with the machine, as
             the ratio to the plain method's own run does), and CHECKS more evaluated steps are
             checked ("trained").
  memory     a second process with glibc's mmap threshold fixed at 128 KiB, so that freed tensors
             leave the resident set and its peak follows the live tensors: peak RSS above the
             set-up during the first epoch (every sample cold) and during the next epoch (reset with
             /proc/self/clear_refs), each against the plain step's.  The ratios count anonymous
             memory: the peak less the library code paged in since the set-up (RssFile at the start
             of the phase, an upper bound on the anonymous peak).  Code pages are shared, a few MB
             once per process whatever the model's size, and the first use of new kernels (forward
             mode, double backward) pages in more of them; the total is kept in the JSON as well.
             On CUDA: the peak of allocated GPU memory above the set-up
             (torch.cuda.max_memory_allocated), steps timed after a synchronise.
  dispatch   a third process counts per step the operators dispatched (kernel launches on a GPU) and the host
             synchronisations (jacinv.dispatch_count) of the forward, penalty and backward passes, the method's
             against plain steps', on the first steps (cold) and one epoch later.  ``--dispatch-only`` runs only
             these; counts do not depend on the machine's load, so ``--jobs`` may run them side by side.
Methods:
  plain         fidelity loss only
  jacinv        build_regularizer("sja+sj") at its defaults (every = 1)
  jacinv-lazy   the recommended setting, preset "fast": every = 4, iters = 3, krylov = 4, jvp_mode = "fastest"
  jacinv-all    preset "whole-batch": the same with every sample of the batch refreshed on every evaluated step
                (refresh = "all", focus = 4): a fresh ranking for nets with a flat batch top
  seed-n1/n3    the seed's Algorithm 2: n power iterations on the whole batch, differentiated through
                every iteration (written here as the reference); timed and checked from
                initialisation only (its cost does not depend on the training state)
  deepinv       deepinv.loss.JacobianSpectralNorm, 5 iterations (only when installed)
With --seeds the accuracy worker runs once per training seed (the model's initialisation, the batch order
and the estimator's random vectors; seed 0 is the default trajectory) and the errors are reported as the
mean over seeds (worst seed): the largest of CHECKS errors on one trajectory moves by about 2 points from
seed to seed.  --accuracy-only skips the timing and the memory worker; only then may --jobs run
workers side by side, with one thread each.
Each error is split into its parts (the largest of each over the checks, relative to the batch max): "ranking",
the value was taken at a sample whose norm is below the batch max, and "convergence", the value is below
that sample's norm.
Reference norms: exact Jacobians (forward-mode products with the 160 basis vectors) for the FC
net; for the unrolled net exact Jacobians of the 3 samples ranked highest by 30 Krylov-refined
power iterations (krylov = 8); for DnCNN, Lanczos (scipy svds on the matrix-free J A, tol 1e-4) on
the 2 samples ranked highest the same way, checked against an exact Jacobian on one sample; and the sample the
estimate was taken at, the same way.
Prints a table with ratios to the plain step and writes benchmarks/results/jacobian_cost.json
(jacobian_cost_cuda.json with --device cuda; --dispatch-only: jacobian_dispatch.json, jacobian_dispatch_cuda.json).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from jacinv.checkpoint import write_json
from jacinv.cpu_memory import keep_freed_memory
from jacinv.models import build_model
from jacinv.operators import BlurDecimate, GaussianCS, Identity, KSpaceSubsample
from jacinv.regularizers import PRESETS, build_regularizer, jacobian_spectral_norm, l2_distance
from jacinv.regularizers.products import JacobianProducts

RESULTS = Path(__file__).parent / "results" / "jacobian_cost.json"
CASES = {
    # name: (model, operator factory, model kwargs, batch, training-set size)
    "fc-cs": ("fc", lambda: GaussianCS((1, 28, 28), 160, seed=0), {}, 100, 500),
    "dncnn5-identity": ("dncnn", lambda: Identity((1, 64, 64)), {"depth": 5}, 16, 64),
    "dncnn5-blur-x2": ("dncnn", lambda: BlurDecimate((1, 64, 64), factor=2), {"depth": 5}, 16, 64),
    "unrolled-cs": ("unrolled", lambda: GaussianCS((1, 28, 28), 160, seed=0),
                    {"iterations": 5, "depth": 5, "features": 32}, 50, 500),
    # configs/mri_4x_varnet.yaml's net and mask on 64 x 64 images (its slices are 112 x 96)
    "varnet-mri-4x": ("varnet", lambda: KSpaceSubsample((1, 64, 64), acceleration=4, center_fraction=0.08,
                                                        pattern="random", seed=0),
                      {"cascades": 6, "chans": 8, "num_pool_layers": 3}, 4, 40),
}
# how the reference norms are computed (see reference_norms): the unrolled net's exact Jacobian costs
# 160 forward-mode passes of a 5 x 5-layer CNN per sample, so only the likely maxima get one
REFERENCE = {"fc": "exact", "unrolled": "exact-top", "dncnn": "lanczos", "varnet": "lanczos"}
METHODS = ("plain", "jacinv", "jacinv-lazy", "jacinv-all", "seed-n1", "seed-n3", "deepinv")
# jacinv-lazy's setting: every = 4 (README: 3-seed check at the CS central point) with 3 Krylov-refined
# iterations per visit, which bring back the accuracy that the staler vectors of a lazy penalty lose, run
# by finite differences on the conv nets (one plain forward per product instead of a dual pass)
RECOMMENDED = {"every": PRESETS["fast"].every, **PRESETS["fast"].options}       # regularizer.preset=fast
# jacinv-all's: RECOMMENDED with the whole batch refreshed (one power step per row, the 4 then highest two more)
WHOLE_BATCH = {"every": PRESETS["whole-batch"].every, **PRESETS["whole-batch"].options}
LAMBDA = 1e-3
TRAIN_LR = 1e-3
TRAIN_STEPS = {"fc-cs": 400, "dncnn5-identity": 80, "dncnn5-blur-x2": 80, "unrolled-cs": 150, "varnet-mri-4x": 80}
EARLY_FROM = 10      # the early check starts at this step (1-based) from initialisation
CHECKS = 4           # evaluated steps checked per phase
# timed steps, multiples of every k in RECOMMENDED, several seconds each: 12 DnCNN steps (2 s) timed the same plain
# step at 147 and 180 ms in two runs; the seed's algorithm, whose steps take seconds and do not cycle, gets
# SEED_TIMED_STEPS
TIMED_STEPS = {"fc-cs": 384, "dncnn5-identity": 48, "dncnn5-blur-x2": 48, "unrolled-cs": 48, "varnet-mri-4x": 24}
SEED_TIMED_STEPS = 12
INTERLEAVE = RECOMMENDED["every"]  # steps per block when plain steps are timed between the method's blocks
REFERENCE_TOP = {"exact-top": 3, "lanczos": 2}
# input columns per forward-mode pass of the exact Jacobian that checks the Lanczos reference (8192 on VarNet):
# reverse mode by torch.func.jacrev held over 24 GB there, even 8 rows at a time, and was killed for memory
EXACT_CHUNK = 64
MMAP_THRESHOLD = str(128 * 1024)
THREADS = int(os.environ.get("JACINV_THREADS", "2"))  # torch CPU threads of the workers


def smooth_images(n: int, shape, seed: int) -> torch.Tensor:
    """Smooth random images in [0, 1], (n, *shape): low-pass filtered noise."""
    g = torch.Generator().manual_seed(seed)
    z = torch.fft.rfft2(torch.randn((n, *shape), generator=g))
    h, w = shape[-2:]
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    img = torch.fft.irfft2(z * torch.exp(-(fy**2 + fx**2) / (2 * 0.06**2)), s=(h, w))
    lo = img.flatten(1).min(1).values.view(-1, *[1] * len(shape))
    hi = img.flatten(1).max(1).values.view(-1, *[1] * len(shape))
    return (img - lo) / (hi - lo)


def seed_algorithm2(f, y, operator, n_iters: int, generator) -> torch.Tensor:
    """Seed Algorithm 2 with Algorithm 3's jvp, differentiated through every iteration: (B,)."""
    products = JacobianProducts(f, y, mode="double_vjp")
    u = torch.randn(products.out.shape, generator=generator).to(y)
    for _ in range(n_iters):
        v = products.vjp(u, create_graph=True)
        v = operator.adjoint(v) if operator is not None else v
        u = products.jvp(operator(v) if operator is not None else v, create_graph=True)
    return u.flatten(1).norm(dim=1) / v.flatten(1).norm(dim=1)


def make_penalty(method: str, operator, options: dict | None = None, seed: int = 0):
    """A function (f, y, x, index) -> (penalty or None, {"sja": batch max, "sj": batch max} as the values
    that enter the loss, and "argmax": {"sja": row, "sj": row} the samples they were taken at, when the penalty
    was evaluated on this step, else None).  ``options``: estimator options of the jacinv methods
    (``build_regularizer``'s), over RECOMMENDED's for jacinv-lazy and WHOLE_BATCH's for jacinv-all; ``seed``: that
    of the random start vectors."""
    if method in ("jacinv", "jacinv-lazy", "jacinv-all"):
        preset = {"jacinv": {}, "jacinv-lazy": RECOMMENDED, "jacinv-all": WHOLE_BATCH}[method]
        options = {**preset, "seed": seed, **(options or {})}
        reg = build_regularizer("sja+sj", operator=operator, lambda_ja=LAMBDA, lambda_j=LAMBDA, **options)

        def penalty(f, y, x, index):
            value = reg(f, y, x, index=index)
            if not value.requires_grad:
                return value, None
            stats = reg.last_stats
            return value, {**{k: stats[f"penalty_{k}"] for k in ("sja", "sj")},   # tensors: read after the step
                           "argmax": {k: stats[f"argmax_{k}"] for k in ("sja", "sj")}}
        return penalty
    if method.startswith("seed-n"):
        n = int(method[len("seed-n"):])
        g = torch.Generator().manual_seed(seed)

        def penalty(f, y, x, index):
            sja = seed_algorithm2(f, y, operator, n, g)
            sj = seed_algorithm2(f, y, None, n, g)
            return LAMBDA * (sja.max() + sj.max()), {"sja": float(sja.max()), "sj": float(sj.max()),
                                                     "argmax": {"sja": int(sja.argmax()), "sj": int(sj.argmax())}}
        return penalty
    if method == "deepinv":
        from deepinv.loss.regularisers import JacobianSpectralNorm  # noqa: WPS433 (optional)

        spec = JacobianSpectralNorm(max_iter=5, tol=1e-3, eval_mode=False, verbose=False)

        def penalty(f, y, x, index):
            y_ = y.detach().requires_grad_(True)
            value = spec(f(y_), y_)
            return LAMBDA * value, None
        return penalty
    return lambda f, y, x, index: (None, None)


def reference_norms(f, y, operator, how: str, settle: dict[str, int] | None = None) -> dict[str, torch.Tensor]:
    """Per-sample ||J A|| and ||J||.  "exact": exact Jacobians of every sample (the FC net);
    "exact-top" / "lanczos": 30 cold Krylov-refined power iterations rank the samples, and the REFERENCE_TOP
    largest, and the row ``settle[key]`` of each target, are settled by exact Jacobians or by Lanczos (ARPACK
    svds on the matrix-free J A, 1e-4 relative)."""
    if how == "exact":
        jac = torch.stack([exact_jacobian(f, yi) for yi in y])
        dense = operator.to_dense(dtype=jac.dtype).to(jac.device)
        return {"sja": torch.linalg.matrix_norm(jac @ dense, ord=2), "sj": torch.linalg.matrix_norm(jac, ord=2)}
    out = {}
    for key, op in (("sja", operator), ("sj", None)):
        if key == "sj" and isinstance(operator, Identity):
            out[key] = out["sja"]
            continue
        rough = jacobian_spectral_norm(f, y, op, iters=30, krylov=8,
                                       generator=torch.Generator().manual_seed(1)).detach()
        rows = set(rough.topk(min(REFERENCE_TOP[how], y.shape[0])).indices.tolist())
        for i in rows | ({settle[key]} if settle else set()):
            rough[i] = lanczos_norm(f, y[i: i + 1], op) if how == "lanczos" else exact_norm(f, y[i], op)
        out[key] = rough
    return out


def exact_norm(f, y: torch.Tensor, operator) -> float:
    """||J(y) A||_2 of one measurement from its exact Jacobian."""
    jac = exact_jacobian(f, y)
    return float(torch.linalg.matrix_norm(jac @ operator.to_dense(dtype=jac.dtype).to(jac.device) if operator is not None else jac,
                                          ord=2))


def exact_jacobian(f, y: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """J(y) of one measurement y (*y_shape), (out_numel, y_numel): forward-mode products with every
    basis vector, ``chunk`` at a time (None: all as one batch)."""
    n = y.numel()
    basis = torch.eye(n, dtype=y.dtype, device=y.device).reshape(n, *y.shape)
    rows = []
    with torch.no_grad():
        for part in basis.split(chunk or n):
            rows.append(JacobianProducts(f, y.expand(part.shape[0], *y.shape).contiguous(), mode="forward").jvp(part))
    return torch.cat(rows).reshape(n, -1).T


def lanczos_norm(f, y, operator) -> float:
    """Largest singular value of J(y) A for one sample by scipy's svds (ARPACK, tol 1e-4)."""
    import numpy as np
    import scipy.sparse.linalg as sla

    products = JacobianProducts(f, y, mode="forward")
    in_shape = operator.in_shape if operator is not None else tuple(y.shape[1:])
    out_numel = products.out[0].numel()

    def matvec(v):
        t = torch.as_tensor(np.asarray(v, dtype=np.float32).reshape(1, *in_shape), device=y.device)
        t = operator(t) if operator is not None else t
        return products.jvp(t).detach().reshape(-1).double().cpu().numpy()

    def rmatvec(u):
        g = torch.as_tensor(np.asarray(u, dtype=np.float32), device=y.device).reshape(products.out.shape)
        g = products.vjp(g).detach()
        g = operator.adjoint(g) if operator is not None else g
        return g.reshape(-1).double().cpu().numpy()

    lin = sla.LinearOperator((out_numel, int(np.prod(in_shape))), matvec=matvec, rmatvec=rmatvec, dtype=np.float64)
    return float(sla.svds(lin, k=1, tol=1e-4, return_singular_vectors=False, random_state=0)[0])


def check_reference_on_one_sample(f, y, operator) -> float:
    """Relative gap between the Lanczos reference and the exact ||J A|| of one sample."""
    jac = exact_jacobian(f, y[0], chunk=EXACT_CHUNK)
    exact = float(torch.linalg.matrix_norm(jac @ operator.to_dense(dtype=jac.dtype).to(jac.device), ord=2))
    return abs(exact - lanczos_norm(f, y[:1], operator)) / exact


def rss_mb(field: str = "VmRSS") -> float:
    """Resident set (VmRSS), its peak since the last reset (VmHWM) or its file-backed part (RssFile: mapped
    library code and files) of this process, in MiB."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":")) / 1024


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


class Trainer:
    """One case and method: the model, its data, Adam and the step function (fixed seeds)."""

    def __init__(self, case: str, method: str, device: str = "cpu", options: dict | None = None,
                 keep_memory: bool = True, seed: int = 0):
        torch.manual_seed(seed)
        torch.set_num_threads(THREADS)
        self.device = torch.device(device)
        # as jacinv's training loop does on CPU; the memory worker's own mmap threshold is left alone
        self.allocator = keep_freed_memory() if keep_memory and self.device.type == "cpu" else None
        model_name, make_op, kwargs, self.batch, self.n_train = CASES[case]
        self.operator = make_op().to(self.device)
        self.reference = REFERENCE[model_name]
        self.f = build_model(model_name, self.operator, **kwargs).to(self.device)
        self.x = smooth_images(self.n_train, self.operator.in_shape, seed=1).to(self.device)
        with torch.no_grad():
            self.y = self.operator(self.x)
        self.opt = torch.optim.Adam(self.f.parameters(), lr=TRAIN_LR)
        self.penalty = make_penalty(method, self.operator, options, seed)
        self.order = torch.Generator().manual_seed(2 + seed)
        self.steps_per_epoch = self.n_train // self.batch
        self.stream = self._batches()
        self.steps = 0

    def _batches(self):
        while True:
            order = torch.randperm(self.n_train, generator=self.order)
            for s in range(self.steps_per_epoch):
                yield order[s * self.batch:(s + 1) * self.batch]

    def step(self, before_update=None, plain: bool = False, count=None):
        """One training step as jacinv's loop takes it (fidelity backward, then penalty backward; ``plain``:
        without the penalty, which is not called).  ``before_update(y, stats)`` runs, untimed, before Adam's
        update when the penalty was evaluated.  ``count``: a ``DispatchCount`` active over the forward, penalty and
        backward passes (not Adam's update, the same in both, whose step counters live on the host on CUDA).
        Returns (seconds, its result or None)."""
        index = next(self.stream)
        y, x = self.y[index], self.x[index]
        self.synchronize()
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        with count if count is not None else contextlib.nullcontext():
            l2_distance(self.f(y), x).mean().backward()
            value, stats = (None, None) if plain else self.penalty(self.f, y, x, index)
            if value is not None and value.requires_grad:
                value.backward()
        self.synchronize()
        t1 = time.perf_counter()
        result = before_update(y, stats) if before_update is not None and stats is not None else None
        t2 = time.perf_counter()
        self.opt.step()
        self.synchronize()
        self.steps += 1
        return (t1 - t0) + (time.perf_counter() - t2), result

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def check(self, n: int) -> list[dict]:
        """Batch-max estimates against references (at the same weights) on the next ``n`` steps that
        evaluate the penalty: per step {target: (estimate, reference batch max, reference norm of the sample
        the estimate was taken at)}."""
        def compare(y, stats):
            argmax = {k: int(v) for k, v in stats["argmax"].items()}
            ref = reference_norms(self.f, y, self.operator, self.reference, argmax)
            return {k: (float(stats[k]), float(ref[k].max()), float(ref[k][argmax[k]])) for k in ("sja", "sj")}

        pairs = []
        while len(pairs) < n:
            result = self.step(compare)[1]
            if result is not None:
                pairs.append(result)
        return pairs


def timed_steps_interleaved(t: Trainer, n: int, interleave: bool) -> tuple[list[float], list[float]]:
    """Seconds of ``n`` steps of the method and, with ``interleave``, of as many plain steps taken in blocks of
    INTERLEAVE between the method's blocks in the same process: their ratio does not drift with the machine
    (the same plain DnCNN step timed in two processes took 147 and 180 ms)."""
    times, plain_times = [], []
    while len(times) < n:
        if interleave:
            plain_times += [t.step(plain=True)[0] for _ in range(INTERLEAVE)]
        times += [t.step()[0] for _ in range(min(INTERLEAVE, n - len(times)))]
    return times, plain_times


def max_rel_error(pairs: list[dict]) -> dict:
    return {k: max(abs(p[k][0] - p[k][1]) / p[k][1] for p in pairs) for k in ("sja", "sj")}


def error_parts(pairs: list[dict]) -> dict:
    """Where the error comes from, largest over the checks, relative to the batch max: "ranking", the
    estimate was taken at a sample whose norm is below the batch max ((max - norm) / max), and
    "convergence", its estimate is below its norm ((norm - estimate) / max)."""
    return {part: {k: max(fn(*p[k]) for p in pairs) for k in ("sja", "sj")}
            for part, fn in (("ranking", lambda est, top, at: (top - at) / top),
                             ("convergence", lambda est, top, at: (at - est) / top))}


def accuracy_worker(case: str, method: str, timed_steps: int, device: str, options: dict, seed: int = 0,
                    check: bool = True) -> dict:
    """Early check, training to TRAIN_STEPS, timing (none when ``timed_steps`` is 0), trained check (see the
    module docstring; none without ``check``), on the trajectory of training seed ``seed``."""
    t = Trainer(case, method, device, options, seed=seed)
    checked = check and (method.startswith("jacinv") or (method.startswith("seed") and t.reference != "lanczos"))
    out = {"case": case, "method": method, "seed": seed, "allocator": t.allocator}
    while t.steps < EARLY_FROM - 1:
        t.step()
    if checked:
        out["early"] = t.check(CHECKS)
        out["early_error"] = max_rel_error(out["early"])
        out["early_parts"] = error_parts(out["early"])
    if not method.startswith("seed"):  # the seed's algorithm is timed from initialisation
        while t.steps < TRAIN_STEPS[case]:
            t.step()
    n_timed = min(timed_steps, SEED_TIMED_STEPS) if method.startswith("seed") else timed_steps
    if n_timed:
        times, plain_times = timed_steps_interleaved(t, n_timed, interleave=method != "plain")
        out.update(step_ms=1000 * sum(times) / len(times), step_ms_all=[1000 * s for s in times])
        if plain_times:
            out["plain_ms_interleaved"] = 1000 * sum(plain_times) / len(plain_times)
    out["at_step"] = t.steps
    if checked and method.startswith("jacinv"):
        out["trained"] = t.check(CHECKS)
        out["trained_error"] = max_rel_error(out["trained"])
        out["trained_parts"] = error_parts(out["trained"])
        if t.reference == "lanczos" and method == "jacinv":
            out["reference_check_rel_gap"] = check_reference_on_one_sample(t.f, t.y[:1], t.operator)
    out["reference"] = {"exact": "exact Jacobians", "exact-top": "exact Jacobians of the likely maxima",
                        "lanczos": "Lanczos (svds, tol 1e-4)"}[t.reference]
    return out


def dispatch_worker(case: str, method: str, device: str, options: dict) -> dict:
    """Operators dispatched and host synchronisations per training step (``jacinv.dispatch_count``; forward,
    penalty and backward: see ``Trainer.step``), the method's and a plain step's, on the same trainer: averaged over the first INTERLEAVE steps (every sample cold) and
    over INTERLEAVE steps one epoch later (warm), each with as many plain steps.  Counts do not depend on the
    machine's load, so these workers may run side by side."""
    from jacinv.dispatch_count import DispatchCount

    t = Trainer(case, method, device, options)
    out = {}
    for phase in ("_first_epoch", ""):
        for kind, plain in (("plain_", True), ("", False)):
            count = DispatchCount()
            for _ in range(INTERLEAVE):
                t.step(plain=plain, count=count)
            out[f"{kind}ops_per_step{phase}"] = count.operators / INTERLEAVE
            out[f"{kind}kernels_per_step{phase}"] = count.kernels / INTERLEAVE
            out[f"{kind}syncs_per_step{phase}"] = count.syncs / INTERLEAVE
            out[f"{kind}sync_ops{phase}"] = dict(count.sync_ops)
        while t.steps < t.steps_per_epoch + 2 * INTERLEAVE:
            t.step()
    return out


def over_seeds(results: list[dict]) -> dict:
    """One row from the accuracy workers of several training seeds: the first seed's row (its times), with
    each error replaced by its mean over the seeds, the worst seed's in ``<phase>_error_worst`` and every
    seed's checks in ``per_seed``."""
    row = dict(results[0])
    if len(results) == 1:
        return row
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    for phase in ("early", "trained"):
        if phase + "_error" in row:
            errors = [r[phase + "_error"] for r in results]
            row[phase + "_error"] = {k: mean([e[k] for e in errors]) for k in ("sja", "sj")}
            row[phase + "_error_worst"] = {k: max(e[k] for e in errors) for k in ("sja", "sj")}
            row[phase + "_parts"] = {part: {k: mean([r[phase + "_parts"][part][k] for r in results]) for k in ("sja", "sj")}
                                     for part in ("ranking", "convergence")}
    row["per_seed"] = [{k: r[k] for k in ("seed", "early", "early_error", "early_parts", "trained", "trained_error",
                                          "trained_parts") if k in r} for r in results]
    return row


def memory_worker(case: str, method: str, device: str, options: dict) -> dict:
    """Peak memory above the set-up over the first epoch, and over the next one (MiB).  On the CPU
    ``peak_mb*`` are anonymous memory (the resident set's peak less the code paged in since the set-up) and
    ``peak_rss_mb*`` the whole resident set; on CUDA both are allocated GPU memory."""
    t = Trainer(case, method, device, options)
    cuda = t.device.type == "cuda"
    current = (lambda: torch.cuda.memory_allocated(t.device) / 2**20) if cuda else rss_mb  # noqa: E731
    peak = (lambda: torch.cuda.max_memory_allocated(t.device) / 2**20) if cuda else lambda: rss_mb("VmHWM")  # noqa: E731
    reset = (lambda: torch.cuda.reset_peak_memory_stats(t.device)) if cuda else reset_peak_rss  # noqa: E731
    code = (lambda: 0.0) if cuda else lambda: rss_mb("RssFile")  # noqa: E731
    baseline, code_baseline = current(), code()
    out = {}
    for phase, steps in (("_first_epoch", t.steps_per_epoch), ("", max(t.steps_per_epoch, 2 * RECOMMENDED["every"]))):
        reset()
        paged_in = code() - code_baseline
        for _ in range(steps):
            t.step()
        out["peak_rss_mb" + phase] = peak() - baseline
        out["peak_mb" + phase] = out["peak_rss_mb" + phase] - paged_in
    out["code_paged_in_mb"] = code() - code_baseline
    return out


def available(method: str) -> bool:
    if method != "deepinv":
        return True
    try:
        import deepinv  # noqa: F401
    except ImportError:
        return False
    return True


def run_worker(kind: str, case: str, method: str, timed_steps: int, device: str, options: list[str], seed: int = 0,
               threads: int | None = None) -> dict:
    """One worker process (``threads``: its torch and OpenMP threads, default THREADS)."""
    env = dict(os.environ)
    if kind == "memory":
        env["MALLOC_MMAP_THRESHOLD_"] = MMAP_THRESHOLD
    if threads is not None:
        env.update(JACINV_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--worker", kind, case, method, "--steps", str(timed_steps), "--device", device,
           "--seed", str(seed), "--options", *options]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode:
        print(proc.stderr, file=sys.stderr)
        raise SystemExit(f"{kind} worker {case} {method} seed {seed} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer timed steps")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--out", type=Path, help=f"default {RESULTS} ({RESULTS.stem}_cuda.json on CUDA)")
    parser.add_argument("--update", action="store_true",
                        help="keep the other rows of --out and replace only those of --cases x --methods")
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "CASE", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=None, help=f"timed steps (default per case: {TIMED_STEPS})")
    parser.add_argument("--options", nargs="*", default=[], metavar="KEY=VALUE",
                        help="estimator options of the jacinv methods, e.g. iters=1 jvp_mode=forward")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], metavar="SEED",
                        help="training seeds of the accuracy worker (default 0); errors: mean over seeds (worst)")
    parser.add_argument("--accuracy-only", action="store_true", help="estimate errors only: no timing, no memory worker")
    parser.add_argument("--time-only", action="store_true",
                        help="the time ratio only: no estimate checks, no memory or dispatch worker (alone on the machine)")
    parser.add_argument("--dispatch-only", action="store_true",
                        help="operators and host synchronisations per step only (untimed: may share the machine)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="workers run side by side, one thread each (only with --accuracy-only or --dispatch-only)")
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)  # a worker's training seed
    args = parser.parse_args()
    if args.jobs < 1 or (args.jobs > 1 and not (args.accuracy_only or args.dispatch_only)):
        parser.error(f"--jobs must be 1, or more with --accuracy-only or --dispatch-only (parallel workers would "
                     f"spoil the timing); got {args.jobs}")
    if args.accuracy_only + args.dispatch_only + args.time_only > 1:
        parser.error("--accuracy-only, --dispatch-only and --time-only exclude each other: give one")
    if min(args.seeds) < 0 or len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must be distinct ints >= 0, got {args.seeds}")
    options = {}
    for item in args.options:
        key, sep, value = item.partition("=")
        if not sep or not value:
            parser.error(f"--options takes KEY=VALUE items (e.g. iters=1 jvp_mode=forward), got {item!r}")
        options[key] = int(value) if value.lstrip("-").isdigit() else value
    if args.device != "cpu" and not (args.device.startswith("cuda") and torch.cuda.is_available()):
        parser.error(f"--device must be cpu, or cuda[:N] on a machine with a CUDA GPU; got {args.device!r}")
    stem = "jacobian_dispatch" if args.dispatch_only else RESULTS.stem   # counts never overwrite the timed table
    args.out = args.out or RESULTS.with_name(stem + ("_cuda" if args.device != "cpu" else "") + ".json")
    def steps(case: str) -> int:
        if args.steps is not None:
            return args.steps
        return RECOMMENDED["every"] if args.quick else TIMED_STEPS[case]
    if args.worker:
        kind, case, method = args.worker
        result = (accuracy_worker(case, method, steps(case), args.device, options, args.seed, kind == "accuracy")
                  if kind in ("accuracy", "time")
                  else dispatch_worker(case, method, args.device, options) if kind == "dispatch"
                  else memory_worker(case, method, args.device, options))
        print(json.dumps(result))
        return
    rows = run_rows(args, steps)
    if args.update and args.out.exists():
        kept = [r for r in json.loads(args.out.read_text())["rows"]
                if r["case"] not in args.cases or r["method"] not in args.methods]
        rows = sorted(kept + rows, key=lambda r: (list(CASES).index(r["case"]), list(METHODS).index(r["method"])))
    print_table(rows)
    print_error_parts(rows)
    print_dispatch_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name(args.device) if args.device != "cpu" else "cpu"
    write_json({"torch": torch.__version__, "threads": THREADS, "device": device, "recommended": RECOMMENDED,
                "whole_batch": WHOLE_BATCH,
                "options": options, "train_steps": TRAIN_STEPS, "rows": rows}, args.out)
    print(f"wrote {args.out}")


def run_rows(args, steps) -> list[dict]:
    """A row per (case, method) of ``args``: the accuracy workers of every seed (the first seed's timed, unless
    ``args.accuracy_only``) and the memory worker, one process at a time; with ``args.accuracy_only``,
    ``args.jobs`` accuracy workers at a time, one thread each."""
    pairs = []
    for case in args.cases:
        for method in args.methods:
            if available(method):
                pairs.append((case, method))
            else:
                print(f"{case:18s} {method:12s} skipped (not installed)")
    threads = 1 if args.jobs > 1 else None

    def accuracy(case, method, seed):
        timed = 0 if args.accuracy_only or seed != args.seeds[0] else steps(case)
        return run_worker("accuracy", case, method, timed, args.device, args.options, seed, threads)

    def report(row):
        timing = (f"{row['step_ms']:9.1f} ms  {row['peak_mb']:8.1f} MB" if "peak_mb" in row
                  else f"{row['step_ms']:9.1f} ms" if "step_ms" in row else "(accuracy only)")
        print(f"{row['case']:18s} {row['method']:12s} {timing}", flush=True)
        return row

    def dispatch(case, method):
        return {"case": case, "method": method,
                **run_worker("dispatch", case, method, 0, args.device, args.options, 0, threads)}

    if args.dispatch_only:
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(dispatch, case, method) for case, method in pairs]
            return [f.result() for f in futures]
    if args.time_only:
        return [report(run_worker("time", case, method, steps(case), args.device, args.options, args.seeds[0]))
                for case, method in pairs]
    if args.accuracy_only:
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = [[pool.submit(accuracy, case, method, seed) for seed in args.seeds] for case, method in pairs]
            return [report(over_seeds([f.result() for f in seeds])) for seeds in futures]
    return [report({**over_seeds([accuracy(case, method, seed) for seed in args.seeds]),
                    **run_worker("memory", case, method, steps(case), args.device, args.options),
                    **dispatch(case, method)})
            for case, method in pairs]


def print_table(rows):
    """Markdown table of ratios to the plain step of the same case ("-" where not measured) and errors (with
    several seeds: mean over seeds (worst seed))."""
    print("\n| case | method | step (ms) | time / plain, same process (separate) | memory / plain (first epoch) | whole RSS / plain | "
          "batch-max error ‖JA‖ / ‖J‖, early | trained |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- | --- |")
    plain = {r["case"]: r for r in rows if r["method"] == "plain"}

    def ratio(r, key, over=None):
        p = plain.get(r["case"], {})
        value, base = r.get(key), r.get(over) if over else p.get(key)
        return f"{value / base:.2f}x" if value is not None and base else "-"

    def error(r, phase):
        if phase not in r:
            return ""
        mean = " / ".join(f"{100 * r[phase][k]:.1f}%" for k in ("sja", "sj"))
        worst = r.get(phase + "_worst")
        return mean + (" (" + " / ".join(f"{100 * worst[k]:.1f}%" for k in ("sja", "sj")) + ")" if worst else "")

    for r in rows:
        step = f"{r['step_ms']:.1f}" if "step_ms" in r else "-"
        same = ratio(r, "step_ms", "plain_ms_interleaved" if "plain_ms_interleaved" in r else None)
        print(f"| {r['case']} | {r['method']} | {step} | {same} "
              f"({ratio(r, 'step_ms')}) | {ratio(r, 'peak_mb')} ({ratio(r, 'peak_mb_first_epoch')}) | "
              f"{ratio(r, 'peak_rss_mb')} | {error(r, 'early_error')} | {error(r, 'trained_error')} |")


def print_dispatch_table(rows):
    """Markdown table of operators dispatched and host synchronisations per step, plain -> the method, warm
    (first epoch in brackets): on a GPU each operator is a kernel launch or more and each synchronisation a
    wait for the device, the cost of small nets."""
    rows = [r for r in rows if "ops_per_step" in r]
    if not rows:
        return
    print("\n| case | method | operators per step: plain -> method (first epoch) | ratio | kernels (not views) per "
          "step: plain -> method (first epoch) | ratio | host synchronisations per step: plain -> method (first epoch) "
          "| which |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        which = ", ".join(f"{k} {v:g}" for k, v in sorted(r["sync_ops"].items()))
        kernels = (f"{r['plain_kernels_per_step']:.0f} -> {r['kernels_per_step']:.0f} "
                   f"({r['plain_kernels_per_step_first_epoch']:.0f} -> {r['kernels_per_step_first_epoch']:.0f}) | "
                   f"{r['kernels_per_step'] / r['plain_kernels_per_step']:.2f}x" if "kernels_per_step" in r else "- | -")
        print(f"| {r['case']} | {r['method']} | {r['plain_ops_per_step']:.0f} -> {r['ops_per_step']:.0f} "
              f"({r['plain_ops_per_step_first_epoch']:.0f} -> {r['ops_per_step_first_epoch']:.0f}) | "
              f"{r['ops_per_step'] / r['plain_ops_per_step']:.2f}x | {kernels} | {r['plain_syncs_per_step']:g} -> "
              f"{r['syncs_per_step']:g} ({r['plain_syncs_per_step_first_epoch']:g} -> "
              f"{r['syncs_per_step_first_epoch']:g}) | {which or '-'} |")


def print_error_parts(rows):
    """Markdown table of where the errors come from (``error_parts``; with several seeds, means over seeds)."""
    rows = [r for r in rows if "early_parts" in r or "trained_parts" in r]
    if not rows:
        return
    print("\n| case | method | phase | ‖JA‖ ranking / convergence | ‖J‖ ranking / convergence |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        for phase in ("early", "trained"):
            if phase + "_parts" in r:
                parts = r[phase + "_parts"]
                cells = [f"{100 * parts['ranking'][k]:.1f}% / {100 * parts['convergence'][k]:.1f}%" for k in ("sja", "sj")]
                print(f"| {r['case']} | {r['method']} | {phase} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
