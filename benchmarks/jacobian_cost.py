"""Cost and accuracy of the batch-max spectral penalty "sja+sj" against a plain training step.

    python benchmarks/jacobian_cost.py            # full table (about 10 minutes on 2 CPU cores)
    python benchmarks/jacobian_cost.py --quick    # fewer steps

For each case (network, operator) and method, a fresh worker process trains for one
epoch of warm-up, then times `--steps` training steps (forward + penalty + backward +
Adam) and records its peak resident memory above the set-up baseline; jacinv's method
then checks its reported batch maxima against reference values on further steps.
Methods:
  plain         fidelity loss only
  jacinv        build_regularizer("sja+sj") at its defaults (warm start keyed by index)
  jacinv-cold   the same without index (no warm start: cold_iters iterations on the whole batch)
  seed-n1/n3    the seed's Algorithm 2: n power iterations on the whole batch,
                differentiated through every iteration (written here as the reference)
  deepinv       deepinv.loss.JacobianSpectralNorm, 5 iterations (only when installed)
Reference norms: exact Jacobians (forward-mode products with the 160 basis vectors) for the FC
net; for the unrolled net exact Jacobians of the 4 samples ranked highest by 30 power iterations;
for DnCNN, Lanczos (scipy svds on the matrix-free J A, tol 1e-4) on the 4 samples ranked highest
by 30 power iterations, checked against an exact Jacobian on one sample.
Prints a table with ratios to the plain step and writes benchmarks/results/jacobian_cost.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from jacinv.models import build_model
from jacinv.operators import BlurDecimate, GaussianCS, Identity
from jacinv.regularizers import build_regularizer, jacobian_spectral_norm, l2_distance
from jacinv.regularizers.products import JacobianProducts

RESULTS = Path(__file__).parent / "results" / "jacobian_cost.json"
CASES = {
    # name: (model, operator factory, model kwargs, batch, training-set size)
    "fc-cs": ("fc", lambda: GaussianCS((1, 28, 28), 160, seed=0), {}, 100, 500),
    "dncnn5-identity": ("dncnn", lambda: Identity((1, 64, 64)), {"depth": 5}, 16, 64),
    "dncnn5-blur-x2": ("dncnn", lambda: BlurDecimate((1, 64, 64), factor=2), {"depth": 5}, 16, 64),
    "unrolled-cs": ("unrolled", lambda: GaussianCS((1, 28, 28), 160, seed=0),
                    {"iterations": 5, "depth": 5, "features": 32}, 50, 500),
}
# how the reference norms are computed (see reference_norms): the unrolled net's exact Jacobian costs
# 160 forward-mode passes of a 5 x 5-layer CNN per sample, so only the likely maxima get one
REFERENCE = {"fc": "exact", "unrolled": "exact-top", "dncnn": "lanczos"}
METHODS = ("plain", "jacinv", "jacinv-cold", "seed-n1", "seed-n3", "deepinv")
LAMBDA = 1e-3


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


def make_penalty(method: str, operator, options: dict):
    """A function (f, y, x, index) -> (penalty, {"sja": (B,), "sj": (B,)} or None)."""
    if method in ("jacinv", "jacinv-cold"):
        reg = build_regularizer("sja+sj", operator=operator, lambda_ja=LAMBDA, lambda_j=LAMBDA, **options)

        def penalty(f, y, x, index):
            value = reg(f, y, x, index=index if method == "jacinv" else None)
            return value, {k: reg.last_stats[k] for k in ("sja", "sj")}
        return penalty
    if method.startswith("seed-n"):
        n = int(method[len("seed-n"):])
        g = torch.Generator().manual_seed(0)

        def penalty(f, y, x, index):
            sja = seed_algorithm2(f, y, operator, n, g)
            sj = seed_algorithm2(f, y, None, n, g)
            return LAMBDA * (sja.max() + sj.max()), {"sja": sja.detach(), "sj": sj.detach()}
        return penalty
    if method == "deepinv":
        from deepinv.loss.regularisers import JacobianSpectralNorm  # noqa: WPS433 (optional)

        spec = JacobianSpectralNorm(max_iter=5, tol=1e-3, eval_mode=False, verbose=False)

        def penalty(f, y, x, index):
            y_ = y.detach().requires_grad_(True)
            out = f(y_)
            value = spec(out, y_)
            return LAMBDA * value, None
        return penalty
    return lambda f, y, x, index: (None, None)


def reference_norms(f, y, operator, how: str) -> dict[str, torch.Tensor]:
    """Per-sample ||J A|| and ||J||.  "exact": exact Jacobians of every sample (the FC net);
    "exact-top" / "lanczos": 30 cold power iterations rank the samples, and the 4 largest are
    settled by exact Jacobians or by Lanczos (ARPACK svds on the matrix-free J A, 1e-4 relative)."""
    if how == "exact":
        jac = torch.stack([exact_jacobian(f, yi) for yi in y])
        dense = operator.to_dense(dtype=jac.dtype)
        return {"sja": torch.linalg.matrix_norm(jac @ dense, ord=2), "sj": torch.linalg.matrix_norm(jac, ord=2)}
    out = {}
    for key, op in (("sja", operator), ("sj", None)):
        if key == "sj" and isinstance(operator, Identity):
            out[key] = out["sja"]
            continue
        rough = jacobian_spectral_norm(f, y, op, iters=30, generator=torch.Generator().manual_seed(1)).detach()
        for i in rough.topk(min(4, y.shape[0])).indices.tolist():
            rough[i] = lanczos_norm(f, y[i: i + 1], op) if how == "lanczos" else exact_norm(f, y[i], op)
        out[key] = rough
    return out


def exact_norm(f, y: torch.Tensor, operator) -> float:
    """||J(y) A||_2 of one measurement from its exact Jacobian."""
    jac = exact_jacobian(f, y)
    return float(torch.linalg.matrix_norm(jac @ operator.to_dense(dtype=jac.dtype) if operator is not None else jac,
                                          ord=2))


def exact_jacobian(f, y: torch.Tensor) -> torch.Tensor:
    """J(y) of one measurement y (*y_shape), (out_numel, y_numel): forward-mode products with every
    basis vector, as one batch."""
    n = y.numel()
    basis = torch.eye(n, dtype=y.dtype).reshape(n, *y.shape)
    with torch.no_grad():
        rows = JacobianProducts(f, y.expand(n, *y.shape).contiguous(), mode="forward").jvp(basis)
    return rows.reshape(n, -1).T


def lanczos_norm(f, y, operator) -> float:
    """Largest singular value of J(y) A for one sample by scipy's svds (ARPACK, tol 1e-4)."""
    import numpy as np
    import scipy.sparse.linalg as sla

    products = JacobianProducts(f, y, mode="forward")
    in_shape = operator.in_shape if operator is not None else tuple(y.shape[1:])
    out_numel = products.out[0].numel()

    def matvec(v):
        t = torch.as_tensor(np.asarray(v, dtype=np.float32).reshape(1, *in_shape))
        t = operator(t) if operator is not None else t
        return products.jvp(t).detach().reshape(-1).double().numpy()

    def rmatvec(u):
        g = products.vjp(torch.as_tensor(np.asarray(u, dtype=np.float32)).reshape(products.out.shape)).detach()
        g = operator.adjoint(g) if operator is not None else g
        return g.reshape(-1).double().numpy()

    lin = sla.LinearOperator((out_numel, int(np.prod(in_shape))), matvec=matvec, rmatvec=rmatvec, dtype=np.float64)
    return float(sla.svds(lin, k=1, tol=1e-4, return_singular_vectors=False, random_state=0)[0])


