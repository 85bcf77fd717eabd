"""Regenerate the seed study's compressed-sensing tables and figures with jacinv (docs/results.md).

    python benchmarks/reproduce.py --study central --jobs 2        # q=160, m=500, eps=0.3, every regulariser
    python benchmarks/reproduce.py --study q m eps --jobs 2        # the three sweeps
    python benchmarks/reproduce.py --quick                         # a few minutes: tiny grid, embedded data

Protocol (every choice is printed next to the results):
- Weights: Algorithm 4 of the seed ("auto": lambda = 10^floor(log10(loss / penalty)) / kappa, recomputed
  every step), with kappa chosen from KAPPAS by the lowest validation l2 loss of a seed-0 run; every
  regulariser gets the same three-run budget (pairs such as sja+sj share one kappa).
- Studies with ``tune_each_value`` choose kappa at every swept value; the others reuse the kappa chosen
  at the central point (q = 160, m = 500, eps = 0.3, 600 epochs).
- Reported: mean +- std over the seeds of test PSNR, SSIM, GE = |test - train| of the mean l2 loss,
  the largest ||J(y) A|| on 16 test measurements, and the bound of ``jacinv.bounds.bound_report``.

Each finished run leaves one JSON file in the results cache (benchmarks/results/reproduce/), keyed by a
hash of its resolved configuration, so a study spans sessions, the central runs are shared by the
sweeps, and a re-run only fills what is missing.  ``--jobs`` trains that many runs side by side (one
CPU thread each).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from jacinv.checkpoint import CHECKPOINT, load_checkpoint, write_json
from jacinv.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(__file__).parent / "results" / "reproduce"
REGULARIZERS = ("none", "wd", "sw", "sj", "fj", "fja+fj", "sja", "sja+sj", "datagrad", "spectreg")
SWEEP_REGULARIZERS = ("none", "sj", "fja+fj", "sja+sj")
KAPPAS = (20.0, 2.0, 0.2)
METRICS = ("test_psnr", "test_ssim", "ge", "probe_max_sja", "bound")
# Keyed: they define the run.  Unkeyed: they change only how fast it runs.
BASE = ["data.source=mnist", "data.fallback=error", "data.n_val=100", "train.eval_every=10"]
UNKEYED = ["train.checkpoint_every=100", "train.probe_size=16"]


@dataclass(frozen=True)
class Study:
    key: str                       # the config key swept
    values: tuple
    regularizers: tuple
    epochs: int
    tune_each_value: bool          # choose kappa at every value (else: the central point's choice)


STUDIES = {
    "central": Study("noise.radius", (0.3,), REGULARIZERS, 600, True),
    "q": Study("operator.kwargs.n_measurements", (80, 160, 320, 640), SWEEP_REGULARIZERS, 600, True),
    "m": Study("data.n_train", (200, 400, 600, 800), SWEEP_REGULARIZERS, 200, False),
    "eps": Study("noise.radius", (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6), SWEEP_REGULARIZERS, 200, False),
}
QUICK = {"regularizers": ("none", "sja+sj"), "kappas": (20.0, 2.0), "epochs": 20,
         "base": ["data.source=embedded", "data.n_val=50", "data.n_test=100", "train.eval_every=5"]}


def resolve(overrides: list[str]) -> dict:
    return load_config(ROOT / "configs" / "cs.yaml", overrides)


def run_key(overrides: list[str]) -> str:
    """Hash of the resolved configuration: two override lists meaning the same run share one key."""
    text = json.dumps(resolve(overrides), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_one(overrides: list[str], workdir: Path, cache: Path, threads: int) -> dict:
    """Train the run given by ``overrides`` over configs/cs.yaml (or fetch it from the cache); the result
    holds the last evaluation and the generalisation bound of the trained net."""
    from jacinv.bounds import bound_report
    from jacinv.experiment import build_experiment
    from jacinv.training import train

    key = run_key(overrides)
    cached = cache / f"{key}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    config = resolve([*overrides, *UNKEYED, f"train.threads={threads}"])
    t0 = time.perf_counter()
    history = train(config, workdir / key, progress=False)
    last = next(r for r in reversed(history) if "test_psnr" in r)
    exp = build_experiment(config)
    exp.model.load_state_dict(load_checkpoint(workdir / key / CHECKPOINT)["model"])
    exp.model.eval()
    bound = bound_report(exp.model, exp, delta=0.05, measured_gap=last["ge"])
    result = {"overrides": overrides, "data": exp.data_note, "seconds": time.perf_counter() - t0,
              **{k: v for k, v in last.items() if k.startswith(("test_", "train_", "val_", "probe_", "lambda_"))},
              "ge": last["ge"], "bound": bound["total"], "bound_terms": bound["terms"], "bound_gamma": bound["gamma"]}
    cache.mkdir(parents=True, exist_ok=True)
    write_json(result, cached)
    return result


def run_many(jobs: list[list[str]], workers: int, workdir: Path, cache: Path) -> dict[str, dict]:
    """{key: result} for every override list in ``jobs``, training the missing ones ``workers`` at a time."""
    keys = {run_key(o): o for o in jobs}
    results = {k: json.loads((cache / f"{k}.json").read_text()) for k in keys if (cache / f"{k}.json").exists()}
    todo = [k for k in keys if k not in results]
    if not todo:
        return results
    threads = max(1, (os.cpu_count() or 1) // workers)
    print(f"{len(results)} runs cached, {len(todo)} to train ({workers} at a time, {threads} thread(s) each)",
          flush=True)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_one, keys[k], workdir, cache, threads): k for k in todo}
        for done, future in enumerate(as_completed(futures), 1):
            r = results[futures[future]] = future.result()
            print(f"[{done}/{len(todo)} {time.perf_counter() - t0:6.0f} s] {' '.join(r['overrides'][len(BASE):])}: "
                  f"val l2 {r.get('val_loss', float('nan')):.4f} test PSNR {r['test_psnr']:.2f} GE {r['ge']:.4f}",
                  flush=True)
    return results


def overrides_for(study: Study, value, reg: str, seed: int, kappa: float | None, epochs: int, base) -> list[str]:
    out = [*base, f"{study.key}={value}", f"regularizer.name={reg}", f"seed={seed}", f"train.epochs={epochs}"]
    return out if kappa is None else [*out, f"regularizer.kappa={kappa}"]


def plan_tuning(studies: dict[str, Study], kappas, epochs_of, base) -> dict[tuple, list[list[str]]]:
    """{(study, value, reg): candidate override lists (one per kappa, seed 0)} for every tuned regulariser."""
    central = STUDIES["central"]
    plans = {}
    for name, study in studies.items():
        for value in study.values:
            for reg in study.regularizers:
                if reg == "none":
                    continue
                at, v = (study, value) if study.tune_each_value else (central, central.values[0])
                plans[(name, value, reg)] = [overrides_for(at, v, reg, 0, k, epochs_of(at), base) for k in kappas]
    return plans


def choose(candidates: list[list[str]], results: dict[str, dict]) -> tuple[float, list[dict]]:
    """The kappa whose run has the lowest validation l2 loss, and every candidate's result."""
    runs = [results[run_key(c)] for c in candidates]
    best = min(zip(candidates, runs), key=lambda cr: cr[1]["val_loss"])[0]
    kappa = float(next(o.split("=", 1)[1] for o in best if o.startswith("regularizer.kappa=")))
    return kappa, runs


