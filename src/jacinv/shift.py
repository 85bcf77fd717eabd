"""Distribution shift: a trained run tested on signals unlike its training set, beside the classical
reconstructions at their fitted weights.

Three kinds of shift: the run's own test images with a bright structure that training never showed
(``add_structure``: a ring or a lesion-like blob); the test images made to look like another subject
(``imitate_new_subject``: a head-shape affine map and a tissue-contrast curve, families that
``data.augment`` never draws); or another image family given by data overrides (e.g.
``data.source=embedded data.name=patches`` for a net trained on Fashion-MNIST).  Both the in-distribution
and the shifted signals are measured afresh with the run's operator and noise model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .checkpoint import write_json
from .classical import reconstructions
from .schema import ConfigError
from .datasets.paired import InverseProblemDataset
from .evaluation import image_metrics, samples_asked
from .transforms import affine_grid, check_images, warp

STRUCTURES = ("ring", "blob")
SHIFTS = (*STRUCTURES, "subject", "data")
SUBJECT_SCALE = 0.12     # subject: each axis scaled by a factor uniform in 1 +- this (head size and shape)
SUBJECT_SHEAR = 0.08     # subject: shear uniform in +- this
SUBJECT_SHIFT = 0.03     # subject: translation uniform in +- this fraction of the image
SUBJECT_KNOTS = 5        # subject: knots of the tissue-contrast curve (piecewise linear, increasing, 0 -> 0, 1 -> 1)
BLOB_SIGMA = 0.04                   # blob: Gaussian of this standard deviation (fraction of the shorter side)
RING_RADIUS, RING_WIDTH = 0.12, 0.015  # ring: radius and Gaussian half-width (fractions of the shorter side)


def add_structure(signals: torch.Tensor, kind: str, amplitude: float = 0.8,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """``signals`` (N, C, H, W) in [0, 1] with a bright ``kind`` ("ring" or "blob") of peak ``amplitude`` at a
    random centre in the middle half of each image, combined by the pointwise maximum (the result stays in
    [0, 1]); the same (N, C, H, W)."""
    if kind not in STRUCTURES:
        raise ValueError(f"kind must be one of {STRUCTURES}, got {kind!r}")
    if signals.dim() != 4:
        raise ValueError(f"signals must be real images (N, C, H, W), got shape {tuple(signals.shape)}")
    if not 0.0 < amplitude <= 1.0:
        raise ValueError(f"amplitude must lie in (0, 1], got {amplitude}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    n, (h, w) = signals.shape[0], signals.shape[-2:]
    centre = (0.25 + 0.5 * torch.rand(n, 2, generator=generator, dtype=torch.float64)) * torch.tensor([h, w])
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    dist = torch.hypot(yy - centre[:, :1, None], xx - centre[:, 1:, None]) / min(h, w)  # (N, H, W)
    if kind == "blob":
        shape = torch.exp(-dist**2 / (2 * BLOB_SIGMA**2))
    else:
        shape = torch.exp(-(dist - RING_RADIUS) ** 2 / (2 * RING_WIDTH**2))
    return torch.maximum(signals, (amplitude * shape[:, None]).to(signals.dtype))


def imitate_new_subject(signals: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``signals`` (N, C, H, W) in [0, 1] as if from other subjects: each image mapped by a random affine map
    (per-axis scale, shear, translation: another head's size and shape) and its intensities by a random
    increasing piecewise-linear curve through (0, 0) and (1, 1) (another tissue contrast); the same shape, in
    [0, 1].  A proxy: it moves anatomy and contrast, not the fine structure of a real new brain."""
    check_images(signals)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    n, (h, w) = signals.shape[0], signals.shape[-2:]
    draw = lambda *shape: 2 * torch.rand(*shape, generator=generator, dtype=torch.float64) - 1  # noqa: E731 (U(-1, 1))
    scale, shear, move = 1 + SUBJECT_SCALE * draw(n, 2), SUBJECT_SHEAR * draw(n), 2 * SUBJECT_SHIFT * draw(n, 2)
    matrices = torch.zeros(n, 2, 3, dtype=torch.float64)
    matrices[:, 0, 0], matrices[:, 0, 1], matrices[:, 1, 1] = 1 / scale[:, 0], shear, 1 / scale[:, 1]
    matrices[:, :, 2] = move
    warped = warp(signals, affine_grid(matrices, h, w)).double()
    steps = torch.rand(n, SUBJECT_KNOTS - 1, generator=generator, dtype=torch.float64) + 0.5   # increments of the curve
    levels = torch.cat([torch.zeros(n, 1, dtype=torch.float64), steps.cumsum(1) / steps.sum(1, keepdim=True)], 1)
    position = warped.clamp(0.0, 1.0) * (SUBJECT_KNOTS - 1)     # clamp: bilinear resampling stays in [0, 1] already
    k = position.floor().long().clamp(max=SUBJECT_KNOTS - 2)
    lo = torch.gather(levels, 1, k.flatten(1)).view_as(k)
    hi = torch.gather(levels, 1, (k + 1).flatten(1)).view_as(k)
    return (lo + (position - k) * (hi - lo)).to(signals.dtype)


def shift_paths(run_dir, shift: str) -> tuple[Path, Path]:
    """Where ``shift_report`` writes its report and figure: shift_<shift>.json / .png in the run directory,
    one pair per shift, so that evaluations of several shifts side by side keep each other's files."""
    return Path(run_dir) / f"shift_{shift}.json", Path(run_dir) / f"shift_{shift}.png"


