"""Regenerate the seed study's compressed-sensing tables and figures with jacinv (docs/results.md).

    python benchmarks/reproduce.py --study central            # q=160, m=500, eps=0.3, every regulariser
    python benchmarks/reproduce.py --study q --seeds 0 1 2    # the q sweep
    python benchmarks/reproduce.py --quick                    # a few minutes: tiny grid, few epochs

Each finished run leaves one JSON file in the results cache (benchmarks/results/reproduce/),
keyed by a hash of its full configuration, so a study spans sessions and a re-run only fills what
is missing.  Weights: every regulariser uses the seed's Algorithm 4 ("auto", kappa = 20), so every
method gets the same (zero) tuning budget; this replaces the seed's grid search and is stated next
to the results.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from jacinv.checkpoint import write_json
from jacinv.config import load_config
from jacinv.training import train

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(__file__).parent / "results" / "reproduce"
REGULARIZERS = ("none", "wd", "sw", "sj", "fj", "fja+fj", "sja", "sja+sj", "datagrad", "spectreg")
STUDIES = {
    "central": ("data.n_train", [500]),
    "q": ("operator.kwargs.n_measurements", [80, 160, 320, 640]),
    "m": ("data.n_train", [200, 400, 600, 800]),
    "eps": ("noise.radius", [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
}


def run_key(overrides: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(overrides)).encode()).hexdigest()[:16]


def run_one(overrides: list[str], workdir: Path, cache: Path = CACHE) -> dict:
    """Train (or fetch from the cache) the run given by ``overrides`` over configs/cs.yaml."""
    key = run_key(overrides)
    cached = cache / f"{key}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    config = load_config(ROOT / "configs" / "cs.yaml", overrides)
    t0 = time.perf_counter()
    history = train(config, workdir / key, progress=False)
    last = next(r for r in reversed(history) if "test_psnr" in r)
    result = {"overrides": overrides, "seconds": time.perf_counter() - t0,
              **{k: last[k] for k in ("test_psnr", "test_ssim", "train_loss", "test_loss", "ge",
                                      "probe_max_sja", "probe_max_sj")}}
    cache.mkdir(parents=True, exist_ok=True)
    write_json(result, cached)
    return result


def study_table(study: str, regs, seeds, epochs: int, extra: list[str], workdir: Path,
                cache: Path = CACHE) -> list[dict]:
    key, values = STUDIES[study]
    rows = []
    for value in values:
        for reg in regs:
            runs = [run_one([f"{key}={value}", f"regularizer.name={reg}", f"seed={s}", f"train.epochs={epochs}",
                             *extra], workdir, cache) for s in seeds]
            row = {study: value, "regularizer": reg, "seeds": len(runs)}
            for metric in ("test_psnr", "test_ssim", "ge", "probe_max_sja"):
                vals = np.array([r[metric] for r in runs])
                row[metric], row[metric + "_std"] = float(vals.mean()), float(vals.std())
            rows.append(row)
            print(f"{study}={value} {reg:9s} PSNR {row['test_psnr']:.2f} SSIM {row['test_ssim']:.3f} "
                  f"GE {row['ge']:.4f} max||JA|| {row['probe_max_sja']:.3f}", flush=True)
    return rows


def markdown(rows: list[dict], study: str) -> str:
    lines = [f"| {study} | regulariser | test PSNR (dB) | test SSIM | GE | max ‖J A‖ (probe) |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r[study]} | {r['regularizer']} | {r['test_psnr']:.2f} ± {r['test_psnr_std']:.2f} | "
                     f"{r['test_ssim']:.3f} ± {r['test_ssim_std']:.3f} | {r['ge']:.4f} ± {r['ge_std']:.4f} | "
                     f"{r['probe_max_sja']:.3f} |")
    return "\n".join(lines)


def plot(rows: list[dict], study: str, path: Path) -> None:
    from jacinv.plots import plt, save_figure

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for reg in dict.fromkeys(r["regularizer"] for r in rows):
        sub = [r for r in rows if r["regularizer"] == reg]
        xs = [r[study] for r in sub]
        for ax, metric in zip(axes, ("test_ssim", "test_psnr", "ge")):
            ax.errorbar(xs, [r[metric] for r in sub], yerr=[r[metric + "_std"] for r in sub], label=reg,
                        marker="o", ms=3, capsize=2)
            ax.set_title(metric)
            ax.set_xlabel(study)
    axes[0].legend(fontsize=7)
    save_figure(fig, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", choices=list(STUDIES), default="central")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--epochs", type=int, default=600)
    parser.add_argument("--regularizers", nargs="*", default=list(REGULARIZERS))
    parser.add_argument("--quick", action="store_true", help="tiny grid and 20 epochs (a few minutes)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "reproduce")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument("--cache", type=Path, default=CACHE, help="one JSON per finished run")
    args = parser.parse_args()
    extra = []
    regs, epochs = args.regularizers, args.epochs
    if args.quick:
        regs, epochs = ["none", "sja+sj"], 20
        extra = ["data.n_test=200", "train.eval_every=5"]
    rows = study_table(args.study, regs, args.seeds, epochs, extra, args.workdir, args.cache)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    write_json(rows, args.out / f"cs_{args.study}{suffix}.json")
    (args.out / f"cs_{args.study}{suffix}.md").write_text(markdown(rows, args.study) + "\n")
    if len(STUDIES[args.study][1]) > 1:
        plot(rows, args.study, args.out / f"cs_{args.study}{suffix}.png")
    print(f"wrote {args.out}/cs_{args.study}{suffix}.*")


if __name__ == "__main__":
    main()
