"""The robustness study (docs/results.md, "Robustness off the training distribution"): which knob buys the
most stability and shift robustness per dB given up in distribution.

    python benchmarks/robustness.py --jobs 2                 # train the arms, evaluate them, write the tables
    python benchmarks/robustness.py --tables-only            # redraw from the cache
    python benchmarks/robustness.py --quick --jobs 2         # a few minutes: tiny VarNet, 3 epochs
    python benchmarks/robustness.py --shipped --jobs 2       # the shipped model-based configs, in and off distribution
    python benchmarks/robustness.py --shipped --only mri_4x_multicoil   # train and score one of them
    python benchmarks/robustness.py --seeds 0 1 2 --arms augment "noise 5%" --jobs 2   # frontier points, 3 seeds
    python benchmarks/robustness.py --study cs --jobs 2      # the same study at the CS central point (unrolled net)

Every arm of the MRI study (the default) is configs/mri_4x_varnet.yaml (VarNet, MNI152 slices, 4x random mask, 100 epochs) with the
overrides of ARMS: the remedies (noise in training, augmentation), the stability targets of the Jacobian
penalty, and their combinations.  Each trained net is then scored on the clean test slices (noise.radius=0,
whatever it was trained with):
- in distribution: evaluate.py's per-volume PSNR / SSIM beside TV, zero-filled and the pseudo-inverse;
- stability: evaluate.py --stability, the worst-case perturbation at 1, 2, 5 and 10 % of the mean ||y||;
- new subject: evaluate.py --shift subject (test slices with another head shape and tissue contrast).
``--study cs`` does the same on configs/cs_unrolled.yaml with CS_ARMS (the remedies and targets on the
unpenalised net), scored on the config's own noisy test measurements (eps = 0.3) at 0.5, 1, 2 and 4 eps, and
shifted to natural-image patches (evaluate.py --shift data); its table is docs/results/robust_cs.md.
With ``--shipped`` it scores the shipped model-based configs as they are (SHIPPED) the same way, each with
the shift that suits its data, for the README's table.
Runs and evaluations go through benchmarks/reproduce.py's cache (one JSON per run, keyed by its
configuration), so the study resumes where it stopped; ``--jobs`` trains that many side by side (one
thread each).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from reproduce import CACHE, ROOT, refresh_tables, run_key, run_many  # noqa: E402

from jacinv.checkpoint import write_json  # noqa: E402

CONFIG = "mri_4x_varnet"
BASE = ("train.eval_every=25",)    # the arms are scored by evaluate.py afterwards: training evaluates rarely
CLEAN = ("noise.radius=0.0",)        # every net is scored on the noiseless test measurements
PENALTY = ("regularizer.every=4", "regularizer.options={iters: 3, krylov: 4, jvp_mode: fastest}")
AUGMENT = "data.augment=[flip, rotate, elastic, bias, gamma]"
NOISE = lambda r: (f"noise.radius={r}", "noise.noise_mode=fresh")  # noqa: E731 (on the sampled positions)
# noise on the whole k-space grid, the unsampled positions too (jacinv's k-space noise before noise.support): of a
# radius r about r / 2 lies on the sampled quarter of the grid, the part a measurement carries
WHOLE_GRID = lambda r: (*NOISE(r), "noise.support=all")  # noqa: E731
MEASURED = "regularizer.j_domain=measured"   # ||J P||: J on the sampled k-space positions only
SJ = lambda bound: ("regularizer.name=sj", f"regularizer.target_j={bound}", *PENALTY)  # noqa: E731
ARMS = (  # in the order they are trained: the frontier's likely points first
    ("as shipped (wd)", ()),
    ("noise 1%, whole grid", WHOLE_GRID(0.45)),
    ("augment", (AUGMENT,)),
    ("sj, ‖J‖ ≤ 2", SJ(2.0)),
    ("sj, ‖J‖ ≤ 3", SJ(3.0)),
    ("sja, ‖J A‖ ≤ 1.5", ("regularizer.name=sja", "regularizer.target_ja=1.5", *PENALTY)),
    ("sj, ‖J‖ ≤ 4", SJ(4.0)),
    ("noise 5%, whole grid", WHOLE_GRID(2.25)),
    ("sj ≤ 4 + augment", (*SJ(4.0), AUGMENT)),
    ("sj ≤ 4 + noise 5%, whole grid", (*SJ(4.0), *WHOLE_GRID(2.25))),
    ("sj, ‖J‖ ≤ 1.5", SJ(1.5)),
    ("none", ("regularizer.name=none",)),
    ("sj, ‖J P‖ ≤ 3", (*SJ(3.0), MEASURED)),
    ("augment, 150 epochs", (AUGMENT, "train.epochs=150")),
    ("noise 5%", NOISE(2.25)),
    ("sj ≤ 4 + noise 5%", (*SJ(4.0), *NOISE(2.25))),
    ("noise 1%", NOISE(0.45)),
)
#: The arm configs/mri_4x_varnet_robust.yaml ships (a test checks that the file is mri_4x_varnet with its overrides).
ROBUST_ARM = "augment, 150 epochs"
# The shipped model-based configs as shipped (seed 0): (name, config file, overrides, shift, the data overrides of
# every evaluation, those of the shift alone: "data" names the family it moves to).
# The MRI ones are arms of the study (their nets: training there evaluates every 25 epochs instead of 5, which
# changes no weight), so they share its runs.
SHIPPED = (("cs_unrolled", "cs_unrolled", ("seed=0",), "data", (), ("data.source=embedded", "data.name=patches")),
           ("sr_x2_unrolled", "sr_x2_unrolled", (), "blob", (), ()),
           ("mri_4x_varnet", CONFIG, (*BASE, "seed=0"), "subject", CLEAN, ()),
           ("mri_4x_varnet_robust", CONFIG, (*BASE, *dict(ARMS)[ROBUST_ARM], "seed=0"), "subject", CLEAN, ()),
           # trained before noise.support existed, with its noise on the whole k-space grid: that run, until retrained
           ("mri_4x_multicoil, noise on the whole grid", "mri_4x_multicoil", ("seed=0", "noise.support=all"), "subject",
            (), ()))
#: stability radii of a shipped config where the default four would take too long here (the table shows one): the
#: multi-coil TV attack (300 iterations through 8 coils, in memory-bounded passes) takes over an hour per four radii.
SHIPPED_RADII = {"mri_4x_multicoil, noise on the whole grid": (0.5,)}   # its noise radius eps
#: without --seeds the tables take every seed below this one that the cache holds
CACHED_SEEDS = 10
QUICK = ("train.epochs=3", "train.eval_every=1", "data.n_train=8", "data.n_val=4", "data.n_test=4",
         "data.downsample=4", "model.kwargs={cascades: 2, chans: 4, num_pool_layers: 2}")

# The CS central point (configs/cs_unrolled.yaml: unrolled net, Fashion-MNIST, q = 160, noise on the sphere of
# radius eps = 0.3, sja+sj at its automatic weights).  The remedies and the targets are applied to the
# unpenalised net ("none"), so that each arm is one knob; every net is scored on the same test measurements
# (noise radius eps, the config's fixed draws), at the stability report's radii 0.5, 1, 2 and 4 eps.
CS_EPS = 0.3
NONE = "regularizer.name=none"
CS_ARMS = (
    ("as shipped (sja+sj)", ()),
    ("none", (NONE,)),
    ("noise 4ε", (NONE, *NOISE(4 * CS_EPS))),
    ("augment", (NONE, AUGMENT)),
    ("sj, ‖J‖ ≤ 1.5", SJ(1.5)),
    ("sja, ‖J A‖ ≤ 2.5", ("regularizer.name=sja", "regularizer.target_ja=2.5", *PENALTY)),
    ("sj ≤ 1.5 + augment", (*SJ(1.5), AUGMENT)),
    ("sj, ‖J‖ ≤ 1", SJ(1.0)),
    ("noise 2ε", (NONE, *NOISE(2 * CS_EPS))),
    ("sj ≤ 1.5 + noise 4ε", (*SJ(1.5), *NOISE(4 * CS_EPS))),
)
CS_QUICK = ("train.epochs=3", "train.eval_every=1", "data.source=embedded", "data.name=digits", "data.n_train=20", "data.n_val=10",
            "data.n_test=10", "model.kwargs={iterations: 2, depth: 3, features: 8}")


@dataclass(frozen=True)
class Study:
    """One robustness study: the arms trained on a config and how each trained net is scored."""
    config: str          # the config file every arm starts from
    base: tuple          # overrides of every arm
    arms: tuple          # (label, overrides)
    scoring: tuple       # data overrides of every evaluation: the same test measurements for every arm
    shift: str           # evaluate.py --shift kind
    shift_data: tuple    # further data overrides of the shift alone
    eps: float           # the test noise radius: the stability radii are multiples of it (0: shares of ||y||)
    title: str           # the figure's
    shift_label: str     # the shift column's
    quick: tuple         # overrides of --quick: a tiny net for a few epochs
    quick_shift: tuple = ()   # further data overrides of the shift under --quick (its signal size)

    def overrides(self, arm: tuple, seed: int, quick: bool) -> list[str]:
        return [*self.base, *arm, f"seed={seed}", *(self.quick if quick else ())]


STUDIES = {
    "mri": Study(CONFIG, BASE, ARMS, CLEAN, "subject", (), 0.0, "VarNet 4x, MNI152 slices", "new subject PSNR", QUICK),
    "cs": Study("cs_unrolled", (), CS_ARMS, (f"noise.radius={CS_EPS}",), "data",
                ("data.source=embedded", "data.name=patches"), CS_EPS,
                "unrolled net, Gaussian CS (q = 160), Fashion-MNIST", "natural patches PSNR", CS_QUICK,
                ("data.patch_size=8",)),
}


def evaluate_one(path: Path, run_dir: Path, what: str, arguments: dict, threads: int) -> None:
    """evaluate.py's report, --shift or --stability (``what``, with its keyword ``arguments``) of ``run_dir``,
    written to ``path``."""
    from jacinv.report import evaluate_run
    from jacinv.shift import shift_report
    from jacinv.stability import stability_report

    torch.set_num_threads(threads)
    run = {"report": lambda **kw: evaluate_run(run_dir, **kw)["summary"], "shift": lambda **kw: shift_report(run_dir, **kw),
           "stability": lambda **kw: stability_report(run_dir, **kw)}[what]
    write_json(run(**arguments), path)


def evaluations(keys: list[str], workdir: Path, cache: Path, compute: bool, workers: int, with_tv: set[str],
                shifts: dict[str, tuple], radii: dict[str, tuple] | None = None,
                threads: int | None = None) -> dict[str, dict]:
    """{run key: {"report", "shift", "stability": result}} of the trained runs ``keys``, each scored on its test
    data (``shifts``: {key: (shift, data overrides of every evaluation, further ones of the shift alone)};
    the study's, or a shipped config's); the stability attacks of the runs ``with_tv`` also attack TV (the same for every net of a config:
    once is enough, and it is the slow part); ``radii``: {key: its stability radii} where not the defaults;
    ``threads`` per evaluation (default: cores / workers)."""
    tasks = {}
    for k in keys:
        shift, data, shift_data = shifts[k]
        arguments = {"report": {"overrides": data}, "shift": {"shift": shift, "overrides": (*data, *shift_data)},
                     "stability": {"overrides": data, "classical": k in with_tv, **({"radii": radii[k]} if k in
                                                                                      (radii or {}) else {})}}
        tasks[k] = {what: (cache / f"{k}-robust-{what}.json", workdir / k, what, arguments[what]) for what in arguments}
    todo = [t for own in tasks.values() for t in own.values() if compute and not t[0].exists() and t[1].exists()]
    if todo:
        print(f"{len(todo)} evaluations ({workers} at a time)", flush=True)
        threads = threads or max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for future in as_completed([pool.submit(evaluate_one, *t, threads) for t in todo]):
                future.result()
    return {k: {what: json.loads(t[0].read_text()) for what, t in own.items() if t[0].exists()}
            for k, own in tasks.items()}


def _per_volume(metrics: dict, name: str = "psnr") -> float:
    """The metric ``name`` per volume where evaluate.py reports one (MRI), else per image."""
    return metrics[f"volume_{name}"] if f"volume_{name}" in metrics else metrics[name]


def arm_row(label: str, run: dict, extra: dict) -> dict:
    """One arm's figures (NaN where an evaluation is missing)."""
    nan = float("nan")
    report, shift, stability = extra.get("report"), extra.get("shift"), extra.get("stability")
    row = {"arm": label, "seconds": run["seconds"], "ge": run["ge"], "probe_max_sj": run["probe_max_sj"],
           "probe_max_sja": run["probe_max_sja"], "j_measured": MEASURED in run["overrides"]}
    row["psnr"] = _per_volume(report["network"]) if report else nan
    row["ssim"] = _per_volume(report["network"], "ssim") if report else nan
    row["shift_psnr"] = shift["shifted"]["network"]["psnr"] if shift else nan
    row["slice_psnr"] = shift["in_distribution"]["network"]["psnr"] if shift else nan
    for r in (stability["curves"]["network"] if stability else []):
        row[f"drop_{r['radius']:.4g}"] = r["psnr_drop"]
        row[f"change_{r['radius']:.4g}"] = r["change_mean"]
    return row


