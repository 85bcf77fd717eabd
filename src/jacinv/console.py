"""What a run prints: one block at start-up, and one line per evaluated epoch when not on a terminal."""
from __future__ import annotations

import torch

from .models import count_parameters


def startup_block(config: dict, exp, regularizer, device: torch.device, run_dir) -> str:
    """Data actually used, operator, noise, model, regulariser, device and run directory, one line each."""
    op = exp.operator
    norm = f"||A|| = {op.spectral_norm():.4g} ({'exact' if op.spectral_norm_is_exact else 'power-method estimate'})"
    counts = f"{len(exp.train_set)} train / {len(exp.val_set) if exp.val_set is not None else 0} val / " \
             f"{len(exp.test_set)} test signals of shape {tuple(op.in_shape)}"
    noise = config["noise"]
    noise_text = {"bounded": f"uniform {'on the l2 sphere' if noise['mode'] == 'sphere' else 'in the l2 ball'} "
                             f"of radius {noise['radius']:g}",
                  "gaussian": f"Gaussian, sigma {noise['sigma']:g}", "none": "none"}.get(noise["kind"], noise["kind"])
    reg = config["regularizer"]
    weights = {"sj": ("lambda_j",), "sja": ("lambda_ja",), "sja+sj": ("lambda_ja", "lambda_j"),
               "fj": ("lambda_j",), "fja": ("lambda_ja",), "fja+fj": ("lambda_ja", "lambda_j")}.get(
        reg["name"], () if reg["name"] == "none" else ("weight",))
    reg_text = reg["name"] + "".join(f", {w} {reg[w]}" for w in weights)
    if any(reg[w] == "auto" for w in weights):
        reg_text += f" (seed Algorithm 4, kappa {reg['kappa']:g})"
    if reg["every"] > 1 and reg["name"] != "none":
        reg_text += f", evaluated every {reg['every']} steps with weights x {reg['every']}"
    n = torch.get_num_threads()
    threads = f", {n} thread{'' if n == 1 else 's'}" if device.type == "cpu" else ""
    rows = [("data", f"{exp.data_note}: {counts}"),
            ("operator", f"{type(op).__name__} {tuple(op.in_shape)} -> {tuple(op.out_shape)}, {norm}"),
            ("noise", f"{noise_text} ({noise['noise_mode']} draws)"),
            ("model", f"{config['model']['name']}, {count_parameters(exp.model):,} parameters"),
            ("regulariser", reg_text),
            ("training", f"{config['train']['epochs']} epochs, batch {config['train']['batch_size']}, "
                         f"lr {config['train']['lr']:g}, seed {config['seed']}"),
            ("device", f"{device}{threads}"),
            ("run directory", str(run_dir))]
    return "\n".join(f"  {k:<13} {v}" for k, v in rows)


def epoch_line(row: dict, epochs: int) -> str:
    """'epoch 10/200  train 2.31  test PSNR 21.20 dB  GE 0.041  max||JA|| 3.20  5.1 s' for an evaluated epoch."""
    parts = [f"epoch {row['epoch'] + 1}/{epochs}", f"train loss {row['train_loss_running']:.4f}"]
    if "test_psnr" in row:
        parts += [f"test PSNR {row['test_psnr']:.2f} dB", f"GE {row['ge']:.4f}", f"max||JA|| {row['probe_max_sja']:.3f}"]
        if "val_psnr" in row:
            parts.insert(2, f"val PSNR {row['val_psnr']:.2f} dB")
    parts.append(f"{row['seconds']:.1f} s")
    return "  ".join(parts)
