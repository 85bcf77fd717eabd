"""Command-line entry points: ``train.py`` / ``jacinv-train`` and ``evaluate.py`` / ``jacinv-evaluate``."""
from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import traceback
from pathlib import Path

from . import distributed
from .checkpoint import write_csv
from .config import ConfigError, load_config, load_run_config
from .errors import UserError

USER_ERRORS = (UserError, FileNotFoundError)


def report_user_error(err: Exception, debug: bool) -> int:
    """Print one ``error:`` line (the traceback too with --debug) and return exit status 2."""
    if debug:
        traceback.print_exception(err)
    print("error: " + " ".join(str(err).split()), file=sys.stderr)
    return 2


def _fresh_dir(base: Path) -> Path:
    if not base.exists():
        return base
    for k in itertools.count(2):
        candidate = base.with_name(f"{base.name}-{k}")
        if not candidate.exists():
            return candidate
    raise AssertionError("unreachable")


def _sweep_grid(specs: list[str]) -> list[list[str]]:
    """['a=1,2', 'b=x,y'] -> [['a=1', 'b=x'], ['a=1', 'b=y'], ...]."""
    axes = []
    for spec in specs:
        if "=" not in spec:
            raise ConfigError(f"--sweep {spec!r} must look like key=v1,v2,...")
        key, values = spec.split("=", 1)
        axes.append([f"{key}={v}" for v in values.split(",")])
    return [list(combo) for combo in itertools.product(*axes)]


def _say(text: str) -> None:
    """Print on rank 0 only (one copy of the output under torchrun, which sets RANK)."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(text)


def _run_dir(args, config: dict, suffix: str = "") -> Path:
    """--run-dir, else a fresh out_dir/name[-N], chosen by rank 0 under torchrun."""
    if args.run_dir:
        return args.run_dir
    distributed.setup(config["train"]["device"])
    return distributed.from_rank0(lambda: _fresh_dir(Path(config["out_dir"]) / f"{config['name']}{suffix}"))


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, ``error: ...``, with exit status 2; options and key=value
    overrides may come in any order (``parse_intermixed_args``)."""

    def error(self, message):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def train_main(argv=None) -> int:
    from .plots import plot_sweep
    from .training import summary_table, train

    parser = Parser(prog="train.py", description="Train a reconstruction network (see README).")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. train.epochs=5")
    parser.add_argument("--config", type=Path, help="a YAML file under configs/")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR")
    parser.add_argument("--run-dir", type=Path, help="where to write (default out_dir/name, made unique)")
    parser.add_argument("--overwrite", action="store_true", help="with --run-dir: replace the run already there")
    parser.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                        help="run the grid of values (repeat for a product) and write one table")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--stop-after", type=int, metavar="N", help="train N epochs, then exit (resume later)")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error too")
    args = parser.parse_intermixed_args(argv)
    if args.stop_after is not None and args.stop_after < 1:
        parser.error(f"--stop-after must be a positive number of epochs, got {args.stop_after}")
    if args.overwrite and not args.run_dir:
        parser.error("--overwrite needs --run-dir (the run directory to replace)")
    if args.resume and (args.config or args.sweep or args.run_dir):
        given = [f for f, v in (("--config", args.config), ("--sweep", args.sweep), ("--run-dir", args.run_dir)) if v]
        parser.error(f"--resume continues the run with its saved config.yaml; it cannot be combined with "
                     f"{', '.join(given)} (give the keys to change as overrides, e.g. train.epochs=300)")
    progress = False if args.no_progress else None
    try:
        if args.resume:
            config = load_run_config(args.resume, args.overrides)
            history = train(config, args.resume, resume=True, progress=progress, stop_after=args.stop_after)
            _say(summary_table(history, config["regularizer"]))
            return 0
        if not args.sweep:
            config = load_config(args.config, args.overrides)
            run_dir = _run_dir(args, config)
            history = train(config, run_dir, progress=progress, stop_after=args.stop_after, overwrite=args.overwrite)
            _say(summary_table(history, config["regularizer"]))
            _say(f"\nrun directory: {run_dir}  (figures: curves.png, reconstructions.png; "
                 f"evaluate with: python evaluate.py {run_dir})")
            return 0
        grid = _sweep_grid(args.sweep)
        configs = [load_config(args.config, [*args.overrides, *combo]) for combo in grid]  # all checked first
        sweep_dir = _run_dir(args, configs[0], "-sweep")
        table = []
        for combo, run_config in zip(grid, configs):
            label = ",".join(combo).replace("/", "_")
            history = train(run_config, sweep_dir / label, progress=progress, overwrite=args.overwrite)
            last = next(r for r in reversed(history) if "test_psnr" in r)
            table.append({**{c.split("=", 1)[0]: c.split("=", 1)[1] for c in combo},
                          **{k: last[k] for k in ("test_psnr", "test_ssim", "train_loss", "test_loss", "ge",
                                                  "probe_max_sja", "probe_max_sj", "val_loss", "val_psnr")
                             if k in last}})
            _say(f"{label}: " + ", ".join(f"{k} {v:.4f}" for k, v in table[-1].items() if isinstance(v, float)))
        write_csv(table, sweep_dir / "sweep.csv")
        plot_sweep(table, sweep_dir / "sweep.png")
        _say(f"sweep table: {sweep_dir / 'sweep.csv'}, figure: {sweep_dir / 'sweep.png'}")
        return 0
    except USER_ERRORS as err:
        return report_user_error(err, args.debug)


