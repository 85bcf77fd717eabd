"""Regenerate the seed studies' tables and figures with jacinv (docs/results.md).

    python benchmarks/reproduce.py --study central q m eps --jobs 2   # compressed sensing (seed 002, Fig. 2)
    python benchmarks/reproduce.py --study q_fine --jobs 2            # q = 320, 640 with five kappas
    python benchmarks/reproduce.py --study denoise mri sr --jobs 2    # denoising, MRI masks, SR GE curves
    python benchmarks/reproduce.py --study every every_unrolled --jobs 2   # lazy penalty (every = 4) check
    python benchmarks/reproduce.py --study every_recommended every_recommended_unrolled --jobs 2
                                                                      # the same, recommended estimator
    python benchmarks/reproduce.py --study central q m eps --tables-only   # redraw from the cache only
    python benchmarks/reproduce.py --quick --study q                  # a few minutes: tiny grid, embedded data

Protocol (every choice is printed next to the results):
- Weights: Algorithm 4 of the seed ("auto": lambda = 10^floor(log10(loss / penalty)) / kappa, recomputed
  every step), with kappa chosen from KAPPAS by the lowest validation l2 loss of a seed-0 run; every
  regulariser gets the same three-run budget (pairs such as sja+sj share one kappa).  The q_fine study
  re-tunes sj and sja+sj at q = 320 and 640 on a half-decade grid (five kappas each) as a tuning check.
- ``Study.tune``: "each" chooses kappa at every swept value, "fixed" keeps Algorithm 4's kappa = 20, and a
  study's name reuses the kappa chosen at that study's first point: "central" (the CS central point, q = 160,
  m = 500, eps = 0.3, 600 epochs) for the FC sweeps, "mb_central" for the unrolled ones; a study naming
  itself tunes at its own first point only (the MRI study at 4x, its choice reused at 8x).
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
import re
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from jacinv.checkpoint import CHECKPOINT, load_checkpoint, write_json
from jacinv.config import load_config
from jacinv.schema import in_effect

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(__file__).parent / "results" / "reproduce"
REGULARIZERS = ("none", "wd", "sw", "sj", "fj", "fja+fj", "sja", "sja+sj", "datagrad", "spectreg")
SWEEP_REGULARIZERS = ("none", "sj", "fja+fj", "sja+sj")
KAPPAS = (20.0, 2.0, 0.2)
LAMBDAS = (0.16, 0.05, 0.016)  # fixed weights: about Algorithm 4's lambda at kappa 20 on the unrolled CS net
JACOBIAN_PENALTIES = ("sj", "sja", "sja+sj", "fj", "fja", "fja+fj")
FIXED = ":fixed"               # "sja+sj:fixed": both weights fixed (tuned on LAMBDAS) instead of Algorithm 4's
MAX_GRID = 6                   # widening stops at this many weights (1.5 decades past the first grid)
METRICS = ("test_psnr", "test_ssim", "ge", "probe_max_sja", "bound")
# Keyed: they define the run.  Unkeyed: they change only how fast it runs.
BASE = ["data.source=mnist", "data.fallback=error", "data.n_val=100", "train.eval_every=10"]
UNKEYED = ["train.checkpoint_every=100", "train.probe_size=16"]
# Config keys added after runs were cached, each with the value that keeps the behaviour from before it existed:
# left out of the run key at that value.  Add a key here when adding one to the configs (`--rekey` renames
# the runs cached in between).
LATER_KEYS = {"regularizer.every": 1, "data.kspace": "auto", "data.target": "auto", "data.train_root": None,
              "data.val_root": None, "data.test_root": None, "train.keep_freed_memory": True,
              "train.max_loss_ratio": 1000.0,  # the divergence stop: no cached run came near it
              "data.augment": [], "regularizer.target_ja": None, "regularizer.target_j": None,
              "regularizer.preset": None, "data.virtual_coils": None, "regularizer.j_domain": "all",
              "noise.support": "all"}
#: LATER_KEYS that a run may leave without effect in a way the schema's USED_WHEN does not say: a noise of size 0
NO_EFFECT = {"noise.support": lambda c: c["noise"]["kind"] == "bounded" and c["noise"]["radius"] == 0
             or c["noise"]["kind"] == "gaussian" and c["noise"]["sigma"] == 0}


@dataclass(frozen=True)
class Earlier:
    """Rows of an earlier study's table (docs/results/<stem>.json) shown at ``point`` of a later one."""
    point: object                  # the later study's point label
    stem: str                      # the earlier table, e.g. "cs_q"
    key: str                       # its point column, e.g. "q"
    value: object                  # its point, e.g. 160
    net: str                       # the label prefix, e.g. "FC"
    regularizers: tuple = ("none", "sja+sj")


@dataclass(frozen=True)
class Study:
    config: str                    # configs/<config>.yaml
    key: str                       # the swept config key; "" when values are (label, overrides) bundles
    values: tuple
    regularizers: tuple
    epochs: int
    tune: str                      # "each": weight chosen per value; "fixed": kappa 20; a study name: its first point's
    base: tuple = ()               # keyed overrides shared by the study's runs
    seeds: tuple = (0, 1, 2)
    report: bool = False           # also evaluate.py's report (task metrics, classical baselines)
    quick: tuple = ()              # overrides that shrink the study for --quick
    kappas: tuple = KAPPAS         # kappa candidates when the study tunes its own weights
    lambdas: tuple = LAMBDAS       # fixed-weight candidates of the "<reg>:fixed" arms
    widen: bool = False            # extend the grid by half-decades while the best weight sits at its edge
    bound: str = "all"             # the generalisation bound of "all" runs, or of the seeds' "finals" only
    bound_samples: int = 512       # training measurements whose Jacobian norms enter the bound's Lipschitz estimate
    earlier: tuple = ()            # rows of earlier studies shown beside this one's: Earlier(...)
    shifts: tuple = ()             # (label, evaluate.py --shift kind, data overrides) run on the seeds' nets
    stability: bool = False        # evaluate.py --stability on the seeds' nets
    paired: str = "regularizer"    # paired PSNR gains over "none" at the same point, or over the first "point"
    penalty: tuple = ()            # keyed overrides of the Jacobian-penalty arms only (e.g. a lazy penalty)


CS_QUICK = ("data.source=embedded", "data.n_val=50", "data.n_test=100", "train.eval_every=5")
MRI_MASKS = tuple((f"{acc}x {pattern}", (f"operator.kwargs.acceleration={acc}", f"operator.kwargs.pattern={pattern}",
                                         f"operator.kwargs.center_fraction={0.32 / acc}"))
                  for acc in (4, 8) for pattern in ("random", "equispaced"))
# eps = 3/255 * sqrt(q): an RMS of 3 grey levels per low-resolution pixel of a SR_PATCH^2 patch.
SR_PATCH = 48
SR_POINTS = tuple((f"x{f} {model} eps={eps:.3g}", (f"operator.kwargs.factor={f}", f"model.name={model}",
                                                    "model.kwargs={n_blocks: 4, features: 32}", f"noise.radius={eps}"))
                  for f in (2, 4) for model in ("edsr", "wdsr") for eps in (0.0, round(3 / 255 * SR_PATCH / f, 4)))