def references(extra: dict) -> dict:
    """Per-volume PSNR in distribution and slice PSNR on the new-subject shift of the classical methods, and
    TV's worst-case drops (from the first arm's evaluations)."""
    out = {}
    for name, m in (extra.get("report") or {}).items():
        if name != "network":
            out.setdefault(name, {})["psnr"] = _per_volume(m)
    for name, m in (extra.get("shift") or {}).get("shifted", {}).items():
        if name != "network":
            out.setdefault(name, {})["shift_psnr"] = m["psnr"]
    for name, rows in (extra.get("stability") or {}).get("curves", {}).items():
        if name != "network":
            out.setdefault(name, {}).update({f"drop_{r['radius']:.4g}": r["psnr_drop"] for r in rows})
    return out


def _cell(value: float, fmt: str = ".2f") -> str:
    return "–" if value != value else format(value, fmt)   # NaN: not measured


#: the figures shown as mean ± std over seeds where an arm has several
SPREAD = ("psnr", "ssim", "shift_psnr", "probe_max_sj", "probe_max_sja", "ge", "seconds")


def over_seeds(rows: list[dict]) -> list[dict]:
    """One row per arm (in order of first appearance): with several seeds, the mean of each figure, its standard
    deviation in ``<figure>_std`` (SPREAD and the drops) and the number of seeds in ``seeds``."""
    arms: dict[str, list[dict]] = {}
    for r in rows:
        arms.setdefault(r["arm"], []).append(r)
    out = []
    for arm, runs in arms.items():
        row = {"arm": arm, "seeds": len(runs), "j_measured": runs[0]["j_measured"]}
        figures = [k for k in runs[0] if k in SPREAD or k.startswith(("drop_", "change_"))]
        for k in figures:
            values = [r.get(k, float("nan")) for r in runs]
            row[k] = statistics.fmean(values)
            row[k + "_std"] = statistics.stdev(values) if len(values) > 1 else float("nan")
        out.append(row)
    return out


