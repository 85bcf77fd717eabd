"""Worst-case stability of reconstructions: how far f(y + e) can move from f(y) when ||e|| <= r.

In the spirit of Antun et al. (PNAS 2020, "On instabilities of deep learning in image
reconstruction"): for each measurement a perturbation e in the l2 ball of radius r is found by
projected gradient ascent on ||f(y + e) - f(y)||, and the output change and the PSNR drop are
reported against r, beside those of a random e of the same norm.  A Jacobian penalty bounds the
first-order part of that change (||f(y + e) - f(y)|| <= ||J(y)|| r + o(r)).

``evaluate.py RUN --stability`` writes stability.json and stability.png into the run.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch

from ._checks import finite_number, positive_int
from .checkpoint import write_json
from .classical import TV_ITERS, weighted_methods, weighted_name
from .evaluation import image_metrics, samples_asked
from .regularizers import J_NORM
from .regularizers.norms import normalise, per_sample_norm, random_unit_vectors

RADIUS_FACTORS = (0.5, 1.0, 2.0, 4.0)          # of the run's noise radius
RELATIVE_RADII = (0.01, 0.02, 0.05, 0.1)       # of the mean ||y||, for noiseless runs
STEP = 1.0                                     # ascent step, in units of the radius
TV_ATTACK_BYTES = 4 * 2**30                    # memory one pass of the attack on TV may hold
TV_SAVED_COPIES = 6                            # float32 copies of (y_i, x_i) its graph keeps per TV iteration


def tv_attack_rows(operator, samples: int, budget: int = TV_ATTACK_BYTES) -> int:
    """Samples per pass of the attack on TV: all ``samples`` when their autograd graph (TV_ITERS iterations, each
    keeping about TV_SAVED_COPIES float32 copies of a measurement and an image per sample) fits ``budget`` bytes,
    else as many as fit, at least 1 (multi-coil k-space: a few).  Passes stop TV on their own samples' steps."""
    per_sample = 4 * TV_SAVED_COPIES * TV_ITERS * (math.prod(operator.out_shape) + math.prod(operator.in_shape))
    return max(1, min(samples, budget // per_sample))


def worst_case_perturbation(reconstruct, y: torch.Tensor, radius: float, steps: int = 20,
                            generator: torch.Generator | None = None, rows: int | None = None,
                            measured=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(e (B, *y_shape) with ||e_i|| <= radius, ||f(y_i + e_i) - f(y_i)|| (B,)): projected gradient ascent
    from a random point of the sphere, ``steps`` normalised-gradient steps of STEP x radius, each projected
    back onto the ball, the best iterate kept per sample (for a linear map: a power iteration).
    ``rows``: samples attacked per pass (memory grows with it; the result does not depend on it).
    ``measured(e, y)``: the part of e a real measurement can take (``LinearOperator.at(y).measured_part``: for
    k-space masks the sampled positions); the attack stays in it.  None: every entry."""
    radius = finite_number(radius, "radius", low=0.0, low_open=True)
    positive_int(steps, "steps")
    start = radius * random_directions(y, generator, measured)
    rows = y.shape[0] if rows is None else positive_int(rows, "rows")
    parts = [_ascent(reconstruct, y[k: k + rows], start[k: k + rows], radius, steps, measured or _every_entry)
             for k in range(0, y.shape[0], rows)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _every_entry(e: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return e


def random_directions(y: torch.Tensor, generator: torch.Generator | None, measured=None) -> torch.Tensor:
    """Random unit vectors (B, *y_shape), one per measurement, in the part ``measured(e, y)`` keeps (None: every
    entry)."""
    e = random_unit_vectors(y.shape, y, generator)
    return e if measured is None else normalise(measured(e, y))


def _ascent(reconstruct, y: torch.Tensor, e: torch.Tensor, radius: float, steps: int, measured):
    """worst_case_perturbation from the start points ``e`` (B, *y_shape) on the sphere."""
    with torch.no_grad():
        base = reconstruct(y)
    best_e, best = e.clone(), torch.full((y.shape[0],), -1.0, dtype=y.dtype, device=y.device)
    for k in range(steps + 1):
        e = e.detach().requires_grad_(k < steps)
        with torch.enable_grad():
            change = per_sample_norm(reconstruct(y + e) - base)
        with torch.no_grad():
            better = change > best
            best_e[better], best[better] = e[better], change[better]
        if k == steps:
            break
        (grad,) = torch.autograd.grad(change.sum(), e)
        with torch.no_grad():
            e = e + (STEP * radius) * normalise(measured(grad, y))
            e = e * (radius / per_sample_norm(e)).clamp(max=1.0).view(-1, *[1] * (e.dim() - 1))
    return best_e.detach(), best.detach()


def default_radii(noise_radius: float, y: torch.Tensor) -> tuple[float, ...]:
    """Multiples of the noise radius (RADIUS_FACTORS), or fractions of the mean ||y|| when there is no noise."""
    if noise_radius > 0:
        return tuple(f * noise_radius for f in RADIUS_FACTORS)
    scale = float(per_sample_norm(y).mean())
    return tuple(f * scale for f in RELATIVE_RADII)


def stability_curves(methods: dict, y: torch.Tensor, x: torch.Tensor, radii, steps: int = 20,
                     seed: int = 0, attack_rows: dict | None = None, measured=None) -> tuple[dict, dict]:
    """For each method {name: reconstruct}, per radius: mean and max output change under the worst-case
    and a random perturbation, mean PSNR at y and at y + e (worst case), mean PSNR drop.
    Returns (curves {name: [row per radius]}, worst {name: (x, f(y), f(y + e)) of the sample with the
    largest change at the largest radius}).  ``attack_rows``: {name: samples per attack pass} for the methods
    attacked a few samples at a time (the others see the whole batch); TV's stopping rule is per pass.
    ``measured``: see ``worst_case_perturbation``; the random perturbation is drawn in the same part."""
    attack_rows = attack_rows or {}
    unknown = sorted(set(attack_rows) - set(methods))
    if unknown:
        raise ValueError(f"attack_rows names methods {unknown} that are not among methods {list(methods)}")
    curves, worst = {}, {}
    for name, reconstruct in methods.items():
        with torch.no_grad():
            clean = reconstruct(y)
        psnr_clean = image_metrics(x, clean)["psnr"]
        rows = []
        for radius in radii:
            e, change = worst_case_perturbation(reconstruct, y, radius, steps, torch.Generator().manual_seed(seed),
                                                attack_rows.get(name), measured)
            with torch.no_grad():
                perturbed = reconstruct(y + e)
                random_e = radius * random_directions(y, torch.Generator().manual_seed(seed + 1), measured)
                random_change = per_sample_norm(reconstruct(y + random_e) - clean)
            psnr = image_metrics(x, perturbed)["psnr"]
            rows.append({"radius": float(radius), "change_mean": float(change.mean()), "change_max": float(change.max()),
                         "random_change_mean": float(random_change.mean()), "psnr_clean": float(np.mean(psnr_clean)),
                         "psnr_perturbed": float(np.mean(psnr)), "psnr_drop": float(np.mean(psnr_clean - psnr)),
                         "psnr_drop_max": float(np.max(psnr_clean - psnr))})
            if radius == max(radii):
                i = int(change.argmax())
                worst[name] = (x[i], clean[i], perturbed[i])
        curves[name] = rows
    return curves, worst


def stability_report(run_dir, overrides=(), radii=None, n_samples: int | None = None, steps: int = 20,
                     classical: bool = True, device: str | None = None) -> dict:
    """Worst-case stability of the run's network and, with ``classical``, of TV (the run's cached weight) on
    the first ``n_samples`` test measurements (default: 16, or all when fewer), the network attacked a training
    batch at a time and TV as many as its memory budget allows (``tv_attack_rows``), each perturbation confined
    to the entries a measurement carries (for k-space masks: the sampled positions;
    ``LinearOperator.measured_part``); writes stability.json and stability.png into ``run_dir``.  TV's curve does not depend on the network, so a
    study of many nets on one test set needs it once.  The network runs on ``device`` (default: the run's)."""
    from .report import _weights, load_run

    run_dir = Path(run_dir)
    config, exp, model, state = load_run(run_dir, overrides, device)
    n_samples = samples_asked(n_samples, len(exp.test_set), default=16, flag="--stability-samples")
    y, x = exp.test_set.pairs(torch.arange(n_samples))
    if radii is None:
        radii = default_radii(float(config["noise"]["radius"]), y)
    radii = tuple(finite_number(r, "radius", low=0.0, low_open=True) for r in radii)
    methods = {"network": model}
    attack_rows = {"network": config["train"]["batch_size"]}
    weights = _weights(exp.operator, exp.train_set, config, run_dir)
    if classical and "tv" in weights:
        mu, grid = weights["tv"]
        tv = weighted_name("tv", mu, grid)
        methods[tv] = functools.partial(weighted_methods(exp.operator)["tv"], mu=mu)
        attack_rows[tv] = tv_attack_rows(exp.operator, len(y))
    for p in model.parameters():
        p.requires_grad_(False)
    curves, worst = stability_curves(methods, y, x, radii, steps, seed=int(config["seed"]),
                                     attack_rows=attack_rows,
                                     measured=lambda e, y: exp.operator.at(y).measured_part(e))
    report = {"run_dir": str(run_dir), "data": exp.data_note, "device": state["device"], "samples": int(y.shape[0]), "steps": steps,
              "noise_radius": float(config["noise"]["radius"]), "target_j": config["regularizer"]["target_j"],
              "j_domain": config["regularizer"]["j_domain"], "curves": curves}
    write_json(report, run_dir / "stability.json")
    _figure(curves, worst, run_dir / "stability.png")
    return report


def stability_table(report: dict) -> str:
    """One line per method and radius: worst-case and random output change, PSNR at y and y + e."""
    lines = [f"{'method':<24} {'radius':>8} {'||f(y+e)-f(y)||':>16} {'max / r':>8} {'random e':>9} {'PSNR(y)':>8} "
             f"{'PSNR(y+e)':>10} {'drop':>6}"]
    for name, rows in report["curves"].items():
        for r in rows:
            lines.append(f"{name:<24} {r['radius']:8.4g} {r['change_mean']:16.4f} {r['change_max'] / r['radius']:8.3f} "
                         f"{r['random_change_mean']:9.4f} {r['psnr_clean']:8.2f} {r['psnr_perturbed']:10.2f} "
                         f"{r['psnr_drop']:6.2f}")
    bound = report.get("target_j")
    if bound is not None:
        smallest = min(report["curves"]["network"], key=lambda r: r["radius"])
        ratio = smallest["change_max"] / smallest["radius"]
        norm = J_NORM[report.get("j_domain", "all")]
        lines.append(f"\nthe run's target max {norm} <= {bound:g} bounds ||f(y+e) - f(y)|| / r to first order (small r); "
                     f"measured: {ratio:.3f} at the smallest radius ({'within' if ratio <= bound else 'ABOVE'} it)")
    return "\n".join(lines)


def _figure(curves: dict, worst: dict, path: Path) -> None:
    """Output change and PSNR drop against the radius (worst case solid, random dashed), and the sample
    with the largest change at the largest radius for each method."""
    from .plots import plt, save_figure, show_image

    names = list(curves)
    fig = plt.figure(figsize=(12, 3.4 * (1 + len(names))))
    grid = fig.add_gridspec(1 + len(names), 3)
    ax_change, ax_drop = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    for name in names:
        rs = [r["radius"] for r in curves[name]]
        line, = ax_change.plot(rs, [r["change_mean"] for r in curves[name]], marker="o", label=f"{name}, worst case")
        ax_change.plot(rs, [r["random_change_mean"] for r in curves[name]], ls="--", color=line.get_color(),
                       label=f"{name}, random")
        ax_drop.plot(rs, [r["psnr_drop"] for r in curves[name]], marker="o", label=name)
    ax_change.set(xlabel="perturbation radius r = ||e||", ylabel="mean ||f(y+e) - f(y)||")
    ax_drop.set(xlabel="perturbation radius r = ||e||", ylabel="mean PSNR drop (dB)")
    ax_change.legend(fontsize=7)
    for row, name in enumerate(names, start=1):
        x, clean, perturbed = (t.detach().cpu() for t in worst[name])
        for col, (image, title) in enumerate(((x, "ground truth"), (clean, f"{name}: f(y)"),
                                              (perturbed, f"{name}: f(y + e), worst e"))):
            show_image(fig.add_subplot(grid[row, col]), image, title)
    fig.tight_layout()
    save_figure(fig, path)
