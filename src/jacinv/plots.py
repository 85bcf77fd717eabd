"""Figures of a run: learning curves, generalisation gap, Jacobian norms, reconstructions."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .checkpoint import temporary_twin  # noqa: E402
from .models import AdjointInput  # noqa: E402


def save_figure(fig, path: Path) -> None:
    tmp = temporary_twin(path)
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)


def show_image(ax, img: torch.Tensor, title: str) -> None:
    img = img.detach().cpu()
    img = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0).clamp(0, 1)
    ax.imshow(img.numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def plot_training(history: list[dict], model, exp, run_dir: Path, device, n_samples: int = 4) -> None:
    """curves.png (losses, GE, PSNR, Jacobian norms per epoch) and reconstructions.png."""
    rows = [r for r in history if "test_loss" in r]
    if rows:
        ep = [r["epoch"] + 1 for r in rows]
        marker = "o" if len(rows) < 12 else None  # a single evaluated epoch still shows
        fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
        axes[0].plot(ep, [r["train_loss"] for r in rows], marker=marker, label="train")
        axes[0].plot(ep, [r["test_loss"] for r in rows], marker=marker, label="test")
        axes[0].set_title("l2 loss ||f(y) - x||")
        axes[0].legend()
        axes[1].plot(ep, [r["ge"] for r in rows], marker=marker, color="C3")
        axes[1].set_title("generalisation gap |test - train|")
        axes[2].plot(ep, [r["test_psnr"] for r in rows], marker=marker, color="C2")
        axes[2].set_title("test PSNR (dB)")
        for key, label in (("sja", "||J A||"), ("sj", "||J||")):
            axes[3].plot(ep, [r[f"probe_max_{key}"] for r in rows], marker=marker, label=f"max {label}")
            axes[3].plot(ep, [r[f"probe_mean_{key}"] for r in rows], "--", marker=marker, label=f"mean {label}")
        axes[3].set_title("Jacobian norms on the probe set")
        axes[3].legend(fontsize=7)
        for ax in axes:
            ax.set_xlabel("epoch")
        save_figure(fig, run_dir / "curves.png")
    index = torch.arange(min(n_samples, len(exp.test_set)))
    y, x = exp.test_set.pairs(index)
    model.eval()
    with torch.no_grad():
        pred = model(y.to(device)).cpu()
        adj = AdjointInput(exp.operator)(y.to(device)).cpu()
    if len(exp.operator.in_shape) != 3:
        return
    fig, axes = plt.subplots(len(index), 3, figsize=(6, 2 * len(index)), squeeze=False)
    for k in range(len(index)):
        show_image(axes[k, 0], x[k], "ground truth")
        show_image(axes[k, 1], adj[k], "A^T y / ||A||^2")
        err = float(((pred[k] - x[k]) ** 2).mean())
        show_image(axes[k, 2], pred[k], f"network ({10 * np.log10(1 / max(err, 1e-12)):.1f} dB)")
    save_figure(fig, run_dir / "reconstructions.png")


def plot_sweep(table: list[dict], path: Path) -> None:
    """Generalisation gap against the largest ||J A|| on the probe set, one point per run of a sweep
    (the seed paper's claim is that they move together)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    labels = [",".join(str(v) for k, v in row.items() if not isinstance(v, float)) for row in table]
    for ax, key, title in ((axes[0], "probe_max_sja", "max ||J A|| (probe set)"),
                           (axes[1], "probe_max_sj", "max ||J|| (probe set)")):
        xs, ys = [row[key] for row in table], [row["ge"] for row in table]
        ax.scatter(xs, ys)
        for x, y, label in zip(xs, ys, labels):
            ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if len(xs) > 2:
            r = np.corrcoef(xs, ys)[0, 1]
            ax.set_title(f"GE vs {title}: Pearson r = {r:.2f}", fontsize=9)
        else:
            ax.set_title(f"GE vs {title}", fontsize=9)
        ax.set_xlabel(title)
        ax.set_ylabel("generalisation gap")
    save_figure(fig, path)
