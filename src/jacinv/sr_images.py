"""Super-resolution the way the field scores it: whole images of a folder (Set5, Set14, B100, Urban100,
DIV2K validation, your own), no split, next to bicubic interpolation and TV.

Protocol, per image:
  1. read it with the run's channels (1: BT.601 luma Y' = 0.299 R + 0.587 G + 0.114 B; 3: RGB) and
     crop it to a multiple of the scale s ("modcrop");
  2. y = A x + n with the run's blur + decimation built for that size (circular boundary, the
     operator's definition), n the run's noise at the same level per measured entry as in training
     (a bounded radius is scaled by sqrt(entries / training entries));
  3. reconstruct with the trained network (rebuilt for that size, the checkpoint's weights), bicubic
     interpolation of y (torch, a = -0.75) and TV (the weight of the run's evaluate.py);
  4. PSNR and SSIM (7x7, data range 1) on the Y channel in studio range, 16/255 + 219/255 Y' (what
     published tables report), after shaving s pixels at every border; outputs clipped to [0, 1].
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoint import load_weights, write_json
from .classical import tv_reconstruction, weighted_name
from .config import ConfigError
from .datasets.folder import list_images, read_image
from .distributed import evaluation_device
from .transforms import seed_for
from .experiment import build_experiment, build_noise
from .metrics import psnr, rgb_to_y, shave, ssim
from .models import build_model
from .noise import BoundedNoise
from .operators import build_operator


def studio_y(x: torch.Tensor) -> torch.Tensor:
    """The Y channel SR tables are scored on: BT.601 in [16, 235] / 255 of RGB (B, 3, H, W), or of a
    luma image Y' (B, 1, H, W) in [0, 1]."""
    return rgb_to_y(x) if x.shape[1] == 3 else 16.0 / 255.0 + 219.0 / 255.0 * x


def modcrop(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop (C, H, W) to the largest multiple of ``scale`` in H and W (top-left anchored, as SR code does)."""
    h, w = x.shape[-2:]
    return x[..., : h - h % scale, : w - w % scale]


def bicubic(y: torch.Tensor, scale: int) -> torch.Tensor:
    return torch.nn.functional.interpolate(y, scale_factor=scale, mode="bicubic", align_corners=False)


def evaluate_images(run_dir, folder, overrides=(), progress: bool | None = None, device: str | None = None) -> dict:
    """Score the run's network, bicubic interpolation and TV on every image under ``folder`` (module
    doc); writes images_report.json and images_report.png into the run and returns the report.  The network
    runs on ``device`` (default: the run's train.device)."""
    from .report import _weights, on_device, run_config_and_checkpoint

    run_dir = Path(run_dir)
    config, state, source = run_config_and_checkpoint(run_dir, overrides, command="evaluate.py --images")
    op_cfg = config["operator"]
    if op_cfg["name"] != "blur_decimate":
        raise ConfigError(f"--images is the super-resolution protocol; run {run_dir} uses operator "
                          f"{op_cfg['name']!r}, expected 'blur_decimate'")
    exp = build_experiment(config)  # the training pairs fix TV's weight, as in evaluate.py
    chosen = evaluation_device(config, device)
    tv_weight, tv_grid = _weights(exp.operator, exp.train_set, config, run_dir)["tv"]
    scale = exp.operator.factor
    noise = build_noise(config["noise"])
    channels = config["data"]["channels"]
    files = list_images(folder)
    rows, shown = [], None
    for path in tqdm(files, desc="images", disable=not (progress if progress is not None else False)):
        x = modcrop(torch.from_numpy(read_image(path, channels)), scale)[None]
        if min(x.shape[-2:]) < 4 * scale:
            raise ConfigError(f"image file {path} ({tuple(x.shape[-2:])}) is too small for scale {scale}")
        operator = build_operator("blur_decimate", in_shape=tuple(x.shape[1:]), **op_cfg["kwargs"])
        y = operator(x)
        if noise is not None:
            per_entry = math.sqrt(y[0].numel() / math.prod(exp.operator.out_shape))
            image_noise = BoundedNoise(noise.radius * per_entry, noise.mode) if isinstance(noise, BoundedNoise) else noise
            y = y + image_noise.sample(y.shape, seed=seed_for(config["seed"], path.name))
        model = build_model(config["model"]["name"], operator, **config["model"]["kwargs"])
        load_weights(model, state["model"], source)
        model = on_device(model, chosen).eval()
        with torch.no_grad():
            recons = {"network": model(y), "bicubic": bicubic(y, scale),
                      weighted_name("tv", tv_weight, tv_grid): tv_reconstruction(operator, y, tv_weight)}
        truth = shave(studio_y(x), scale)
        row = {"image": str(path.relative_to(folder)), "size": list(x.shape[-2:])}
        for name, r in recons.items():
            estimate = shave(studio_y(r.clamp(0, 1)), scale)
            row[name] = {"psnr": float(psnr(truth, estimate, 1.0)[0]), "ssim": float(ssim(truth, estimate, 1.0)[0])}
        rows.append(row)
        if shown is None:
            shown = (x, recons, row)
    methods = [k for k in rows[0] if k not in ("image", "size")]
    summary = {m: {k: float(np.mean([r[m][k] for r in rows])) for k in ("psnr", "ssim")} for m in methods}
    report = {"run_dir": str(run_dir), "folder": str(folder), "images": len(rows), "scale": scale, "device": str(chosen),
              "protocol": __doc__.split("Protocol, per image:")[1].strip(), "summary": summary, "per_image": rows}
    write_json(report, run_dir / "images_report.json")
    _figure(*shown, run_dir / "images_report.png")
    return report


def images_table(report: dict) -> str:
    """Mean PSNR / SSIM per method over the folder's images."""
    width = max(len(m) for m in report["summary"])
    lines = [f"{report['images']} image(s) of {report['folder']}, x{report['scale']}, Y channel, "
             f"{report['scale']}-pixel border shaved:",
             f"{'method':<{width}}  {'PSNR (dB)':>9}  {'SSIM':>6}"]
    lines += [f"{m:<{width}}  {v['psnr']:>9.2f}  {v['ssim']:>6.4f}" for m, v in report["summary"].items()]
    return "\n".join(lines)


def _figure(x: torch.Tensor, recons: dict, row: dict, path: Path) -> None:
    """The first image and its reconstructions, whole and a zoomed centre crop."""
    from .plots import plt, save_figure, show_image

    names = list(recons)
    fig, axes = plt.subplots(2, len(names) + 1, figsize=(3 * (len(names) + 1), 6))
    h, w = x.shape[-2:]
    crop = (slice(h // 2 - h // 8, h // 2 + h // 8), slice(w // 2 - w // 8, w // 2 + w // 8))
    for col, (name, image) in enumerate([("ground truth", x), *recons.items()]):
        title = name if name == "ground truth" else f"{name}\n{row[name]['psnr']:.2f} dB"
        show_image(axes[0, col], image[0].clamp(0, 1), title)
        show_image(axes[1, col], image[0, :, crop[0], crop[1]].clamp(0, 1), "centre, zoomed")
    save_figure(fig, path)