def _spread(row: dict, key: str, fmt: str = ".2f") -> str:
    std = row.get(key + "_std", float("nan"))
    return format(row.get(key, float("nan")), fmt) + ("" if std != std else f" ± {std:{fmt}}")


def _radius_label(radius: str, share: dict, eps: float) -> str:
    if radius in share:    # the stability report's defaults for noiseless runs: RELATIVE_RADII of the mean ||y||
        return f"drop at {100 * share[radius]:g} % (r = {float(radius):.2f})"
    return f"drop at r = {radius}" + (f" ({float(radius) / eps:g} ε)" if eps > 0 else "")


def markdown(rows: list[dict], refs: dict, radii: list[str], study: Study = STUDIES["mri"]) -> str:
    """The study's table: one row per arm, then the classical references.  Radii are the stability report's:
    shares of the mean ||y|| on noiseless test data, multiples of the noise radius eps otherwise."""
    from jacinv.stability import RELATIVE_RADII

    share = dict(zip(radii, RELATIVE_RADII)) if study.eps == 0 and len(radii) == len(RELATIVE_RADII) else {}
    head = ["arm", "seeds", "PSNR / SSIM" + (" (volume)" if study.config.startswith("mri") else ""),
            *(_radius_label(r, share, study.eps) for r in radii),
            study.shift_label, "max ‖J‖", "max ‖J A‖", "GE", "train time¹"]
    lines = ["| " + " | ".join(head) + " |", "| --- | " + " | ".join("---:" for _ in head[1:]) + " |"]
    for r in over_seeds(rows):
        lines.append(f"| {r['arm']} | {r['seeds']} | {_spread(r, 'psnr')} / {r['ssim']:.3f} | "
                     + " | ".join(_spread(r, "drop_" + k) for k in radii)
                     + f" | {_spread(r, 'shift_psnr')} | {r['probe_max_sj']:.2f}{'²' if r['j_measured'] else ''} | "
                       f"{r['probe_max_sja']:.2f} | "
                       f"{r['ge']:.3f} | {r['seconds'] / 60:.0f} min |")
    for name, m in refs.items():
        lines.append(f"| {name} | | {_cell(m.get('psnr', float('nan')))} | "
                     + " | ".join(_cell(m.get('drop_' + k, float('nan'))) for k in radii)
                     + f" | {_cell(m.get('shift_psnr', float('nan')))} | | | | |")
    lines.append("\nWith several seeds: mean ± standard deviation over them (the other columns: means).\n"
                 "¹ Wall time with 2 to 5 runs and evaluations sharing the 2 cores, one thread each: a rough guide only."
                 + ("\n² max ‖J P‖: the probe's norm of J on the sampled k-space positions (regularizer.j_domain=measured)."
                    if any(r["j_measured"] for r in rows) else ""))
    return "\n".join(lines)