def summarise(name: str, study: Study, regs, seeds, chosen: dict, results: dict, epochs_of, base) -> list[dict]:
    rows = []
    for value in study.values:
        for reg in regs:
            kappa = chosen.get((name, value, reg))
            runs = [results[run_key(overrides_for(study, value, reg, s, kappa, epochs_of(study), base))]
                    for s in seeds]
            row = {name: value, "regularizer": reg, "kappa": kappa, "seeds": len(runs),
                   "data": runs[0]["data"], "epochs": epochs_of(study)}
            for metric in METRICS:
                vals = np.array([r[metric] for r in runs], dtype=float)
                row[metric], row[metric + "_std"] = float(vals.mean()), float(vals.std())
            rows.append(row)
    return rows


def markdown(rows: list[dict], study: str) -> str:
    lines = [f"| {study} | regulariser | kappa | test PSNR (dB) | test SSIM | GE | max ‖J A‖ (probe) | bound |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        kappa = "" if r["kappa"] is None else f"{r['kappa']:g}"
        lines.append(f"| {r[study]} | {r['regularizer']} | {kappa} | {r['test_psnr']:.2f} ± {r['test_psnr_std']:.2f} | "
                     f"{r['test_ssim']:.3f} ± {r['test_ssim_std']:.3f} | {r['ge']:.3f} ± {r['ge_std']:.3f} | "
                     f"{r['probe_max_sja']:.2f} ± {r['probe_max_sja_std']:.2f} | {r['bound']:.1f} |")
    return "\n".join(lines)


def tuning_markdown(kappas, plans: dict, results: dict) -> str:
    lines = ["| point | regulariser | " + " | ".join(f"val l2, kappa={k:g}" for k in kappas) + " | chosen |",
             "| --- | --- |" + " ---: |" * len(kappas) + " ---: |"]
    for (name, value, reg), candidates in plans.items():
        kappa, runs = choose(candidates, results)
        lines.append(f"| {name}={value} | {reg} | " + " | ".join(f"{r['val_loss']:.4f}" for r in runs)
                     + f" | {kappa:g} |")
    return "\n".join(lines)


def plot(rows: list[dict], study: str, path: Path) -> None:
    from jacinv.plots import plt, save_figure

    metrics = (("test_ssim", "test SSIM"), ("test_psnr", "test PSNR (dB)"), ("ge", "GE"),
               ("probe_max_sja", "max ||J A|| (probe)"))
    fig, axes = plt.subplots(1, len(metrics), figsize=(16, 3.4))
    for reg in dict.fromkeys(r["regularizer"] for r in rows):
        sub = [r for r in rows if r["regularizer"] == reg]
        xs = [r[study] for r in sub]
        for ax, (metric, title) in zip(axes, metrics):
            ax.errorbar(xs, [r[metric] for r in sub], yerr=[r[metric + "_std"] for r in sub], label=reg,
                        marker="o", ms=3, capsize=2)
            ax.set_title(title)
            ax.set_xlabel(study)
    axes[0].legend(fontsize=7)
    save_figure(fig, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", nargs="+", choices=list(STUDIES), default=["central"])
    parser.add_argument("--seeds", type=int, nargs="+", help="default: 0 1 2 (0 with --quick)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained side by side")
    parser.add_argument("--quick", action="store_true",
                        help="two regularisers, two kappas, 20 epochs on embedded patches (a few minutes)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "reproduce")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument("--cache", type=Path, default=CACHE, help="one JSON per finished run")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    torch.set_num_threads(1)
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    base, kappas = (QUICK["base"], QUICK["kappas"]) if args.quick else (BASE, KAPPAS)
    studies = {name: STUDIES[name] for name in args.study}
    if args.quick:
        studies = {n: Study(s.key, s.values, QUICK["regularizers"], QUICK["epochs"], s.tune_each_value)
                   for n, s in studies.items()}
    epochs_of = (lambda s: QUICK["epochs"]) if args.quick else (lambda s: s.epochs)  # noqa: E731

    plans = plan_tuning(studies, kappas, epochs_of, base)
    results = run_many([c for cs in plans.values() for c in cs], args.jobs, args.workdir, args.cache)
    chosen = {point: choose(c, results)[0] for point, c in plans.items()}
    finals = [overrides_for(s, v, reg, seed, chosen.get((n, v, reg)), epochs_of(s), base)
              for n, s in studies.items() for v in s.values for reg in s.regularizers for seed in args.seeds]
    results.update(run_many(finals, args.jobs, args.workdir, args.cache))

    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    for name, study in studies.items():
        rows = summarise(name, study, study.regularizers, args.seeds, chosen, results, epochs_of, base)
        stem = args.out / f"cs_{name}{suffix}"
        write_json(rows, stem.with_suffix(".json"))
        stem.with_suffix(".md").write_text(markdown(rows, name) + "\n")
        if len(study.values) > 1:
            plot(rows, name, stem.with_suffix(".png"))
        print(f"wrote {stem}.*")
        if study.tune_each_value:
            own = {point: c for point, c in plans.items() if point[0] == name}
            (args.out / f"cs_{name}_tuning{suffix}.md").write_text(tuning_markdown(kappas, own, results) + "\n")


if __name__ == "__main__":
    main()