def evaluate_main(argv=None) -> int:
    from .report import evaluate_run, report_table
    from .shift import SHIFTS

    parser = Parser(prog="evaluate.py", description="Evaluate a trained run (see README).")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("data_overrides", nargs="*", help="data.* and noise.* overrides for the evaluation data, e.g. data.n_test=500")
    parser.add_argument("--bound", action="store_true", help="also compute the generalisation bound")
    parser.add_argument("--delta", type=float, help="--bound: confidence parameter (default 0.05)")
    parser.add_argument("--images", type=Path, metavar="DIR",
                        help="super-resolution: score whole images of DIR (no split) beside bicubic and TV")
    parser.add_argument("--save-reconstructions", type=Path, metavar="DIR",
                        help="write one HDF5 file per test volume ('reconstruction', fastMRI's submission format)")
    parser.add_argument("--stability", action="store_true",
                        help="worst-case perturbations of the measurements (network and TV): stability.json/png")
    parser.add_argument("--radii", type=float, nargs="+", metavar="R",
                        help="--stability: perturbation norms (default: 0.5, 1, 2, 4 x the noise radius)")
    parser.add_argument("--stability-samples", type=int, metavar="N",
                        help="--stability: test measurements attacked (default 16, or all when fewer)")
    parser.add_argument("--shift", choices=list(SHIFTS),
                        help="distribution shift: a bright ring or blob added to the test images, 'subject': the "
                             "test images with another head shape and tissue contrast, or 'data': the "
                             "family the overrides give (e.g. data.source=embedded data.name=patches); "
                             "network against the classical reconstructions: shift_<shift>.json/png")
    parser.add_argument("--shift-samples", type=int, metavar="N",
                        help="--shift: test signals compared (default 64, or all when fewer)")
    parser.add_argument("--device", metavar="DEVICE",
                        help="where the network runs: auto, cpu, cuda or cuda:N (default: the run's train.device)")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error too")
    args = parser.parse_intermixed_args(argv)
    for flag, value, needs in (("--delta", args.delta, "bound"), ("--radii", args.radii, "stability"),
                               ("--stability-samples", args.stability_samples, "stability"),
                               ("--shift-samples", args.shift_samples, "shift")):
        if value is not None and not getattr(args, needs):
            parser.error(f"{flag} is used only with --{needs}; add --{needs} or drop {flag}")
    for flag, value in (("--shift-samples", args.shift_samples), ("--stability-samples", args.stability_samples)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    if args.delta is not None and not 0.0 < args.delta < 1.0:
        parser.error(f"--delta must lie in (0, 1), got {args.delta}")
    if args.radii is not None and not all(0 < r < math.inf for r in args.radii):
        parser.error(f"--radii must be finite positive numbers, got {' '.join(map(str, args.radii))}")
    if args.shift == "data" and not args.data_overrides:
        parser.error("--shift data needs overrides that give the other family, e.g. data.source=embedded data.name=patches")
    default_report = args.bound or args.save_reconstructions or not (args.shift or args.stability or args.images)
    try:
        if default_report:
            report = evaluate_run(args.run_dir, overrides=args.data_overrides, bound=args.bound,
                                  delta=0.05 if args.delta is None else args.delta,
                                  save_reconstructions=args.save_reconstructions, device=args.device)
            print(report_table(report))
            print(f"\nreport: {args.run_dir / 'report.json'}, figures: {args.run_dir / 'report.png'}")
            if args.save_reconstructions:
                print(f"reconstructions: {len(report['reconstructions'])} volume file(s) in {args.save_reconstructions}")
        if args.shift:
            from .shift import shift_paths, shift_report, shift_table

            report = shift_report(args.run_dir, args.shift, overrides=args.data_overrides, n_samples=args.shift_samples,
                                  device=args.device)
            print(shift_table(report))
            json_path, figure_path = shift_paths(args.run_dir, args.shift)
            print(f"\nreport: {json_path}, figure: {figure_path}")
        if args.stability:
            from .stability import stability_report, stability_table

            report = stability_report(args.run_dir, overrides=args.data_overrides, radii=args.radii,
                                      n_samples=args.stability_samples, device=args.device)
            print(stability_table(report))
            print(f"\nreport: {args.run_dir / 'stability.json'}, figure: {args.run_dir / 'stability.png'}")
        if args.images:
            from .sr_images import evaluate_images, images_table

            report = evaluate_images(args.run_dir, args.images, overrides=args.data_overrides,
                                     progress=sys.stderr.isatty(), device=args.device)
            print(images_table(report))
            print(f"\nreport: {args.run_dir / 'images_report.json'}, figure: {args.run_dir / 'images_report.png'}")
    except USER_ERRORS as err:
        return report_user_error(err, args.debug)
    return 0