def plot(rows: list[dict], refs: dict, radius: str, path: Path, study: Study) -> None:
    """In-distribution PSNR against the worst-case drop at ``radius`` and against the new-subject PSNR."""
    from jacinv.plots import plt, save_figure

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    nan = float("nan")
    for r in over_seeds(rows):   # arms with several seeds: the mean, with ± one standard deviation as bars
        drop = r.get(f"drop_{radius}", nan)
        ax1.errorbar(drop, r["psnr"], xerr=r.get(f"drop_{radius}_std", nan), yerr=r.get("psnr_std", nan), fmt="o")
        ax1.annotate(r["arm"], (drop, r["psnr"]), fontsize=7)
        ax2.errorbar(r["shift_psnr"], r["psnr"], xerr=r.get("shift_psnr_std", nan), yerr=r.get("psnr_std", nan), fmt="o")
        ax2.annotate(r["arm"], (r["shift_psnr"], r["psnr"]), fontsize=7)
    for name, m in refs.items():
        if name.startswith("tv(") and "psnr" in m:   # TV as a point too: a net beats it up and to the left / right
            ax1.scatter(m.get(f"drop_{radius}", float("nan")), m["psnr"], marker="*", s=120, color="black")
            ax2.scatter(m.get("shift_psnr", float("nan")), m["psnr"], marker="*", s=120, color="black")
        if "psnr" in m:
            for ax in (ax1, ax2):
                ax.axhline(m["psnr"], ls=":", lw=1, color="grey")
                ax.text(ax.get_xlim()[0], m["psnr"], name, fontsize=6, va="bottom", color="grey")
        if "shift_psnr" in m:
            ax2.axvline(m["shift_psnr"], ls="--", lw=1, color="grey")
    ylabel = "in-distribution PSNR" + (" per volume" if study.config.startswith("mri") else "") + " (dB)"
    ax1.set(xlabel=f"worst-case PSNR drop at r = {radius} (dB)", ylabel=ylabel)
    ax2.set(xlabel=f"{study.shift_label} (dB)", ylabel=ylabel)
    fig.suptitle(f"{study.title}: in distribution against off distribution", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", choices=sorted(STUDIES), default="mri",
                        help="mri: VarNet 4x (ARMS); cs: the unrolled net at the CS central point (CS_ARMS)")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="seeds to train and tabulate (default: train seed 0, tabulate every seed in the cache)")
    parser.add_argument("--arms", nargs="+", help="labels of the study's arms to run (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained side by side, one thread each")
    parser.add_argument("--quick", action="store_true", help="a tiny VarNet for 3 epochs (a few minutes)")
    parser.add_argument("--tables-only", action="store_true", help="train nothing: tables from the cache")
    parser.add_argument("--train-only", action="store_true", help="train the arms, evaluate nothing")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="train nothing: evaluate the trained runs still missing evaluations (beside a training job)")
    parser.add_argument("--threads", type=int,
                        help="CPU threads per run and evaluation (default: 1 per run, cores / jobs per evaluation)")
    parser.add_argument("--shipped", action="store_true", help="the shipped model-based configs instead of the arms")
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="with --shipped: train and score only these of SHIPPED (the table shows every cached one)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "reproduce")
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    args = parser.parse_args()
    for name in ("jobs", "threads"):
        if (getattr(args, name) or 1) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    study = STUDIES[args.study]
    arms = [a for a in study.arms if args.arms is None or a[0] in args.arms]
    unknown = sorted(set(args.arms or ()) - {a[0] for a in study.arms})
    if unknown:
        parser.error(f"--arms: unknown {unknown}; expected labels from {[a[0] for a in study.arms]}")
    torch.set_num_threads(1)
    if args.shipped:
        if args.quick or args.arms:
            parser.error("--shipped scores the configs as shipped: it takes neither --quick nor --arms")
        return shipped(args)
    if args.only:
        parser.error("--only names shipped configs: it goes with --shipped")
    trained = args.seeds or [0]
    jobs = [(label, seed, study.overrides(arm, seed, args.quick)) for label, arm in arms
            for seed in (args.seeds or range(CACHED_SEEDS))]
    jobs = [j for j in jobs if j[1] in trained or (args.cache / f"{run_key(j[2], study.config)}.json").exists()]
    runs = run_many([(study.config, o, False, 0) for _, _, o in jobs], args.jobs, args.workdir, args.cache,
                    train=not (args.tables_only or args.evaluate_only), threads=args.threads or 1)
    if args.train_only:
        return
    keys = [run_key(o, study.config) for _, _, o in jobs]
    # the test data and TV do not depend on the seed: TV is attacked once, beside the first arm's first seed
    first_arm = {run_key(study.overrides(study.arms[0][1], min(trained), args.quick), study.config)}
    done = [k for k in keys if k in runs]
    extras = evaluations(done, args.workdir, args.cache, not args.tables_only, args.jobs, first_arm,
                         {k: (study.shift, study.scoring, (*study.shift_data, *(study.quick_shift if args.quick else ())))
                          for k in done}, threads=args.threads)
    rows = [{**arm_row(label, runs[k], extras.get(k, {})), "seed": seed}
            for (label, seed, _), k in zip(jobs, keys) if k in runs and "report" in extras.get(k, {})]
    pending = [f"{label} (seed {seed})" for (label, seed, _), k in zip(jobs, keys)
               if k in runs and "report" not in extras.get(k, {})]
    if pending:
        print(f"trained, not evaluated yet (left out of the tables; --evaluate-only scores them): {', '.join(pending)}")
    if not rows:
        print("no arm is trained yet")
        return
    refs = references(next((extras[k] for k in first_arm if k in extras), {}))
    radii = sorted({c[len("drop_"):] for r in rows for c in r if c.startswith("drop_")}, key=float)
    stem = args.out / (f"robust_{args.study}" + ("-quick" if args.quick else ""))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json({"rows": rows, "references": refs}, stem.with_suffix(".json"))
    table = markdown(rows, refs, radii, study)
    stem.with_suffix(".md").write_text(table + "\n")
    if radii:   # noiseless: at 1 % of ||y||; with noise: at eps
        plot(rows, refs, radii[0] if study.eps == 0 else radii[min(1, len(radii) - 1)], stem.with_suffix(".png"), study)
    print(table)
    print(f"wrote {stem}.md/.json/.png")
    if not args.quick:
        refresh_tables(args.out.parent / "results.md", args.out)


