"""evaluate.py: metrics of a trained run next to classical baselines, a JSON report and a figure page."""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import CHECKPOINT, load_checkpoint, load_weights, write_json
from .classical import fit_weights, reconstructions
from .config import RESUMABLE, ConfigError, check_matches_checkpoint, load_run_config
from .distributed import evaluation_device
from .evaluation import batches, evaluate_split, image_metrics
from .experiment import build_experiment
from .metrics import rgb_to_y, shave, ssim, volume_maxima
from .mri import ReconstructionWriter, VolumeMetrics, is_kspace, volume_metrics
from .operators import BlurDecimate


def _protocol(operator, x: torch.Tensor, pred: torch.Tensor, volumes: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-sample metrics under the task's usual protocol.

    Super-resolution: PSNR/SSIM after shaving ``factor`` border pixels, on the Y channel for RGB.
    MRI: data range = the maximum of the slice's volume (fastMRI's definition; ``volumes`` (N,)
    gives each slice's volume), SSIM per slice with that range.  Otherwise data range 1.
    """
    if isinstance(operator, BlurDecimate):
        if x.shape[1] == 3:
            x, pred = rgb_to_y(x), rgb_to_y(pred.clamp(0, 1))
        return image_metrics(shave(x, operator.factor), shave(pred, operator.factor))
    if is_kspace(operator):
        return image_metrics(x, pred, data_range=volume_maxima(x, volumes).double().numpy())
    return image_metrics(x, pred)


def _weights(operator, train_set, config: dict, run_dir: Path, n_fit: int = 32) -> dict:
    """The baselines' weights, fitted on the first ``n_fit`` training pairs; cached in the run
    (baseline_weights.json, keyed by the data, operator, noise and seed settings).  A damaged cache
    is said so and fitted again."""
    key = json.dumps({k: config[k] for k in ("data", "operator", "noise", "seed")}, sort_keys=True) + f"|{n_fit}"
    cache = run_dir / "baseline_weights.json"
    try:
        stored = json.loads(cache.read_text()) if cache.exists() else {}
        if not isinstance(stored, dict):
            raise ValueError(f"expected a JSON object, got {type(stored).__name__}")
    except (ValueError, UnicodeDecodeError) as err:
        print(f"note: the baseline weight cache {cache} is damaged ({type(err).__name__}: {err}); fitting the "
              "weights again", file=sys.stderr)
        stored = {}
    if key not in stored:
        train_y, train_x = train_set.pairs(torch.arange(min(n_fit, len(train_set))))
        stored[key] = {name: [mu, list(grid)] for name, (mu, grid) in fit_weights(operator, train_y, train_x).items()}
        write_json(stored, cache)
    return {name: (mu, tuple(grid)) for name, (mu, grid) in stored[key].items()}


#: What an evaluation may override: the data it is scored on and the noise of its measurements.
EVALUATION_OVERRIDES = ("data", "noise")


def run_config_and_checkpoint(run_dir: Path, overrides=(), command: str = "evaluate.py") -> tuple[dict, dict, Path]:
    """(config with ``overrides``, checkpoint state, the checkpoint file it came from) of the run in
    ``run_dir``; the overrides may change only the test data (``EVALUATION_OVERRIDES``), and a
    config.yaml edited since the checkpoint was written is refused."""
    config = load_run_config(run_dir, overrides, changeable=EVALUATION_OVERRIDES, command=command)
    state, source = load_checkpoint(Path(run_dir) / CHECKPOINT, fallback=True)
    check_matches_checkpoint(state.get("config"), config, source, changeable=(*RESUMABLE, *EVALUATION_OVERRIDES))
    return config, state, source


class OnDevice(nn.Module):
    """``model`` run on ``device``: its input moved there, its output moved back to the input's device (autograd
    follows both copies, so an attack can differentiate through it)."""

    def __init__(self, model: nn.Module, device: torch.device):
        super().__init__()
        self.model, self.device = model.to(device), device

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.model(y.to(self.device)).to(y.device)


def on_device(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` itself on the CPU; elsewhere an ``OnDevice`` copy (model-based nets hold the operator, which the
    classical methods keep using on the CPU)."""
    return model if device.type == "cpu" else OnDevice(copy.deepcopy(model), device)


