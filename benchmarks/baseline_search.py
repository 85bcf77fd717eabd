"""Time of evaluate.py's weight search for TV, before and after the widening decade search with early stopping.

    python benchmarks/baseline_search.py          # about 10 minutes on 2 CPU cores

For each case, on the 32 training pairs evaluate.py fits on:
  grid        the previous search: TV at 1e-4 ... 1 (five decades), 300 iterations each
  search      classical.search_weight: the decades, widened at an edge, then half-decade neighbours,
              TV stopping at its tolerance (1e-5 relative step)
and then the test PSNR of TV at each chosen weight (the reconstruction as evaluate.py runs it).
Prints the times, their ratio and the PSNR difference; writes benchmarks/results/baseline_search.json.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from jacinv.classical import TV_WEIGHTS, best_weight, search_weight, tv_reconstruction
from jacinv.config import load_config
from jacinv.evaluation import image_metrics
from jacinv.experiment import build_experiment

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "mri_4x (MNI152 112 x 96)": ("mri_4x", []),
    "mri_4x (MNI152 224 x 192)": ("mri_4x", ["data.downsample=1"]),
    "sr_x2 (64 x 64 patches)": ("sr_x2", []),
}


def run_case(config_name: str, overrides: list[str], n_fit: int = 32) -> dict:
    exp = build_experiment(load_config(ROOT / "configs" / f"{config_name}.yaml", overrides))
    train_y, train_x = exp.train_set.pairs(torch.arange(n_fit))
    test_y, test_x = exp.test_set.pairs(torch.arange(len(exp.test_set)))
    with torch.no_grad():
        t0 = time.perf_counter()
        old = best_weight(lambda ys, mu: tv_reconstruction(exp.operator, ys, mu, tol=0.0), TV_WEIGHTS, train_y, train_x)
        t_grid = time.perf_counter() - t0
        t0 = time.perf_counter()
        new, tried = search_weight(lambda ys, mu: tv_reconstruction(exp.operator, ys, mu), train_y, train_x)
        t_search = time.perf_counter() - t0
        score = lambda mu, tol: float(np.mean(image_metrics(test_x, tv_reconstruction(  # noqa: E731
            exp.operator, test_y, mu, tol=tol))["psnr"]))
        psnr_old, psnr_new = score(old, 0.0), score(new, 1e-5)
    return {"grid_s": t_grid, "search_s": t_search, "speed-up": t_grid / t_search, "grid_weight": old,
            "search_weight": new, "weights_tried": len(tried), "grid_test_psnr": psnr_old,
            "search_test_psnr": psnr_new}


def main() -> None:
    torch.set_num_threads(2)
    rows = {name: run_case(*case) for name, case in CASES.items()}
    print(f"{'case':<28} {'grid (s)':>9} {'search (s)':>10} {'speed-up':>9} {'weights':>15} {'test PSNR (dB)':>16}")
    for name, r in rows.items():
        print(f"{name:<28} {r['grid_s']:>9.1f} {r['search_s']:>10.1f} {r['speed-up']:>8.2f}x "
              f"{r['grid_weight']:>7.2g} {r['search_weight']:>7.2g} {r['grid_test_psnr']:>8.2f} {r['search_test_psnr']:>7.2f}")
    out = ROOT / "benchmarks" / "results" / "baseline_search.json"
    out.write_text(json.dumps(rows, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