def _tv(methods: dict) -> str:
    return next(name for name in methods if name.startswith("tv("))


def shipped_row(config: str, shift: str, run: dict, extra: dict, tv_stability: dict | None) -> dict:
    """In distribution, shifted and under the worst-case perturbation (at the noise radius, or 1 % of the mean
    ||y|| without noise): the network and TV (TV's attack from ``tv_stability`` when the run's own has none: TV
    is the same for every net of a config)."""
    report, shifted, stability = extra.get("report"), extra.get("shift"), extra.get("stability")
    row = {"config": config, "shift": shift, "data": run["data"], "seconds": run["seconds"]}
    if report:
        row.update(net=_per_volume(report["network"]), tv=_per_volume(report[_tv(report)]), tv_name=_tv(report))
    if shifted:
        row.update(net_shift=shifted["shifted"]["network"]["psnr"], tv_shift=shifted["shifted"][_tv(shifted["shifted"])]["psnr"])
    if stability:
        curves, eps = stability["curves"], stability["noise_radius"]
        # at eps with noise, else at the smallest radius: 1 % of ||y|| (defaults 0.5, 1, 2, 4 x eps or 1, 2, 5, 10 %)
        k = next(i for i, c in enumerate(curves["network"]) if c["radius"] == eps) if eps > 0 else 0
        tv_curves = curves if any(n.startswith("tv(") for n in curves) else (tv_stability or {}).get("curves")
        row.update(radius=curves["network"][k]["radius"], radius_kind="eps" if eps > 0 else "1 % of mean ‖y‖",
                   net_drop=curves["network"][k]["psnr_drop"],
                   tv_drop=tv_curves[_tv(tv_curves)][k]["psnr_drop"] if tv_curves else float("nan"))
    return row