def load_run(run_dir: Path, overrides=(), device: str | None = None):
    """(config, experiment, trained model in eval mode, checkpoint state) of the run in ``run_dir``
    (its last checkpoint, or the previous one when that is damaged).  ``overrides`` may change only
    the test data (``data.*``, ``noise.*``); the state gets "source", the checkpoint file it came from, and
    "device", where the model runs: ``device`` or the run's train.device (``evaluation_device``).  The model takes
    and returns tensors on the CPU wherever it runs; the experiment (operator, data) stays on the CPU."""
    config, state, source = run_config_and_checkpoint(run_dir, overrides)
    exp = build_experiment(config)
    load_weights(exp.model, state["model"], source)
    chosen = evaluation_device(config, device)
    model = on_device(exp.model, chosen).eval()
    return config, exp, model, {**state, "source": str(source), "device": str(chosen)}


def evaluate_run(run_dir, overrides=(), bound: bool = False, delta: float = 0.05,
                 save_reconstructions=None, batch_size: int = 16, device: str | None = None) -> dict:
    """Evaluate the last checkpoint of ``run_dir``; writes report.json and report.png there (and with
    ``save_reconstructions`` one HDF5 file per test volume in that folder).  The test set is read a
    batch at a time, so memory does not grow with it.  The network runs on ``device`` (default: the run's)."""
    run_dir = Path(run_dir)
    config, exp, model, state = load_run(run_dir, overrides, device)
    device = torch.device("cpu")
    if bound and exp.operator.varies_per_sample:
        raise ConfigError("--bound needs one operator A for every sample; this run's operator "
                          f"({type(exp.operator).__name__}) differs per measurement")
    weights = _weights(exp.operator, exp.train_set, config, run_dir)
    mri = is_kspace(exp.operator)
    all_volumes = exp.test_volumes if exp.test_volumes is not None else torch.zeros(len(exp.test_set), dtype=torch.long)
    writer = ReconstructionWriter(save_reconstructions, exp.test_set) if save_reconstructions else None
    per_sample: dict[str, dict[str, list]] = {}
    by_volume: dict[str, VolumeMetrics] = {}
    shown = None
    with torch.no_grad():
        for index in batches(exp.test_set, batch_size):
            y, x = exp.test_set.pairs(index)
            volumes = all_volumes[index]
            recons = {"network": model(y.to(device)).cpu(), **reconstructions(exp.operator, y, weights)}
            for name, r in recons.items():
                metrics = _protocol(exp.operator, x, r, volumes)
                for k, v in metrics.items():
                    per_sample.setdefault(name, {}).setdefault(k, []).append(v)
                if mri:
                    by_volume.setdefault(name, VolumeMetrics()).add(x, r, volumes, metrics["ssim"])
            if writer is not None:
                writer.add(index, recons["network"], volumes)
            if shown is None:
                shown = (x[:3], {name: r[:3] for name, r in recons.items()})
    if writer is not None:
        writer.flush()
    per_sample = {name: {k: np.concatenate(v) for k, v in m.items()} for name, m in per_sample.items()}
    summary = {name: {k: float(np.nanmean(v)) for k, v in m.items()} for name, m in per_sample.items()}
    for name, acc in by_volume.items():
        summary[name].update(acc.result())
    # GE as training measures it: l2 losses of whole signals (the task protocol may shave SR borders)
    test_l2, train_l2 = (evaluate_split(model, ds, device)["l2"] for ds in (exp.test_set, exp.train_set))
    summary["network"].update(test_l2=test_l2, train_l2=train_l2, generalisation_gap=abs(test_l2 - train_l2))
    report = {"run_dir": str(run_dir), "epoch": state["epoch"], "checkpoint": state["source"], "device": state["device"],
              "epochs_trained": state["epoch"] + 1, "n_test": len(exp.test_set), "data": exp.data_note,
              "summary": summary, "per_sample_psnr": {k: v["psnr"].tolist() for k, v in per_sample.items()}}
    if writer is not None:
        report["reconstructions"] = [str(p) for p in writer.written]
    if bound:
        from .bounds import bound_report

        report["bound"] = bound_report(model, exp, delta=delta, measured_gap=summary["network"]["generalisation_gap"],
                                       run_dir=run_dir, rows=config["train"]["batch_size"])
        report["summary"]["bound"] = {k: report["bound"][k] for k in ("total", "gamma", "vacuous", "measured_gap")}
    write_json(report, run_dir / "report.json")
    _figure(*shown, per_sample, run_dir / "report.png")
    return report


