"""evaluate.py: metrics of a trained run next to classical baselines, a JSON report and a figure page."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .checkpoint import CHECKPOINT, load_checkpoint, write_json
from .config import load_config
from .classical import baselines
from .evaluation import image_metrics, predict
from .experiment import build_experiment
from .metrics import rgb_to_y, shave, volume_maxima
from .operators import BlurDecimate, KSpaceSubsample


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
    if isinstance(operator, KSpaceSubsample):
        return image_metrics(x, pred, data_range=volume_maxima(x, volumes).double().numpy())
    return image_metrics(x, pred)


def volume_metrics(x: torch.Tensor, pred: torch.Tensor, volumes: torch.Tensor) -> dict[str, float]:
    """fastMRI's volume NMSE and PSNR (data range: the volume's maximum) of (N, C, H, W) slices
    grouped by ``volumes`` (N,), averaged over the volumes."""
    nmse, psnr = [], []
    for v in volumes.unique():
        xv, pv = x[volumes == v].double(), pred[volumes == v].double()
        err = float(((xv - pv) ** 2).sum())
        nmse.append(err / float((xv**2).sum()))
        psnr.append(float(10 * np.log10(float(xv.max()) ** 2 / (err / xv.numel()))))
    return {"volume_nmse": float(np.mean(nmse)), "volume_psnr": float(np.mean(psnr)), "volumes": len(nmse)}


def evaluate_run(run_dir, overrides=(), bound: bool = False, delta: float = 0.05) -> dict:
    """Evaluate the last checkpoint of ``run_dir``; writes report.json and report.png there."""
    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.yaml", overrides)
    state, _ = load_checkpoint(run_dir / CHECKPOINT, fallback=True)
    exp = build_experiment(config)
    model = exp.model
    model.load_state_dict(state["model"])
    model.eval()
    device = torch.device("cpu")
    y, x, pred = predict(model, exp.test_set, device)
    train_y, train_x, train_pred = predict(model, exp.train_set, device)
    n_fit = min(32, len(exp.train_set))
    recons = {"network": pred, **baselines(exp.operator, y, train_y[:n_fit], train_x[:n_fit])}
    volumes = exp.test_volumes if exp.test_volumes is not None else torch.zeros(len(x), dtype=torch.long)
    per_sample = {name: _protocol(exp.operator, x, r, volumes) for name, r in recons.items()}
    summary = {name: {k: float(np.nanmean(v)) for k, v in m.items()} for name, m in per_sample.items()}
    if isinstance(exp.operator, KSpaceSubsample):
        for name, r in recons.items():
            summary[name].update(volume_metrics(x, r, volumes))
    # GE as training measures it: l2 losses of whole signals (the task protocol may shave SR borders)
    test_l2, train_l2 = (float(image_metrics(a, b)["l2"].mean()) for a, b in ((x, pred), (train_x, train_pred)))
    summary["network"].update(test_l2=test_l2, train_l2=train_l2, generalisation_gap=abs(test_l2 - train_l2))
    report = {"run_dir": str(run_dir), "epoch": state["epoch"], "data": exp.data_note,
              "summary": summary, "per_sample_psnr": {k: v["psnr"].tolist() for k, v in per_sample.items()}}
    if bound:
        from .bounds import bound_report

        report["bound"] = bound_report(model, exp, delta=delta, measured_gap=summary["network"]["generalisation_gap"],
                                       run_dir=run_dir)
        report["summary"]["bound"] = {k: report["bound"][k] for k in ("total", "gamma", "vacuous", "measured_gap")}
    write_json(report, run_dir / "report.json")
    _figure(x, recons, per_sample, run_dir / "report.png")
    return report


METRIC_COLUMNS = (("psnr", "PSNR (dB)", ".2f"), ("ssim", "SSIM", ".3f"), ("nmse", "NMSE", ".4f"),
                  ("volume_psnr", "PSNR per volume (dB)", ".2f"), ("volume_nmse", "NMSE per volume", ".4f"))


def report_table(report: dict) -> str:
    """The network beside the classical baselines, one row per method and one column per metric,
    then the generalisation gap (and the bound when computed)."""
    summary = {k: v for k, v in report["summary"].items() if k != "bound"}
    columns = [c for c in METRIC_COLUMNS if any(c[0] in m for m in summary.values())]
    width = max(len(name) for name in summary)
    lines = [f"{'method':<{width}}  " + "  ".join(f"{title:>{max(len(title), 8)}}" for _, title, _ in columns)]
    for name, metrics in summary.items():
        cells = [f"{metrics[key]:>{max(len(title), 8)}{fmt}}" if key in metrics else " " * max(len(title), 8)
                 for key, title, fmt in columns]
        lines.append(f"{name:<{width}}  " + "  ".join(cells))
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
