"""What a run prints: one block at start-up, and one line per evaluated epoch when not on a terminal."""
from __future__ import annotations

import torch

from .models import count_parameters
from .regularizers import J_NORM
from .schema import in_effect


def startup_block(config: dict, exp, regularizer, device: torch.device, run_dir, allocator: str | None = None) -> str:
    """Data actually used, operator, noise, model, regulariser, device (``allocator``: what
    ``keep_freed_memory`` did, if it ran) and run directory, one line each."""
    op = exp.operator
    norm = f"||A|| = {op.spectral_norm():.4g} ({'exact' if op.spectral_norm_is_exact else 'estimate, a lower bound'})"
    counts = f"{len(exp.train_set)} train / {len(exp.val_set) if exp.val_set is not None else 0} val / " \
             f"{len(exp.test_set)} test signals of shape {tuple(op.in_shape)}"
    noise = config["noise"]
    noise_text = {"bounded": f"uniform {'on the l2 sphere' if noise['mode'] == 'sphere' else 'in the l2 ball'} "
                             f"of radius {noise['radius']:g}",
                  "gaussian": f"Gaussian, sigma {noise['sigma']:g}", "none": "none"}.get(noise["kind"], noise["kind"])
    if noise["kind"] != "none" and in_effect(config, "noise.support"):
        noise_text += (", on the measured entries only" if noise["support"] == "measured"
                       else ", drawn on every entry (the unmeasured ones too)")
    reg_text = regularizer.name + "".join(f", lambda_{term} {weight}" for term, weight in regularizer.weights.items())
    if "auto" in regularizer.weights.values():
        reg_text += f" (seed Algorithm 4, kappa {regularizer.kappa:g})"
    j_domain = config["regularizer"].get("j_domain", "all")
    j_norm = J_NORM[j_domain]
    if j_domain == "measured" and regularizer.terms:
        reg_text += ", ||J|| on the measured entries only (J P)"
    if regularizer.targets:
        reg_text += ", aiming at " + ", ".join(f"max {'||J A||' if t == 'sja' else j_norm} <= {b:g}"
                                                for t, b in regularizer.targets.items())
    if regularizer.every > 1 and regularizer.terms:
        reg_text += f", evaluated every {regularizer.every} steps with weights x {regularizer.every}"
    if config["regularizer"].get("preset") is not None and regularizer.terms:
        reg_text += f" (preset {config['regularizer']['preset']}: " + ", ".join(
            f"{k} {v}" for k, v in config["regularizer"]["options"].items()) + ")"
    warm = [t for t in regularizer.terms if hasattr(t, "store_bytes")]  # spectral terms keep a vector per sample
    store = sum(t.store_bytes(len(exp.train_set), tuple(op.out_shape)) for t in warm)
    if store > 2**30:
        reg_text += (f"; its warm-start store (one {str(warm[0].store_dtype).replace('torch.', '')} vector per "
                     f"training sample) will take {store / 2**30:.1f} GiB of memory")
    n = torch.get_num_threads()
    threads = f", {n} thread{'' if n == 1 else 's'}" if device.type == "cpu" else ""
    rows = [("data", f"{exp.data_note}: {counts}"),
            ("operator", f"{type(op).__name__} {tuple(op.in_shape)} -> {tuple(op.out_shape)}, {norm}"),
            ("noise", f"{noise_text} ({noise['noise_mode']} draws)"),
            ("augmentation", ", ".join(exp.augment.names) + " (per sample and epoch)" if exp.augment else "none"),
            ("model", f"{config['model']['name']}, {count_parameters(exp.model):,} parameters"),
            ("regulariser", reg_text),
            ("training", f"{config['train']['epochs']} epochs, batch {config['train']['batch_size']}, "
                         f"lr {config['train']['lr']:g}, seed {config['seed']}"),
            ("device", f"{device}{threads}" + (f"; {allocator}" if allocator else "")),
            ("run directory", str(run_dir))]
    return "\n".join(f"  {k:<13} {v}" for k, v in rows)


def epoch_line(row: dict, epochs: int) -> str:
    """'epoch 10/200  train loss 2.3100  test PSNR 21.20 dB  GE 0.0410  max||JA|| 3.200  5.1 s' (val PSNR too
    when there is a validation split; only the loss and time for an epoch that was not evaluated)."""
    parts = [f"epoch {row['epoch'] + 1}/{epochs}", f"train loss {row['train_loss_running']:.4f}"]
    if "test_psnr" in row:
        parts += [f"test PSNR {row['test_psnr']:.2f} dB", f"GE {row['ge']:.4f}", f"max||JA|| {row['probe_max_sja']:.3f}"]
        if "val_psnr" in row:
            parts.insert(2, f"val PSNR {row['val_psnr']:.2f} dB")
    parts.append(f"{row['seconds']:.1f} s")
    return "  ".join(parts)