VOLUME_COLUMNS = (("volume_psnr", "PSNR (dB)", ".2f"), ("volume_ssim", "SSIM", ".4f"), ("volume_nmse", "NMSE", ".4f"))
METRIC_COLUMNS = (("psnr", "PSNR (dB)", ".2f"), ("ssim", "SSIM", ".3f"), ("nmse", "NMSE", ".4f"))


def _table(summary: dict, columns) -> list[str]:
    """Rows of ``summary`` {method: metrics}, one column per (key, title, format) present."""
    columns = [c for c in columns if any(c[0] in m for m in summary.values())]
    width = max(len(name) for name in summary)
    lines = [f"{'method':<{width}}  " + "  ".join(f"{title:>{max(len(title), 8)}}" for _, title, _ in columns)]
    for name, metrics in summary.items():
        cells = [f"{metrics[key]:>{max(len(title), 8)}{fmt}}" if key in metrics else " " * max(len(title), 8)
                 for key, title, fmt in columns]
        lines.append(f"{name:<{width}}  " + "  ".join(cells))
    return lines


def report_table(report: dict) -> str:
    """The network beside the classical baselines, one row per method and one column per metric
    (for MRI fastMRI's volume metrics first, then slice means), then the generalisation gap (and the
    bound when computed)."""
    summary = {k: v for k, v in report["summary"].items() if k != "bound"}
    lines = [f"scored: {report['n_test']} test signals of {report['data']}; checkpoint {report['checkpoint']} "
             f"(after epoch {report['epochs_trained']})", ""] if "n_test" in report else []
    if "volumes" in summary["network"]:
        lines += [f"per volume, fastMRI's definitions (mean over {summary['network']['volumes']} volumes):",
                  *_table(summary, VOLUME_COLUMNS), "", "per slice (mean over slices):"]
    lines += _table(summary, METRIC_COLUMNS)
    net = summary["network"]
    lines.append(f"\ngeneralisation gap |test l2 - train l2| = |{net['test_l2']:.4f} - {net['train_l2']:.4f}| "
                 f"= {net['generalisation_gap']:.4f}")
    if any("grid edge" in name for name in summary):
        lines.append("grid edge: that baseline's weight is the smallest or largest of its search grid, so a wider "
                     "grid might give it a better score")
    if "bound" in report["summary"]:
        b = report["summary"]["bound"]
        lines.append(f"generalisation bound {b['total']:.4g} at gamma {b['gamma']:.4g}"
                     f"{' (vacuous)' if b['vacuous'] else ''}, measured gap {b['measured_gap']:.4g}")
    return "\n".join(lines)


def _figure(x, recons, per_sample, path: Path, n: int = 3) -> None:
    from .plots import plt, save_figure, show_image

    names = list(recons)
    image_like = x.dim() == 4
    rows = min(n, x.shape[0]) if image_like else 0
    fig = plt.figure(figsize=(2.2 * (len(names) + 2), 2.2 * (rows + 1.4)))
    grid = fig.add_gridspec(rows + 1, len(names) + 2, height_ratios=[1] * rows + [1.4])
    for r in range(rows):
        show_image(fig.add_subplot(grid[r, 0]), x[r], "ground truth")
        for c, name in enumerate(names):
            show_image(fig.add_subplot(grid[r, c + 1]), recons[name][r].clamp(0, 1), f"{name}\n{per_sample[name]['psnr'][r]:.1f} dB")
        err = (recons["network"][r] - x[r]).abs().mean(0)
        ax = fig.add_subplot(grid[r, len(names) + 1])
        shown = ax.imshow(err.numpy(), cmap="magma")
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title("|network - truth|", fontsize=8)
        ax.axis("off")
    ax = fig.add_subplot(grid[rows, :])
    for name in names:
        ax.hist(per_sample[name]["psnr"], bins=30, alpha=0.5, label=name)
    ax.set_xlabel("per-sample PSNR (dB)")
    ax.set_ylabel("test samples")
    ax.legend(fontsize=7)
    save_figure(fig, path)