# The model-based study: regularisers, the half-decade kappa grid it starts from (widened at the edge), masks.
MB_REGULARIZERS = ("none", "wd", "sj", "sja+sj", "fja+fj", "sja+sj" + FIXED)
MB_SWEEP_REGULARIZERS = ("none", "wd", "sja+sj")
MB_KAPPAS = (63.0, 20.0, 6.3)
# the bound for the seeds' runs only, from 128 training samples: on 500 its power iterations took longer
# than the unrolled net's training
MB_BOUND = {"bound": "finals", "bound_samples": 128}
# distribution shift: CS nets (Fashion-MNIST) on natural-image patches and with a blob; MRI with a ring and a blob
MB_CS_EXTRAS = {"stability": True, "shifts": (("natural patches", "data", ("data.source=embedded", "data.name=patches",
                                                                          "data.patch_size=28")),
                                              ("blob", "blob", ()))}
MB_MRI_EXTRAS = {"stability": True, "shifts": (("ring", "ring", ()), ("blob", "blob", ()))}
MB_CS_QUICK = (*CS_QUICK, "model.kwargs={iterations: 2, depth: 3, features: 8}")
# VarNet's and the SR net's penalty costs 7x a plain epoch and more: evaluated on every 4th step there (within
# the seed spread of every = 1 on the unrolled CS net; README, "Cost of the Jacobian penalties")
MB_LAZY = ("regularizer.every=4",)
EVERY_RECOMMENDED = (("every 1", ("regularizer.every=1",)),
                     ("every 4, recommended", ("regularizer.every=4",
                                               "regularizer.options={iters: 3, krylov: 4, jvp_mode: fastest}")))
MB_MRI_MASKS = tuple(point for point in MRI_MASKS if point[0].endswith("random"))
STUDIES = {
    "central": Study("cs", "noise.radius", (0.3,), REGULARIZERS, 600, "each", tuple(BASE), quick=CS_QUICK),
    "q": Study("cs", "operator.kwargs.n_measurements", (80, 160, 320, 640), SWEEP_REGULARIZERS, 600, "each",
               tuple(BASE), quick=CS_QUICK),
    # Tuning check of the q sweep: the two spectral methods that swap places at q >= 320, on a half-decade grid.
    "q_fine": Study("cs", "operator.kwargs.n_measurements", (320, 640), ("none", "sj", "sja+sj"), 600, "each",
                    tuple(BASE), quick=CS_QUICK, kappas=(20.0, 6.3, 2.0, 0.63, 0.2)),
    "m": Study("cs", "data.n_train", (200, 400, 600, 800), SWEEP_REGULARIZERS, 200, "central", tuple(BASE),
               quick=CS_QUICK),
    "eps": Study("cs", "noise.radius", (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6), SWEEP_REGULARIZERS, 200, "central",
                 tuple(BASE), quick=CS_QUICK),
    # Lazy regularisation check (regularizer.every = 4 against 1) at the CS central point,
    # sja+sj with the central point's kappa for the FC net and the cs_unrolled config's kappa 20 for the unrolled
    # net; each row's paired gain is over every = 1.
    "every": Study("cs", "regularizer.every", (1, 4), ("sja+sj",), 600, "fixed", (*BASE, "regularizer.kappa=2.0"),
                   quick=CS_QUICK, paired="point"),
    "every_unrolled": Study("cs_unrolled", "regularizer.every", (1, 4), ("sja+sj",), 60, "fixed", tuple(BASE),
                            quick=CS_QUICK, paired="point"),
    # The same check for the cost benchmark's recommended setting (every 4, 3 Krylov-refined iterations,
    # finite differences on conv nets); its every = 1 runs are those of the two studies above.
    "every_recommended": Study("cs", "", EVERY_RECOMMENDED, ("sja+sj",), 600, "fixed",
                               (*BASE, "regularizer.kappa=2.0"), quick=CS_QUICK, paired="point"),
    "every_recommended_unrolled": Study("cs_unrolled", "", EVERY_RECOMMENDED, ("sja+sj",), 60, "fixed", tuple(BASE),
                                        quick=CS_QUICK, paired="point"),
    "denoise": Study("denoise", "data.n_train", (40, 200, 400), ("wd", "fj", "sj"), 40, "each",
                     ("data.n_val=100", "train.eval_every=5"), seeds=(0,),
                     quick=("data.n_val=10", "data.n_test=10", "data.patch_size=20")),
    "mri": Study("mri_4x", "", MRI_MASKS, ("none", "sja+sj"), 30, "fixed", ("train.eval_every=5",), seeds=(0,),
                 report=True, quick=("data.n_test=4", "data.downsample=4", "model.kwargs={chans: 4, num_pool_layers: 2}")),
    "sr": Study("sr_x2", "", SR_POINTS, ("none", "wd", "sja", "sja+sj"), 30, "fixed",
                (f"data.patch_size={SR_PATCH}", "data.n_train=100", "data.n_test=50", "train.eval_every=2"),
                seeds=(0,), report=True,
                quick=("data.n_train=8", "data.n_test=4", "data.patch_size=32", "model.kwargs={n_blocks: 1, features: 8}")),
    # Does the penalty help model-based nets?  (docs/results.md, "Model-based networks and the penalty")
    "mb_central": Study("cs_unrolled", "noise.radius", (0.3,), MB_REGULARIZERS, 60, "each", tuple(BASE),
                        quick=MB_CS_QUICK, kappas=MB_KAPPAS, widen=True, **MB_BOUND, **MB_CS_EXTRAS,
                        earlier=(Earlier(0.3, "cs_central", "central", 0.3, "FC", ("none", "sja+sj", "fja+fj")),)),
    "mb_q": Study("cs_unrolled", "operator.kwargs.n_measurements", (80, 640), MB_SWEEP_REGULARIZERS, 40, "mb_central",
                  tuple(BASE), quick=MB_CS_QUICK, **MB_BOUND, **MB_CS_EXTRAS,
                  earlier=tuple(Earlier(q, "cs_q", "q", q, "FC") for q in (80, 640))),
    "mb_m": Study("cs_unrolled", "data.n_train", (200,), MB_SWEEP_REGULARIZERS, 40, "mb_central", tuple(BASE),
                  quick=MB_CS_QUICK, **MB_BOUND, **MB_CS_EXTRAS,
                  earlier=(Earlier(200, "cs_m", "m", 200, "FC"),)),
    "mb_mri": Study("mri_4x_varnet", "", MB_MRI_MASKS, MB_SWEEP_REGULARIZERS, 20, "mb_mri", ("train.eval_every=5",),
                    report=True, penalty=MB_LAZY, kappas=MB_KAPPAS, widen=True, **MB_BOUND, **MB_MRI_EXTRAS,
                    quick=("data.n_train=8", "data.n_val=4", "data.n_test=4", "data.downsample=4",
                           "model.kwargs={cascades: 2, chans: 4, num_pool_layers: 2}"),
                    earlier=tuple(Earlier(label, "mri", "mri", label, "U-Net") for label, _ in MB_MRI_MASKS)),
    "mb_sr": Study("sr_x2_unrolled", "", (("x2 eps=0.376", ()),), MB_SWEEP_REGULARIZERS, 20, "fixed",
                   ("data.n_train=200", "train.eval_every=5"), report=True, **MB_BOUND, stability=True, penalty=MB_LAZY,
                   quick=("data.n_train=8", "data.n_val=4", "data.n_test=4", "data.patch_size=32",
                          "model.kwargs={iterations: 2, depth: 3, features: 8}"),
                   earlier=(Earlier("x2 eps=0.376", "sr", "sr", "x2 edsr eps=0.282", "EDSR (48 x 48 patches, eps 0.282)",
                                    ("none", "wd", "sja+sj")),)),
}
QUICK_KAPPAS = (20.0, 2.0)
CS_FIGURE_STUDIES = ("central", "q", "m", "eps")  # GE against ||J A||: drawn only when a run covers all four
TV = "TV (classical)"                          # the reference row of the CS tables: no network, no training
SHIFT_SAMPLES, STABILITY_SAMPLES = 64, 16      # test signals per shifted set and per stability curve