def shipped(args) -> None:
    """Train (or fetch) the SHIPPED configs, score them in and off distribution, write docs/results/shipped.md."""
    unknown = sorted(set(args.only or ()) - {name for name, *_ in SHIPPED})
    if unknown:
        raise SystemExit(f"--only: unknown {unknown}; expected names from {[name for name, *_ in SHIPPED]}")
    chosen = [args.only is None or name in args.only for name, *_ in SHIPPED]
    jobs = [(config, list(overrides), False, 0) for _, config, overrides, *_ in SHIPPED]
    run_many([j for j, c in zip(jobs, chosen) if c], args.jobs, args.workdir, args.cache, train=not args.tables_only,
             threads=args.threads or 1)
    if args.train_only:
        return
    runs = run_many(jobs, args.jobs, args.workdir, args.cache, train=False)
    keys = [run_key(list(overrides), config) for _, config, overrides, *_ in SHIPPED]
    shifts = {k: tuple(entry[3:]) for k, entry in zip(keys, SHIPPED)}
    done = [k for k in keys if k in runs]
    first_of_config = {}
    for (_, config, *_), k in zip(SHIPPED, keys):
        first_of_config.setdefault(config, k)
    radii = {k: SHIPPED_RADII[name] for (name, *_), k in zip(SHIPPED, keys) if name in SHIPPED_RADII}
    scored = [k for k, c in zip(keys, chosen) if c and k in runs]   # --only: the others' evaluations are not made
    evaluations(scored, args.workdir, args.cache, not args.tables_only, args.jobs, set(first_of_config.values()),
                {k: shifts[k] for k in scored}, radii, args.threads)
    extras = evaluations(done, args.workdir, args.cache, False, args.jobs, set(first_of_config.values()),
                         {k: shifts[k] for k in done}, radii)
    first = {}  # config -> the stability report of its first run (it attacks TV too)
    for (_, config, *_), k in zip(SHIPPED, keys):
        first.setdefault(config, extras.get(k, {}).get("stability"))
    rows = [shipped_row(name, shift, runs[k], extras.get(k, {}), first[config])
            for (name, config, _, shift, *_), k in zip(SHIPPED, keys) if k in runs]
    nan = float("nan")
    lines = ["| config | data | in distribution: net / TV (dB) | shift | shifted: net / TV (dB) | "
             "worst case at r: PSNR drop net / TV (dB) |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| `{r['config']}` | {r['data']} | {r.get('net', nan):.2f} / {r.get('tv', nan):.2f} | {r['shift']} | "
                     f"{r.get('net_shift', nan):.2f} / {r.get('tv_shift', nan):.2f} | r = {r.get('radius', nan):.3g} "
                     f"({r.get('radius_kind', '')}): {r.get('net_drop', nan):.2f} / {r.get('tv_drop', nan):.2f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(rows, args.out / "shipped.json")
    (args.out / "shipped.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    refresh_tables(args.out.parent / "results.md", args.out)


if __name__ == "__main__":
    main()