def check_reference_on_one_sample(f, y, operator) -> float:
    """Relative gap between the Lanczos reference and the exact ||J A|| of one sample."""
    jac = torch.func.jacrev(lambda t: f(t[None]).flatten(), chunk_size=512)(y[0]).reshape(-1, y[0].numel())
    exact = float(torch.linalg.matrix_norm(jac @ operator.to_dense(dtype=jac.dtype), ord=2))
    return abs(exact - lanczos_norm(f, y[:1], operator)) / exact


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(case: str, method: str, steps: int, accuracy_steps: int, options: dict) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ.get("JACINV_THREADS", "2")))
    model_name, make_op, kwargs, batch, n_train = CASES[case]
    operator = make_op()
    f = build_model(model_name, operator, **kwargs)
    x_all = smooth_images(n_train, operator.in_shape, seed=1)
    with torch.no_grad():
        y_all = operator(x_all)
    opt = torch.optim.Adam(f.parameters(), lr=1e-4)
    penalty = make_penalty(method, operator, options)
    perm = torch.Generator().manual_seed(2)
    steps_per_epoch = n_train // batch

    def batches():
        while True:
            order = torch.randperm(n_train, generator=perm)
            for s in range(steps_per_epoch):
                yield order[s * batch:(s + 1) * batch]

    def step(index, reference=None):
        y, x = y_all[index], x_all[index]
        t0 = time.perf_counter()
        loss = l2_distance(f(y), x).mean()
        value, stats = penalty(f, y, x, index)
        total = loss + value if value is not None else loss
        opt.zero_grad(set_to_none=True)
        total.backward()
        t1 = time.perf_counter()
        result = reference(f, y, stats) if reference is not None else None
        t2 = time.perf_counter()
        opt.step()
        return (t1 - t0) + (time.perf_counter() - t2), result

    stream = batches()
    baseline = rss_mb()
    for _ in range(steps_per_epoch):  # one epoch of warm-up
        step(next(stream))
    times = [step(next(stream))[0] for _ in range(steps)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"case": case, "method": method, "step_ms": 1000 * sorted(times)[len(times) // 2],
           "step_ms_all": [1000 * t for t in times], "peak_mb_above_setup": peak - baseline}
    how = REFERENCE[model_name]
    # the seed's algorithm is checked against exact Jacobians only (Lanczos
    # references for DnCNN take minutes per step)
    if method.startswith("jacinv") or (method.startswith("seed") and how != "lanczos"):

        def compare(f, y, stats):
            ref = reference_norms(f, y, operator, how)
            return {k: (float(stats[k].max()), float(ref[k].max())) for k in ("sja", "sj")}
        pairs = [step(next(stream), compare)[1] for _ in range(accuracy_steps)]
        out["batch_max"] = pairs
        out["max_rel_error"] = {k: max(abs(p[k][0] - p[k][1]) / p[k][1] for p in pairs) for k in ("sja", "sj")}
        out["reference"] = {"exact": "exact Jacobians", "exact-top": "exact Jacobians of the 4 likely maxima",
                            "lanczos": "Lanczos (svds, tol 1e-4)"}[how]
        if how == "lanczos" and method == "jacinv":
            out["reference_check_rel_gap"] = check_reference_on_one_sample(f, y_all[:1], operator)
    return out


def available(method: str) -> bool:
    if method != "deepinv":
        return True
    try:
        import deepinv  # noqa: F401
    except ImportError:
        return False
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer timed steps")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--options", type=json.loads, default={},
                        help='JSON options for jacinv\'s regulariser, e.g. \'{"candidates": 8}\'')
    args = parser.parse_args()
    steps = args.steps or (4 if args.quick else 10)
    accuracy_steps = 2 if args.quick else 3
    if args.worker:
        print(json.dumps(worker(*args.worker, steps, accuracy_steps, args.options)))
        return
    rows = []
    for case in args.cases:
        for method in args.methods:
            if not available(method):
                print(f"{case:18s} {method:12s} skipped (not installed)")
                continue
            cmd = [sys.executable, __file__, "--worker", case, method, "--steps", str(steps),
                   "--options", json.dumps(args.options)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode:
                print(proc.stderr, file=sys.stderr)
                raise SystemExit(f"worker {case} {method} failed")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{case:18s} {method:12s} {row['step_ms']:9.1f} ms  {row['peak_mb_above_setup']:8.1f} MB", flush=True)
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"torch": torch.__version__, "threads": 2, "options": args.options, "rows": rows},
                              indent=1))
    tmp.replace(args.out)
    print(f"wrote {args.out}")


def print_table(rows):
    print("\n| case | method | step (ms) | time / plain | memory / plain | batch-max error sja / sj |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    plain = {r["case"]: r for r in rows if r["method"] == "plain"}
    for r in rows:
        p = plain.get(r["case"])
        t = r["step_ms"] / p["step_ms"] if p else float("nan")
        m = r["peak_mb_above_setup"] / p["peak_mb_above_setup"] if p else float("nan")
        err = r.get("max_rel_error")
        err_s = f"{100 * err['sja']:.1f}% / {100 * err['sj']:.1f}%" if err else ""
        print(f"| {r['case']} | {r['method']} | {r['step_ms']:.1f} | {t:.2f}x | {m:.2f}x | {err_s} |")


if __name__ == "__main__":
    main()