#: The data keys that say which family signals come from (the others only say how many, or how cut).
FAMILY_KEYS = ("source", "name", "root", "train_root", "test_root")


def shift_report(run_dir, shift: str, overrides=(), n_samples: int | None = None, seed: int = 0,
                 device: str | None = None) -> dict:
    """Mean PSNR / SSIM of the network and the classical reconstructions on ``n_samples`` test signals
    (default: 64, or all when fewer), in
    distribution and shifted (``shift``: "ring" or "blob" added to the test images, or "subject": them
    made to look like other subjects (``imitate_new_subject``), whose family ``overrides`` may also change;
    "data": the family the ``overrides`` give).  Writes shift_<shift>.json and
    shift_<shift>.png (the shifted sample the network handles worst against TV) to ``run_dir``.  The network runs
    on ``device`` (default: the run's)."""
    from .report import _weights, load_run

    if shift not in SHIFTS:
        raise ValueError(f"shift must be one of {SHIFTS}, got {shift!r}")
    if shift == "data" and not overrides:
        raise ValueError("shift 'data' needs data overrides that give the other family, "
                         "e.g. data.source=embedded data.name=patches")
    run_dir = Path(run_dir)
    config, exp, model, state = load_run(run_dir, device=device)
    n_samples = samples_asked(n_samples, len(exp.test_set), default=64, flag="--shift-samples")
    weights = _weights(exp.operator, exp.train_set, config, run_dir)
    own = exp.test_set.signals[:n_samples]
    other, measured_by = own, exp
    if overrides:
        other_config, other_exp, _, _ = load_run(run_dir, overrides, device="cpu")   # its data only
        if shift == "data" and all(other_config["data"][k] == config["data"][k] for k in FAMILY_KEYS):
            same = ", ".join(f"data.{k}={config['data'][k]!r}" for k in FAMILY_KEYS)
            raise ConfigError(f"--shift data: the overrides {' '.join(overrides)} give the run's own data family "
                              f"({same}); expected another data.source, data.name or data.root")
        other, measured_by = other_exp.test_set.signals[:n_samples], other_exp
    generator = torch.Generator().manual_seed(seed)
    shifted = (add_structure(other, shift, generator=generator) if shift in STRUCTURES
               else imitate_new_subject(other, generator) if shift == "subject" else other)
    noise = measured_by.test_set.noise   # the overrides' noise model (e.g. noise.radius=0.0) when they give one
    report = {"run_dir": str(run_dir), "shift": shift, "overrides": list(overrides), "n_samples": len(own),
              "device": state["device"]}
    for split, signals in (("in_distribution", own), ("shifted", shifted)):
        data = InverseProblemDataset(signals, exp.operator, noise, seed=seed + 1)
        y = data.measure(torch.arange(len(data)))
        with torch.no_grad():
            recons = {"network": model(y), **reconstructions(exp.operator, y, weights)}
        metrics = {name: image_metrics(signals, x) for name, x in recons.items()}
        report[split] = {name: {k: float(np.mean(v)) for k, v in m.items()} for name, m in metrics.items()}
    # the figure: the shifted sample where the network trails TV most (recons, metrics: the shifted set's)
    tv = next(name for name in recons if name.startswith("tv"))
    worst = int(np.argmax(metrics[tv]["psnr"] - metrics["network"]["psnr"]))
    names = ["network", tv, *(name for name in recons if name.startswith(("adjoint", "zero_filled")))]
    shown = {"truth": (shifted[worst], None), **{name: (recons[name][worst], metrics[name]["psnr"][worst]) for name in names}}
    baseline = next(name for name in report["shifted"] if name.startswith(("zero_filled_real", "adjoint")))
    report["zero_filled"] = baseline
    report["network_below_zero_filled"] = report["shifted"]["network"]["psnr"] < report["shifted"][baseline]["psnr"]
    json_path, figure_path = shift_paths(run_dir, shift)
    write_json(report, json_path)
    _figure(shown, figure_path, f"shift: {shift} {' '.join(overrides)}".strip())
    return report


def shift_table(report: dict) -> str:
    """Markdown: PSNR / SSIM in distribution and shifted, and the drop, per method."""
    lines = ["| method | PSNR in distribution | PSNR shifted | drop (dB) | SSIM in distribution | SSIM shifted |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, a in report["in_distribution"].items():
        b = report["shifted"][name]
        lines.append(f"| {name} | {a['psnr']:.2f} | {b['psnr']:.2f} | {a['psnr'] - b['psnr']:.2f} | "
                     f"{a['ssim']:.3f} | {b['ssim']:.3f} |")
    if report["network_below_zero_filled"]:
        lines.append(f"\nUnder this shift the network falls below its own input baseline ({report['zero_filled']}).")
    return "\n".join(lines)


def _figure(shown: dict, path: Path, title: str) -> None:
    from .plots import plt, save_figure

    fig, axes = plt.subplots(1, len(shown), figsize=(3 * len(shown), 3.2))
    for ax, (name, (img, psnr)) in zip(np.atleast_1d(axes), shown.items()):
        ax.imshow(img[0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(name if psnr is None else f"{name}\n{psnr:.2f} dB", fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)
