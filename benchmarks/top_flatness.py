"""How flat the top of the per-sample norms ||J(y_i) A|| and ||J(y_i)|| is after training, and what picking
the batch maximum by chance would cost.

    python benchmarks/top_flatness.py                       # FC and the unrolled net, plain and penalised
    python benchmarks/top_flatness.py --cases fc-cs --seeds 0 1 2
    python benchmarks/top_flatness.py --norms benchmarks/results/top_flatness.json --picks 5 20   # no training

For each case of benchmarks/jacobian_cost.py and each method (plain, jacinv-lazy: the recommended setting), the
net is trained as the cost benchmark trains it (TRAIN_STEPS steps, the same seeds), and every training sample's
norms are computed: exactly for the FC net, by 30 Krylov-refined power iterations (krylov = 8; finite differences
on conv nets, within about 2e-4 of the norms) otherwise.
Printed per target: the samples within 1 / 3 / 5% of the training set's maximum, and, over 1000 random batches
of the case's size, the mean gap between a batch's maximum and its 5th largest norm, and the mean error of the
largest of k samples drawn at random from the batch, for each k of ``--picks``: the error of a batch-max
estimate whose ranking carries no information and whose values are exact; in brackets the mean of the largest
of CHECKS (4) such errors, the statistic jacobian_cost.py reports.
Writes benchmarks/results/top_flatness.json, with every sample's norms.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from jacinv.checkpoint import write_json
from jacinv.regularizers import jacobian_spectral_norm
from jacobian_cost import CASES, CHECKS, TRAIN_STEPS, Trainer, reference_norms

RESULTS = Path(__file__).parent / "results" / "top_flatness.json"
BATCHES = 1000
NORMS_BY = {True: "exact Jacobians", False: "30 Krylov-refined power iterations (krylov 8)"}


def training_set_norms(t: Trainer) -> dict[str, torch.Tensor]:
    """(N,) ||J A|| and ||J|| of every training sample at the trainer's current weights."""
    if t.reference == "exact":
        return {k: v.detach() for k, v in reference_norms(t.f, t.y, t.operator, "exact").items()}
    out = {}
    for key, op in (("sja", t.operator), ("sj", None)):
        parts = [jacobian_spectral_norm(t.f, t.y[s: s + t.batch], op, iters=30, krylov=8, jvp_mode="fastest",
                                        generator=torch.Generator().manual_seed(1)).detach()
                 for s in range(0, t.n_train, t.batch)]
        out[key] = torch.cat(parts)
    return out


def flatness(norms: torch.Tensor, batch: int, picks: list[int], seed: int = 0) -> dict:
    """Top-flatness figures of (N,) norms (see the module docstring); fractions, not percent."""
    if max(picks) > batch:
        raise ValueError(f"picks must be at most the batch size {batch}, got {picks}")
    top = norms.max()
    g = torch.Generator().manual_seed(seed)
    gaps, chance = [], {k: [] for k in picks}
    for _ in range(BATCHES):
        b = norms[torch.randperm(norms.numel(), generator=g)[:batch]]
        ordered = b.sort(descending=True).values
        gaps.append(float(1 - ordered[min(4, batch - 1)] / ordered[0]))
        for k in picks:
            chance[k].append(float(1 - b[torch.randperm(batch, generator=g)[:k]].max() / ordered[0]))
    chance = {k: torch.tensor(c) for k, c in chance.items()}
    return {"max": float(top), "within": {f"{p}%": int((norms >= top * (1 - p / 100)).sum()) for p in (1, 3, 5)},
            "gap_to_5th": sum(gaps) / len(gaps),
            "chance_error": {str(k): float(c.mean()) for k, c in chance.items()},
            f"chance_error_largest_of_{CHECKS}": {str(k): float(c.view(-1, CHECKS).max(1).values.mean())
                                                  for k, c in chance.items()}}


def stored_runs(path: Path) -> list[tuple[dict, dict]]:
    """(row metadata, {target: (N,) norms}) per (case, method, seed) of a previous --out file."""
    runs: dict[tuple, tuple[dict, dict]] = {}  # one trained net per (case, method, seed), its targets' rows
    for r in json.loads(path.read_text())["rows"]:
        meta = {k: r[k] for k in ("case", "method", "seed", "n_train", "batch", "norms_by")}
        runs.setdefault((r["case"], r["method"], r["seed"]), (meta, {}))[1][r["target"]] = torch.tensor(r["norms"])
    return list(runs.values())


def trained_norms(args, stored: list | None = None):
    """(row metadata, {target: (N,) norms}) per case, method and seed: ``stored`` (from ``stored_runs``) when
    given, else trained here."""
    if stored is not None:
        yield from stored
        return
    for case in args.cases:
        for method in args.methods:
            for seed in args.seeds:
                t = Trainer(case, method, seed=seed)
                while t.steps < TRAIN_STEPS[case]:
                    t.step()
                yield ({"case": case, "method": method, "seed": seed, "n_train": t.n_train, "batch": t.batch,
                        "norms_by": NORMS_BY[t.reference == "exact"]}, training_set_norms(t))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", default=["fc-cs", "unrolled-cs"], choices=list(CASES))
    parser.add_argument("--methods", nargs="*", default=["plain", "jacinv-lazy"], choices=["plain", "jacinv-lazy"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--picks", nargs="+", type=int, default=[5, 13],
                        help="samples drawn at random per batch (default 5 13: the rows refreshed by candidates 4 + "
                             "refresh 1, and by candidates 4 + refresh 8)")
    parser.add_argument("--norms", type=Path, help="recompute the figures from the norms of a previous --out instead "
                                                   "of training (--cases, --methods and --seeds are then ignored)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    stored = None
    if args.norms:
        try:
            stored = stored_runs(args.norms)
        except (OSError, ValueError, KeyError, TypeError) as err:
            parser.error(f"--norms must be a file written by this script, got {str(args.norms)!r} ({err!r})")
    batches = [meta["batch"] for meta, _ in stored] if stored is not None else [CASES[c][3] for c in args.cases]
    smallest_batch = min(batches, default=1)
    if min(args.picks) < 1 or max(args.picks) > smallest_batch:
        parser.error(f"--picks must be ints from 1 to the batch size ({smallest_batch}), got {args.picks}")
    rows = []
    picks = " / ".join(map(str, args.picks))
    print(f"| case | method | seed | target | max | within 1 / 3 / 5% | batch: max to 5th | best of {picks} at random: "
          f"error, one check (largest of {CHECKS}) |")
    print("| --- | --- | ---: | --- | ---: | --- | ---: | --- |")
    for meta, norms_by_target in trained_norms(args, stored):
        for key, norms in norms_by_target.items():
            row = {**meta, "target": key, **flatness(norms, meta["batch"], args.picks, meta["seed"]),
                   "norms": norms.tolist()}
            rows.append(row)
            w, largest = row["within"], row[f"chance_error_largest_of_{CHECKS}"]
            chance = " / ".join(f"{100 * row['chance_error'][str(k)]:.1f}% ({100 * largest[str(k)]:.1f}%)"
                                for k in args.picks)
            print(f"| {meta['case']} | {meta['method']} | {meta['seed']} | {key} | {row['max']:.3f} | {w['1%']} / "
                  f"{w['3%']} / {w['5%']} of {meta['n_train']} | {100 * row['gap_to_5th']:.1f}% | {chance} |", flush=True)
    write_json({"torch": torch.__version__, "train_steps": TRAIN_STEPS, "rows": rows}, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