def resolve(overrides: list[str], config: str = "cs") -> dict:
    return load_config(ROOT / "configs" / f"{config}.yaml", overrides)


def run_key(overrides: list[str], config: str = "cs") -> str:
    """Hash of the resolved configuration: two override lists meaning the same run share one key.  Keys of
    LATER_KEYS at their neutral value, or without effect in this run, are left out, so that adding a config key
    keeps the keys of the cached runs it does not change."""
    resolved = resolve(overrides, config)
    for dotted, neutral in LATER_KEYS.items():
        section, key = dotted.split(".")
        if key in resolved.get(section, {}) and (resolved[section][key] == neutral or not in_effect(resolved, dotted)
                                                 or NO_EFFECT.get(dotted, lambda c: False)(resolved)):
            del resolved[section][key]
    text = json.dumps(resolved, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rekey(cache: Path, workdir: Path) -> list[tuple[str, str]]:
    """Rename each cached run (<key>.json, its <key>-*.json companions and its run folder) whose name is not the
    key ``run_key`` gives it today (runs cached before a LATER_KEYS entry was added).  A run whose new key is
    taken already (the same run cached twice) is left where it is.  Returns the (old, new) keys moved."""
    moved = []
    for path in sorted(cache.glob("*.json")):
        if "-" in path.stem:
            continue
        result = json.loads(path.read_text())
        key = run_key(result["overrides"], result.get("config", "cs"))
        if key == path.stem:
            continue
        if (cache / f"{key}.json").exists():
            print(f"{path.name}: the same run is cached as {key}.json already; left as it is", flush=True)
            continue
        for companion in cache.glob(f"{path.stem}-*.json"):
            companion.rename(cache / (key + companion.name[len(path.stem):]))
        path.rename(cache / f"{key}.json")
        if (workdir / path.stem).is_dir():
            (workdir / path.stem).rename(workdir / key)
        moved.append((path.stem, key))
    return moved


def run_one(overrides: list[str], workdir: Path, cache: Path, threads: int, config: str = "cs",
            report: bool = False, bound: int = 512) -> dict:
    """Train the run given by ``overrides`` over configs/<config>.yaml (or fetch it from the cache); the
    result holds the last evaluation, the GE curve, the device and seconds it took, with ``bound`` > 0 the
    generalisation bound of the trained net from that many training samples (added to a cached run from
    its checkpoint) and, with
    ``report``, evaluate.py's summary (task metrics next to classical baselines).  A run interrupted part-way
    resumes from its last checkpoint (its seconds are then those of the session that finished it)."""
    from jacinv.experiment import build_experiment
    from jacinv.report import evaluate_run
    from jacinv.training import train

    key = run_key(overrides, config)
    cached = cache / f"{key}.json"
    resolved = resolve([*overrides, *UNKEYED, f"train.threads={threads}"], config)
    if cached.exists():
        result = json.loads(cached.read_text())
        if bound and "bound" not in result:
            result.update(bound_terms(build_experiment(resolved), workdir / key, result["ge"], bound,
                                      resolved["train"]["batch_size"]))
            write_json(result, cached)
        return result
    refuse_substitute_data(resolved, key)
    t0 = time.perf_counter()
    # a run stopped part-way continues from its last checkpoint (its folder is its key: the same run); one stopped
    # before its first checkpoint has nothing to keep and starts again
    started = (workdir / key / CHECKPOINT).exists()
    history = train(resolved, workdir / key, resume=started, overwrite=not started, progress=False)
    exp = build_experiment(resolved)
    result = run_result(overrides, config, exp, history, time.perf_counter() - t0, resolved["train"]["device"], threads)
    last = [r for r in history if "test_psnr" in r][-1]
    if bound:
        result.update(bound_terms(exp, workdir / key, last["ge"], bound, resolved["train"]["batch_size"]))
    if report:
        result["report"] = evaluate_run(workdir / key)["summary"]
    cache.mkdir(parents=True, exist_ok=True)
    write_json(result, cached)
    return result


def refuse_substitute_data(resolved: dict, key: str) -> None:
    """The cache keys a run by its configuration, so a run that trained on data.fallback's substitute (embedded
    patches, when no MNIST files are found) would be stored as a Fashion-MNIST run: refuse to start one."""
    from jacinv.datasets.idx import FASHION_MNIST_DIR
    from jacinv.experiment import mnist_root

    data = resolved["data"]
    if data["source"] == "mnist" and mnist_root(data) is None:
        raise SystemExit(f"run {key} asks for Fashion-MNIST (data.source=mnist, data.root null) and it is not "
                         f"installed ({FASHION_MNIST_DIR}): the run cache would store a run on the substitute patches "
                         "as a Fashion-MNIST run. Install Debian's dataset-fashion-mnist, or give data.root=DIR "
                         "(MNIST-format IDX files)")


def run_result(overrides: list[str], config: str, exp, history: list[dict], seconds: float, device: str,
               threads: int) -> dict:
    """A cached run's JSON: its last evaluation, the GE curve, where and how long it trained."""
    from jacinv.distributed import uses_cuda

    evaluated = [r for r in history if "test_psnr" in r]
    last = evaluated[-1]
    return {"overrides": overrides, "config": config, "data": exp.data_note, "seconds": seconds,
            "device": f"{'cuda' if uses_cuda(device) else 'cpu'}, {threads} thread(s)",
            **{k: v for k, v in last.items() if k.startswith(("test_", "train_", "val_", "probe_", "lambda_"))},
            "ge": last["ge"], "curve": {k: [r[k] for r in evaluated] for k in ("epoch", "train_loss", "test_loss", "ge")}}


#: train.* keys that change no trained weight (what is evaluated and logged, when, and with how many threads): a
#: finished run that differs from a cached run's configuration only in these is that run (``adopt``).
WEIGHT_NEUTRAL = ("train.probe_size", "train.probe_iters", "train.eval_every", "train.checkpoint_every",
                  "train.threads", "train.num_workers", "train.keep_freed_memory")


def adopt(run_dir: Path, overrides: list[str], config: str, workdir: Path, cache: Path) -> str:
    """Put the finished run in ``run_dir`` (trained with train.py) into the cache as the run of ``overrides`` over
    configs/<config>.yaml, so that a study uses it instead of training it again: its configuration must equal
    that run's except in WEIGHT_NEUTRAL keys, and it must have trained every epoch.  The run folder is copied;
    its probe figures are its own (``probe_size`` in the JSON says over how many samples).  Returns the key."""
    import shutil

    from jacinv.config import load_config as load
    from jacinv.experiment import build_experiment

    key = run_key(overrides, config)
    if (cache / f"{key}.json").exists():
        raise SystemExit(f"--adopt: the run of {config} {' '.join(overrides)} is cached already ({key}.json)")
    own = load(Path(run_dir) / "config.yaml", [])
    wanted = resolve([*overrides, *UNKEYED], config)
    differ = [f"{section}.{k}: {own[section].get(k)!r} (wanted {v!r})" for section, block in wanted.items()
              if isinstance(block, dict) for k, v in block.items()
              if f"{section}.{k}" not in WEIGHT_NEUTRAL and own[section].get(k) != v]
    differ += [f"{k}: {own[k]!r} (wanted {v!r})" for k, v in wanted.items() if not isinstance(v, dict) and own[k] != v]
    if differ:
        raise SystemExit(f"--adopt {run_dir}: not the run of {config} {' '.join(overrides)}; it differs in "
                         + "; ".join(differ))
    history = json.loads((Path(run_dir) / "metrics.json").read_text())
    if not history or history[-1]["epoch"] + 1 != wanted["train"]["epochs"]:
        raise SystemExit(f"--adopt {run_dir}: trained {history[-1]['epoch'] + 1 if history else 0} of "
                         f"{wanted['train']['epochs']} epochs; finish it with train.py --resume first")
    shutil.copytree(run_dir, workdir / key)
    cache.mkdir(parents=True, exist_ok=True)
    result = run_result(overrides, config, build_experiment(wanted), history, sum(r["seconds"] for r in history),
                        own["train"]["device"], own["train"]["threads"])
    write_json({**result, "adopted_from": str(run_dir), "probe_size": own["train"]["probe_size"]}, cache / f"{key}.json")
    return key


def bound_terms(exp, run_dir: Path, ge: float, samples: int, rows: int) -> dict:
    """The generalisation bound of the net trained in ``run_dir`` (its experiment ``exp``; jacinv.bounds.bound_report,
    its Lipschitz estimates from ``samples`` training measurements, ``rows`` per pass)."""
    from jacinv.bounds import bound_report

    if not (run_dir / CHECKPOINT).exists():
        raise FileNotFoundError(f"the bound of a cached run needs its checkpoint {run_dir / CHECKPOINT}; "
                                f"train it again by deleting its cache entry")
    exp.model.load_state_dict(load_checkpoint(run_dir / CHECKPOINT)[0]["model"])
    exp.model.eval()
    bound = bound_report(exp.model, exp, delta=0.05, measured_gap=ge, max_samples=samples, rows=rows)
    return {"bound": bound["total"], "bound_terms": bound["terms"], "bound_gamma": bound["gamma"],
            "bound_samples": min(samples, len(exp.train_set))}


def run_many(jobs: list[tuple[str, list[str], bool, int]], workers: int, workdir: Path, cache: Path,
             train: bool = True, threads: int | None = None) -> dict[str, dict]:
    """{key: result} for every (config, overrides, report, bound) in ``jobs``, training the missing ones
    (and adding missing bounds) ``workers`` at a time (with ``train`` False: the cached ones only)."""
    keys = {}
    for config, overrides, report, bound in jobs:
        key = run_key(overrides, config)
        wanted = keys[key][3] if key in keys else 0  # a run wanted with and without its bound gets it
        keys[key] = (config, overrides, report, max(bound, wanted))
    results = {k: json.loads((cache / f"{k}.json").read_text()) for k in keys if (cache / f"{k}.json").exists()}
    todo = [k for k in keys if k not in results or (keys[k][3] and "bound" not in results[k])]
    # seed by seed: a study stopped part-way has every regulariser at the same number of seeds
    todo.sort(key=lambda k: int(_setting(keys[k][1], "seed")))
    if not todo or not train:
        if todo:
            print(f"{len(results)} runs cached, {len(todo)} missing (not trained: --tables-only)", flush=True)
        return results
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    print(f"{len(results)} runs cached, {len(todo)} to train ({workers} at a time, {threads} thread(s) each)",
          flush=True)
    shared = set.intersection(*(set(keys[k][1]) for k in todo))
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = {}
        for k in todo:
            config, overrides, report, bound = keys[k]
            futures[pool.submit(run_one, overrides, workdir, cache, threads, config, report, bound)] = k
        for done, future in enumerate(as_completed(futures), 1):
            r = results[futures[future]] = future.result()
            config, overrides, *_ = keys[futures[future]]
            print(f"[{done}/{len(todo)} {time.perf_counter() - t0:6.0f} s] {config} {' '.join(o for o in overrides if o not in shared)}: "
                  f"val l2 {r.get('val_loss', float('nan')):.4f} test PSNR {r['test_psnr']:.2f} GE {r['ge']:.4f}",
                  flush=True)
    return results


def run_extras(jobs: list[tuple], study: Study, workdir: Path, cache: Path, compute: bool, workers: int = 1,
               threads: int | None = None, samples: tuple[int, int] = (SHIFT_SAMPLES, STABILITY_SAMPLES),
               with_tv: set[str] | None = None) -> dict[str, dict]:
    """{run key: {"shift": {label: shift report}, "stability": stability report}} of the trained nets of ``jobs``
    (evaluate.py --shift / --stability on their run folders, ``samples`` test signals each), each cached as
    <key>-shift-<label>.json and <key>-stability.json; with ``compute`` the missing ones of existing run folders
    are made ``workers`` at a time (otherwise the cached ones only).  The stability reports of the runs in
    ``with_tv`` (all when None) also attack TV, whose curve is the same for every net of a point."""
    tasks = {}  # {run key: {label or "stability": (cache path, run folder, what, its arguments)}}
    for config, overrides, *_ in jobs:
        key = run_key(overrides, config)
        own = {label: (cache / f"{key}-shift-{re.sub(r'[^a-z0-9]+', '_', label)}.json", workdir / key, "shift",
                       {"shift": kind, "overrides": data, "n_samples": samples[0]}) for label, kind, data in study.shifts}
        if study.stability:
            own["stability"] = (cache / f"{key}-stability.json", workdir / key, "stability",
                                {"n_samples": samples[1], "classical": with_tv is None or key in with_tv})
        tasks[key] = own
    todo = [t for own in tasks.values() for t in own.values() if compute and not t[0].exists() and t[1].exists()]
    if todo:
        cache.mkdir(parents=True, exist_ok=True)
        threads = threads or max(1, (os.cpu_count() or 1) // workers)
        print(f"{len(todo)} shift / stability evaluations ({workers} at a time)", flush=True)
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for future in as_completed([pool.submit(extra_one, *t, threads) for t in todo]):
                future.result()
    read = lambda path: json.loads(path.read_text()) if path.exists() else None  # noqa: E731
    return {key: {"shift": {label: read(t[0]) for label, t in own.items() if label != "stability" and t[0].exists()},
                  "stability": read(own["stability"][0]) if "stability" in own else None}
            for key, own in tasks.items()}


def first_run_of_each_point(finals: dict) -> set[str]:
    """Run keys of the first job (first regulariser, first seed) at each point of a study's ``finals``."""
    first = {}
    for (value, _), jobs in finals.items():
        first.setdefault(value, jobs[0])
    return {run_key(overrides, config) for config, overrides, *_ in first.values()}


def extra_one(path: Path, run_dir: Path, what: str, arguments: dict, threads: int) -> None:
    """evaluate.py --shift or --stability (``what``, with its keyword ``arguments``) on ``run_dir``, written to
    ``path``."""
    from jacinv.shift import shift_report
    from jacinv.stability import stability_report

    torch.set_num_threads(threads)
    write_json((shift_report if what == "shift" else stability_report)(run_dir, **arguments), path)


def classical_references(finals: dict, cache: Path, compute: bool) -> dict:
    """{value: TV results, one per seed of the value's ``none`` runs} (cached ones only without ``compute``)."""
    out = {}
    for (value, reg), jobs in finals.items():
        if reg == "none":
            runs = [run_tv(overrides, config, cache, compute) for config, overrides, *_ in jobs]
            out[value] = [r for r in runs if r is not None]
            print(f"TV reference at {value}: " + ", ".join(f"{r['test_psnr']:.2f} dB (mu {r['mu']:g})" for r in out[value]),
                  flush=True)
    return {value: runs for value, runs in out.items() if runs}


def label(study: Study, value) -> str:
    return value[0] if not study.key else value


def overrides_for(study: Study, value, reg: str, seed: int, weight: float | None, epochs: int, base) -> list[str]:
    """A run's overrides; ``weight`` is the tuned kappa of Algorithm 4, or both fixed lambdas of a FIXED arm."""
    swept = list(value[1]) if not study.key else [f"{study.key}={value}"]
    out = [*base, *swept, f"regularizer.name={reg.removesuffix(FIXED)}", f"seed={seed}", f"train.epochs={epochs}"]
    if reg.removesuffix(FIXED) in JACOBIAN_PENALTIES:
        out += study.penalty
    if weight is None:
        return out
    if reg.endswith(FIXED):
        return [*out, f"regularizer.lambda_ja={weight}", f"regularizer.lambda_j={weight}"]
    return [*out, f"regularizer.kappa={weight}"]


def weight_of(overrides: list[str]) -> float:
    """The tuned weight in a run's overrides: Algorithm 4's kappa, or the fixed lambda."""
    return float(next(o.split("=", 1)[1] for o in overrides
                      if o.startswith(("regularizer.kappa=", "regularizer.lambda_ja="))))


def configured_kappa(reg: str, config: str, overrides: list[str]) -> float | None:
    """Algorithm 4's kappa of an untuned run (its config's); None for "none" and the fixed-weight arms."""
    if reg == "none" or reg.endswith(FIXED):
        return None
    return float(resolve(overrides, config)["regularizer"]["kappa"])


def half_decade(weight: float, direction: int) -> float:
    """The next weight of a half-decade grid up (+1) or down (-1), two significant digits: 20 -> 63 -> 200."""
    return float(f"{weight * 10 ** (0.5 * direction):.2g}")


class Plan:
    """Which runs a set of studies needs, in two phases: kappa candidates (seed 0), then every seed with the
    chosen kappa.  ``quick`` shrinks every study (two regularisers, two kappas, a few epochs)."""

    def __init__(self, studies: dict[str, Study], quick: bool):
        for name, study in studies.items():
            if study.tune not in ("each", "fixed", *STUDIES):
                raise ValueError(f"study {name!r}: tune={study.tune!r}; expected 'each', 'fixed' or a study name "
                                 f"from {sorted(STUDIES)}")
        self.quick = quick
        self.studies = studies

    def grid(self, study: Study, reg: str) -> list[float]:
        """The weights a regulariser's tuning starts from, largest first."""
        if reg.endswith(FIXED):
            return sorted(study.lambdas[:2] if self.quick else study.lambdas, reverse=True)
        return list(QUICK_KAPPAS if self.quick else study.kappas)

    def regularizers(self, study: Study) -> tuple:
        return (study.regularizers[0], study.regularizers[-1]) if self.quick else study.regularizers

    def epochs(self, study: Study) -> int:
        return (20 if study.config == "cs" else 2) if self.quick else study.epochs

    def job(self, study: Study, value, reg: str, seed: int, weight: float | None,
            final: bool = True) -> tuple[str, list[str], bool, int]:
        """(config, overrides, with evaluate.py's report, samples of the generalisation bound: 0 for none)."""
        overrides = overrides_for(study, value, reg, seed, weight, self.epochs(study), study.base)
        bound = study.bound_samples if final or study.bound == "all" else 0
        return study.config, overrides + list(study.quick if self.quick else ()), study.report, bound

    def candidates(self, results: dict | None = None) -> dict[tuple, list[tuple]]:
        """{(study, value label, reg): one seed-0 job per weight} for every regulariser whose weight is chosen.
        A study with ``widen`` extends a grid by a half-decade while ``results`` put its best weight at an edge."""
        out = {}
        for name, study in self.studies.items():
            for value in study.values:
                for reg in self.regularizers(study):
                    if reg == "none" or study.tune == "fixed":
                        continue
                    at, v = (study, value) if study.tune == "each" else (STUDIES[study.tune], STUDIES[study.tune].values[0])
                    make = lambda weights: [self.job(at, v, reg, 0, w, final=False) for w in weights]  # noqa: E731
                    grid = self.grid(at, reg)
                    while at.widen and results is not None and len(grid) < MAX_GRID:
                        runs = [results.get(run_key(o, c)) for c, o, *_ in make(grid)]
                        if any(r is None for r in runs):
                            break
                        best = min(range(len(grid)), key=lambda i: runs[i]["val_loss"])
                        if 0 < best < len(grid) - 1:
                            break
                        grid = [half_decade(grid[0], 1), *grid] if best == 0 else [*grid, half_decade(grid[-1], -1)]
                    out[(name, label(study, value), reg)] = make(grid)
        return out

    def finals(self, name: str, study: Study, chosen: dict, seeds) -> dict[tuple, list[tuple]]:
        """{(value label, reg): one job per seed} with the chosen kappa (Algorithm 4's 20 for "fixed"); points
        whose kappa is not chosen yet (candidates missing) are left out."""
        tuned = lambda reg: reg != "none" and study.tune != "fixed"  # noqa: E731
        return {(label(study, v), reg): [self.job(study, v, reg, s, chosen.get((name, label(study, v), reg)))
                                         for s in seeds]
                for v in study.values for reg in self.regularizers(study)
                if not tuned(reg) or (name, label(study, v), reg) in chosen}


def choose(candidates: list[tuple], results: dict[str, dict]) -> tuple[float, list[dict]]:
    """The weight whose run has the lowest validation l2 loss, and every candidate's result."""
    runs = [results[run_key(overrides, config)] for config, overrides, *_ in candidates]
    best = min(zip(candidates, runs), key=lambda cr: cr[1]["val_loss"])[0][1]
    return weight_of(best), runs


def summarise(name: str, finals: dict, chosen: dict, results: dict, classical: dict | None = None,
              earlier: list[dict] = (), paired: str = "regularizer") -> list[dict]:
    """One row per (value, regulariser) with the mean and std over the seeds, a TV row first at each
    value from ``classical`` ({value: [run_tv results]}), and the ``earlier`` studies' rows last."""
    rows = []
    for (value, reg), jobs in finals.items():
        runs = [results[k] for k in (run_key(overrides, config) for config, overrides, *_ in jobs) if k in results]
        if runs:
            kappa = chosen.get((name, value, reg)) or configured_kappa(reg, *jobs[0][:2])
            rows.append(_row(name, value, reg, kappa, runs))
    for value, runs in (classical or {}).items():
        rows.append({**_row(name, value, TV, None, runs), "mu_by_seed": {_seed(r): r["mu"] for r in runs}})
    rows += [r for r in earlier if any(value == r[name] for value, _ in finals)]
    order = list(dict.fromkeys(value for value, _ in finals))
    rows.sort(key=lambda r: (order.index(r[name]), r["regularizer"] != TV))  # TV first at each point
    return paired_gains(rows, name, paired)


def earlier_rows(study: Study, name: str, out: Path) -> list[dict]:
    """The rows of earlier tables (out/<stem>.json) that ``study.earlier`` names, relabelled for this study:
    the point as this study's, the regulariser prefixed with the earlier net's name."""
    rows = []
    for e in study.earlier:
        path = out / f"{e.stem}.json"
        if not path.exists():
            print(f"earlier rows: {path} not found (run that study first); left out", flush=True)
            continue
        rows += [{**{k: v for k, v in r.items() if k != e.key}, name: e.point, "regularizer": f"{e.net} {r['regularizer']}"}
                 for r in json.loads(path.read_text()) if r.get(e.key) == e.value and r["regularizer"] in e.regularizers]
    return rows


def _row(name: str, value, reg: str, kappa: float | None, runs: list[dict]) -> dict:
    row = {name: value, "regularizer": reg, "kappa": kappa, "seeds": len(runs), "data": runs[0]["data"],
           "curves": [r["curve"] for r in runs if "curve" in r]}
    for metric in METRICS:
        vals = np.array([r.get(metric, np.nan) for r in runs], dtype=float)
        row[metric], row[metric + "_std"] = float(vals.mean()), float(vals.std())
    row["psnr_by_seed"] = {_seed(r): r["test_psnr"] for r in runs}
    if "report" in runs[0]:
        row["report"] = runs[0]["report"]
    return row


def run_tv(overrides: list[str], config: str, cache: Path, compute: bool = True) -> dict | None:
    """TV reconstruction of the test set of the run ``overrides`` describes (its data, operator and noise;
    nothing trained), the weight chosen from TV_WEIGHTS by the mean l2 loss on its validation split; cached
    as <run key>-tv.json (with ``compute`` False: the cached result or None)."""
    from jacinv.classical import TV_WEIGHTS, best_weight, tv_reconstruction
    from jacinv.evaluation import image_metrics
    from jacinv.experiment import build_experiment

    cached = cache / f"{run_key(overrides, config)}-tv.json"
    if cached.exists():
        return json.loads(cached.read_text())
    if not compute:
        return None
    exp = build_experiment(resolve(overrides, config))
    if exp.val_set is None:
        raise ValueError(f"run_tv needs a validation split to choose its weight; overrides {overrides} give data.n_val=0")
    tv = lambda ys, mu: tv_reconstruction(exp.operator, ys, mu)  # noqa: E731
    measure = lambda ds: ds.measure(torch.arange(len(ds)))  # noqa: E731
    with torch.no_grad():
        mu = best_weight(tv, TV_WEIGHTS, measure(exp.val_set), exp.val_set.signals)
        metrics = image_metrics(exp.test_set.signals, tv(measure(exp.test_set), mu))
    result = {"overrides": overrides, "config": config, "data": exp.data_note, "mu": mu,
              **{f"test_{k}": float(np.mean(v)) for k, v in metrics.items()}}
    cache.mkdir(parents=True, exist_ok=True)
    write_json(result, cached)
    return result


def _seed(result: dict) -> int:
    return int(_setting(result["overrides"], "seed"))


def paired_gains(rows: list[dict], study: str, over: str = "regularizer") -> list[dict]:
    """Add each row's PSNR gain over its reference, mean and std over the seeds both have: with ``over`` =
    "regularizer" the row of ``none`` (or the study's first regulariser) at the same point, with "point" the
    row of the same regulariser at the study's first point.  The seeds share data, noise and initialisation,
    so the paired differences are far less noisy than the two means."""
    for row in rows:
        if over == "point":
            ref = next(r for r in rows if r["regularizer"] == row["regularizer"])
        else:
            ref = next((r for r in rows if r[study] == row[study] and r["regularizer"] == "none"),
                       next(r for r in rows if r[study] == row[study]))
        common = sorted(set(row["psnr_by_seed"]) & set(ref["psnr_by_seed"]))
        gains = np.array([row["psnr_by_seed"][s] - ref["psnr_by_seed"][s] for s in common])
        row["reference"] = f"{study} = {ref[study]}" if over == "point" else ref["regularizer"]
        row["psnr_gain"], row["psnr_gain_std"] = (float(gains.mean()), float(gains.std())) if common else (np.nan,) * 2
    return rows


def markdown(rows: list[dict], study: str) -> str:
    ref = rows[0]["reference"] if rows else "none"
    lines = [f"| {study} | regulariser | kappa (λ if fixed) | seeds | test PSNR (dB) | PSNR gain over {ref} (paired) | test SSIM | GE | "
             "max ‖J A‖ (probe) | bound |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        kappa = "" if r["kappa"] is None else f"{r['kappa']:g}"
        if "mu_by_seed" in r:
            kappa = "mu " + "/".join(f"{mu:g}" for mu in dict.fromkeys(r["mu_by_seed"].values()))
        lines.append(f"| {r[study]} | {r['regularizer']} | {kappa} | {r['seeds']} | {_pm(r, 'test_psnr', '.2f')} | "
                     f"{_pm(r, 'psnr_gain', '+.2f')} | {_pm(r, 'test_ssim', '.3f')} | {_pm(r, 'ge', '.3f')} | "
                     f"{_pm(r, 'probe_max_sja', '.2f')} | {'–' if np.isnan(r['bound']) else format(r['bound'], '.1f')} |")
    return "\n".join(lines)


def _pm(row: dict, metric: str, fmt: str) -> str:
    """'mean ± std' of a row's metric, '–' where the row has none (the TV rows have no GE or Jacobian)."""
    if np.isnan(row[metric]):
        return "–"
    return f"{format(row[metric], fmt)} ± {format(row[metric + '_std'], fmt.lstrip('+'))}"


def shift_markdown(finals: dict, extras: dict, study: str) -> str:
    """Mean PSNR over the seeds' nets in distribution and under each shift, the classical methods of the first
    run beside (TV, zero-filled / adjoint: the same data for every regulariser)."""
    labels = list(dict.fromkeys(label for e in extras.values() for label in e["shift"]))
    if not labels:
        return ""
    lines = [f"| {study} | method | PSNR in distribution | " + " | ".join(f"{lb}: PSNR (drop)" for lb in labels) + " |",
             "| --- | --- | ---: |" + " ---: |" * len(labels)]
    for value in dict.fromkeys(v for v, _ in finals):
        first = None
        for (v, reg), jobs in finals.items():
            reports = [extras.get(run_key(o, c), {}).get("shift", {}) for c, o, *_ in jobs] if v == value else []
            reports = [r for r in reports if len(r) == len(labels)]
            if not reports:
                continue
            first = first or reports[0]
            lines.append(_shift_line(value, f"{reg} ({len(reports)} seeds)", labels,
                                     [[r[lb] for lb in labels] for r in reports], "network"))
        if first:
            for method in (m for m in first[labels[0]]["shifted"] if m.startswith(("tv", "zero_filled_real", "adjoint"))):
                lines.append(_shift_line(value, method, labels, [[first[lb] for lb in labels]], method))
    return "\n".join(lines)


def _shift_line(value, name: str, labels: list, reports: list[list[dict]], method: str) -> str:
    own = np.mean([r[0]["in_distribution"][method]["psnr"] for r in reports])
    cells = []
    for i in range(len(labels)):
        shifted = np.mean([r[i]["shifted"][method]["psnr"] for r in reports])
        base = np.mean([r[i]["in_distribution"][method]["psnr"] for r in reports])
        cells.append(f"{shifted:.2f} ({base - shifted:+.2f})")
    return f"| {value} | {name} | {own:.2f} | " + " | ".join(cells) + " |"


def stability_markdown(finals: dict, extras: dict, study: str) -> str:
    """Worst-case output change ||f(y + e) - f(y)|| and PSNR drop per radius, mean over the seeds' nets; TV of
    the first run beside."""
    lines = []
    for value in dict.fromkeys(v for v, _ in finals):
        rows, tv = [], None
        for (v, reg), jobs in finals.items():
            reports = [extras.get(run_key(o, c), {}).get("stability") for c, o, *_ in jobs] if v == value else []
            reports = [r for r in reports if r]
            if reports:
                rows.append((f"{reg} ({len(reports)} seeds)", [r["curves"]["network"] for r in reports]))
                tv = tv or next(((name, [r["curves"][name]]) for r in reports for name in r["curves"] if name != "network"),
                                None)
        if not rows:
            continue
        radii = [c["radius"] for c in rows[0][1][0]]
        if not lines:
            lines = [f"| {study} | method | " + " | ".join(f"r = {r:.3g}: ‖Δf‖ (PSNR drop)" for r in radii) + " |",
                     "| --- | --- |" + " ---: |" * len(radii)]
        for name, curves in [*rows, *([tv] if tv else [])]:
            cells = [f"{np.mean([c[i]['change_mean'] for c in curves]):.3f} ({np.mean([c[i]['psnr_drop'] for c in curves]):.2f})"
                     for i in range(len(radii))]
            lines.append(f"| {value} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_markdown(rows: list[dict], study: str) -> str:
    """evaluate.py's protocol (fastMRI's PSNR / SSIM / volume NMSE for MRI, shaved borders for SR), with the
    classical reconstructions of each point (adjoint = zero-filled for MRI, Tikhonov, TV) before the nets."""
    lines = [f"| {study} | method | PSNR (dB) | SSIM | NMSE (volume) |", "| --- | --- | ---: | ---: | ---: |"]
    previous = None
    for r in rows:
        if r[study] != previous:
            previous = r[study]
            lines += [_report_line(r[study], method, a) for method, a in r["report"].items() if method != "network"]
        lines.append(_report_line(r[study], r["regularizer"], r["report"]["network"]))
    return "\n".join(lines)


def _report_line(point, method: str, metrics: dict) -> str:
    return (f"| {point} | {method} | {metrics['psnr']:.2f} | {metrics['ssim']:.3f} | "
            f"{metrics.get('volume_nmse', metrics['nmse']):.4f} |")


def tuning_markdown(candidates: dict, chosen: dict, results: dict) -> str:
    """Validation l2 loss of every candidate weight (kappa, or lambda for the fixed arms), the chosen one bold."""
    lines = ["| point | regulariser | validation l2 loss by weight (largest first) | chosen |", "| --- | --- | --- | ---: |"]
    for (name, value, reg), jobs in candidates.items():
        if (name, value, reg) not in chosen:
            continue
        weight, runs = choose(jobs, results)
        cells = [(weight_of(o), r["val_loss"]) for (_, o, *_), r in zip(jobs, runs)]
        text = ", ".join(f"**{w:g}: {v:.4f}**" if w == weight else f"{w:g}: {v:.4f}" for w, v in cells)
        kind = "lambda" if reg.endswith(FIXED) else "kappa"
        lines.append(f"| {name}={value} | {reg} | {text} | {kind} {weight:g} |")
    return "\n".join(lines)


def plot(rows: list[dict], study: str, path: Path) -> None:
    """The seed's Fig. 2 layout: SSIM, PSNR and GE (and max ||J A||) against the swept value."""
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
            if min(xs) > 0 and max(xs) >= 8 * min(xs):  # q doubles from point to point
                ax.set_xscale("log", base=2)
                ax.set_xticks(xs, [str(x) for x in xs])
    axes[0].legend(fontsize=7)
    save_figure(fig, path)


def plot_curves(rows: list[dict], study: str, path: Path) -> None:
    """The seed's Fig. 3 layout: GE against the epoch, one panel per point, one line per regulariser."""
    from jacinv.plots import plt, save_figure

    points = list(dict.fromkeys(r[study] for r in rows))
    cols = min(4, len(points))
    fig, axes = plt.subplots((len(points) + cols - 1) // cols, cols, figsize=(4 * cols, 3 * ((len(points) + cols - 1) // cols)),
                             squeeze=False)
    for ax, point in zip(axes.flat, points):
        for r in (r for r in rows if r[study] == point):
            curve = r["curves"][0]
            ax.plot([e + 1 for e in curve["epoch"]], curve["ge"], label=r["regularizer"], marker="o", ms=2)
        ax.set_title(point, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("GE")
    axes.flat[0].legend(fontsize=7)
    for ax in list(axes.flat)[len(points):]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)


def trained(plan: Plan, seeds_of, args, train: bool) -> tuple[dict, dict, dict, dict]:
    """(candidates, results, chosen weights, finals) of ``plan``: the tuning runs (widened until no best weight
    sits at an edge), then every seed's run with the chosen weight; missing runs are trained when ``train``."""
    candidates, results = plan.candidates(), {}
    while True:  # widen the grids whose best weight sits at an edge, until none does (or the cache runs out)
        results.update(run_many([j for jobs in candidates.values() for j in jobs], args.jobs, args.workdir,
                                args.cache, train, args.threads))
        widened = plan.candidates(results)
        if widened == candidates:
            break
        candidates = widened
    chosen = {point: choose(jobs, results)[0] for point, jobs in candidates.items()
              if all(run_key(o, c) in results for c, o, *_ in jobs)}
    finals = {name: plan.finals(name, study, chosen, seeds_of(study)) for name, study in plan.studies.items()}
    results.update(run_many([j for f in finals.values() for jobs in f.values() for j in jobs], args.jobs,
                            args.workdir, args.cache, train, args.threads))
    return candidates, results, chosen, finals


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", nargs="+", choices=list(STUDIES), default=["central"])
    parser.add_argument("--seeds", type=int, nargs="+", help="default: each study's (0 1 2 for CS; 0 with --quick)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained side by side")
    parser.add_argument("--threads", type=int, help="CPU threads per run (default: cores / jobs)")
    parser.add_argument("--quick", action="store_true",
                        help="two regularisers, two kappas, a few epochs on tiny data (a few minutes)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "reproduce")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument("--cache", type=Path, default=CACHE, help="one JSON per finished run")
    parser.add_argument("--rekey", action="store_true",
                        help="first rename the cached runs whose key changed (after a LATER_KEYS entry was added)")
    parser.add_argument("--tables-only", action="store_true",
                        help="train nothing: tables and figures from the cached runs (the seeds column says how many)")
    parser.add_argument("--adopt", nargs="+", metavar=("RUN_DIR", "CONFIG"),
                        help="RUN_DIR CONFIG [OVERRIDE ...]: cache the finished run RUN_DIR as the run of those "
                             "overrides over configs/CONFIG.yaml (same configuration but for how it was logged), then stop")
    args = parser.parse_args()
    if args.adopt:
        if len(args.adopt) < 2:
            parser.error("--adopt takes RUN_DIR CONFIG [OVERRIDE ...]")
        run_dir, config, *overrides = args.adopt
        print(f"cached {run_dir} as {adopt(Path(run_dir), overrides, config, args.workdir, args.cache)}")
        return
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(1)
    if args.rekey:
        print(f"rekeyed {len(rekey(args.cache, args.workdir))} cached runs", flush=True)
    plan = Plan({name: STUDIES[name] for name in args.study}, args.quick)
    seeds_of = lambda s: args.seeds or ((0,) if args.quick else s.seeds)  # noqa: E731

    train = not args.tables_only
    candidates, results, chosen, finals = trained(plan, seeds_of, args, train)

    extras = {name: run_extras([j for jobs in finals[name].values() for j in jobs], study, args.workdir, args.cache,
                               train, args.jobs, args.threads, with_tv=first_run_of_each_point(finals[name]))
              for name, study in plan.studies.items() if study.shifts or study.stability}
    classical = {name: classical_references(finals[name], args.cache, train) for name, study in plan.studies.items()
                 if study.config.startswith("cs")}

    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    for name, study in plan.studies.items():
        rows = summarise(name, finals[name], chosen, results, classical.get(name), earlier_rows(study, name, args.out),
                         study.paired)
        stem = args.out / (stem_of(name, study) + suffix)
        write_json(rows, stem.with_suffix(".json"))
        text = markdown(rows, name)
        if study.report and rows:
            text += "\n\n" + report_markdown(rows, name)
            plot_curves(rows, name, stem.with_name(stem.name + "_ge").with_suffix(".png"))
        stem.with_suffix(".md").write_text(text + "\n")
        for kind, table in (("shift", shift_markdown), ("stability", stability_markdown)):
            text = table(finals[name], extras.get(name, {}), name)
            if text:
                stem.with_name(f"{stem.name}_{kind}.md").write_text(text + "\n")
        if len(study.values) > 1 and study.key and rows:
            plot(rows, name, stem.with_suffix(".png"))
        if study.tune in ("each", name):  # its own tuning runs (at its first point only when it names itself)
            own = {point: jobs for point, jobs in candidates.items() if point[0] == name
                   and (study.tune == "each" or point[1] == label(study, study.values[0]))}
            stem.with_name(stem.name + "_tuning").with_suffix(".md").write_text(
                tuning_markdown(own, chosen, results) + "\n")
        if study.earlier:
            groups = {**own_runs(finals[name], results), **earlier_runs(study, seeds_of, args)}
            if sum(map(len, groups.values())) > 2:
                rhos = plot_ge_against_jacobian(groups, stem.with_name(stem.name + "_ge_vs_jacobian").with_suffix(".png"))
                stem.with_name(stem.name + "_ge_vs_jacobian").with_suffix(".md").write_text(spearman_markdown(rhos, groups))
        print(f"wrote {stem}*")
    cs_runs = list({run_key(o, c): results[run_key(o, c)] for name, study in plan.studies.items()
                    if study.config == "cs" for jobs in finals[name].values() for c, o, *_ in jobs
                    if run_key(o, c) in results}.values())
    if set(CS_FIGURE_STUDIES) <= set(args.study) and len(cs_runs) > 2:  # the scatter covers the whole CS study
        groups = {}
        for r in cs_runs:
            groups.setdefault(_setting(r["overrides"], "regularizer.name"), []).append(r)
        rho = plot_ge_against_jacobian(groups, args.out / f"cs_ge_vs_jacobian{suffix}.png")["all"]
        print(f"Spearman correlation of GE and max ||J A|| over {len(cs_runs)} CS runs: {rho:.3f}")
        (args.out / f"cs_ge_vs_jacobian{suffix}.md").write_text(
            f"Spearman's rho of GE and max ‖J A‖ over the {len(cs_runs)} trained CS nets: {rho:.2f}\n")
    if not args.quick:
        refresh_tables(args.out.parent / "results.md", args.out)


def refresh_tables(doc: Path, out: Path) -> None:
    """Replace each block ``<!-- table NAME -->`` ... ``<!-- end table -->`` of ``doc`` with out/NAME."""
    if not doc.exists():
        return
    pattern = re.compile(r"(<!-- table (\S+) -->\n).*?(<!-- end table -->)", re.S)
    text = pattern.sub(lambda m: m.group(1) + ((out / m.group(2)).read_text() if (out / m.group(2)).exists()
                                                else f"(not run yet: {m.group(2)})\n") + m.group(3), doc.read_text())
    doc.write_text(text)


def _setting(overrides: list[str], key: str) -> str:
    """The value of ``key`` in a run's overrides."""
    return next(o.split("=", 1)[1] for o in overrides if o.startswith(key + "="))


def stem_of(name: str, study: Study) -> str:
    """A study's table name under docs/results: cs_<name> for the FC compressed-sensing studies, else <name>."""
    return f"cs_{name}" if study.config == "cs" else name


def own_runs(finals: dict, results: dict) -> dict[str, list[dict]]:
    """{"<model> <regulariser>": the cached runs} of a study's seeds (all its points)."""
    out = {}
    for (_, reg), jobs in finals.items():
        for config, overrides, *_ in jobs:
            if run_key(overrides, config) in results:
                model = resolve(overrides, config)["model"]["name"]
                out.setdefault(f"{model} {reg}", []).append(results[run_key(overrides, config)])
    return out


def earlier_runs(study: Study, seeds_of, args) -> dict[str, list[dict]]:
    """{"<earlier net> <regulariser>": cached runs} of the earlier studies' seeds at the points ``study.earlier``
    names (nothing is trained)."""
    out = {}
    for e in study.earlier:
        name = next(n for n, s in STUDIES.items() if stem_of(n, s) == e.stem)
        _, results, _, finals = trained(Plan({name: STUDIES[name]}, args.quick), seeds_of, args, train=False)
        for reg in e.regularizers:
            keys = [run_key(o, c) for c, o, *_ in finals[name].get((e.value, reg), [])]
            out.setdefault(f"{e.net.split()[0]} {reg}", []).extend(results[k] for k in keys if k in results)
    return {k: v for k, v in out.items() if v}


def spearman(runs: list[dict]) -> float:
    """Spearman's rho of GE and the largest ||J A|| on the probe set over ``runs``."""
    from scipy.stats import spearmanr

    return float(spearmanr([r["probe_max_sja"] for r in runs], [r["ge"] for r in runs]).statistic)


def plot_ge_against_jacobian(groups: dict[str, list[dict]], path: Path) -> dict[str, float]:
    """GE against the largest ||J A|| of trained nets, one dot per run and one colour per group ("<net>
    <regulariser>" or a regulariser); returns Spearman's rho over all runs ("all") and within each net (the
    groups' first word) that has more than two runs."""
    from jacinv.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for group, runs in groups.items():
        ax.scatter([r["probe_max_sja"] for r in runs], [r["ge"] for r in runs], s=10, label=group)
    nets = {}
    for group, runs in groups.items():
        nets.setdefault(group.split()[0], []).extend(runs)
    everything = [r for runs in groups.values() for r in runs]
    rhos = {"all": spearman(everything)}
    if len(nets) > 1:
        rhos.update({net: spearman(runs) for net, runs in nets.items() if len(runs) > 2})
    ax.set_xlabel("max ||J(y) A|| on the probe set")
    ax.set_ylabel("GE = |test - train| l2 loss")
    ax.set_title(f"{len(everything)} trained nets, Spearman rho = {rhos['all']:.2f}", fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, path)
    return rhos


def spearman_markdown(rhos: dict[str, float], groups: dict[str, list[dict]]) -> str:
    """A table of Spearman's rho of GE and max ||J A||: over all nets, then within each."""
    counts = {}
    for group, runs in groups.items():
        counts[group.split()[0]] = counts.get(group.split()[0], 0) + len(runs)
    lines = ["| nets | runs | Spearman ρ (GE, max ‖J A‖) |", "| --- | ---: | ---: |"]
    lines.append(f"| all ({', '.join(counts)}) | {sum(counts.values())} | {rhos['all']:.2f} |")
    lines += [f"| {net} | {counts[net]} | {rho:.2f} |" for net, rho in rhos.items() if net != "all"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
