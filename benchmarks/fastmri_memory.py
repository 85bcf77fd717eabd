"""Peak memory of a fastMRI training run against the number of files: it should stay flat.

    python benchmarks/fastmri_memory.py                    # 10 and 40 files (about 4 minutes on 2 CPU cores)
    python benchmarks/fastmri_memory.py --files 10 40 160
    python benchmarks/fastmri_memory.py --coils 8          # multi-coil files (writes fastmri_memory_multicoil.json)

For each count, fastMRI-schema single-coil files (``--slices`` slices of ``--kspace`` k-space, the
target a centre crop) are written to a temporary folder, and a fresh process trains one epoch on every
slice of them (measured k-space, a mask per volume, U-Net on the zero-filled magnitude, 2 DataLoader
workers) and evaluates it; the process reports its peak resident memory (ru_maxrss, workers included).
With ``--coils`` the files are multi-coil ((slices, coils, H, W) k-space, RSS targets) and the run is
operator multicoil_kspace (each slice's mask and ACS coil maps), the U-Net on the RSS of the zero-filled coil
images, with SENSE and SENSE-TV in the evaluation.
Prints the table and writes benchmarks/results/fastmri_memory.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

WORKER = """
import resource, sys, torch
torch.set_num_threads(1)
from jacinv.config import load_config
from jacinv.training import train
from jacinv.report import evaluate_run
root, run, crop, coils = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
config = load_config(None, [
    "data.source=fastmri", f"data.train_root={root}/train", f"data.test_root={root}/test", "data.kspace=measured",
    f"data.patch_size={crop}", "data.n_train=null", "data.n_test=null", "noise.kind=none",
    f"operator.name={'multicoil_kspace' if coils else 'kspace'}", "operator.kwargs={acceleration: 4}", "model.name=unet",
    "model.kwargs={input: magnitude, chans: 8, num_pool_layers: 2}", "regularizer.name=none",
    "train.epochs=1", "train.batch_size=8", "train.num_workers=2", "train.probe_size=2", "train.probe_iters=2"])
train(config, run, progress=False)
evaluate_run(run)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print("PEAK_KB", peak)
"""


def measure(n_files: int, slices: int, kspace: tuple[int, int], crop: int, coils: int | None = None) -> dict:
    import fastmri_files

    fastmri_files.CROP = crop
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for split, count in (("train", n_files), ("test", 2)):
            (root / split).mkdir()
            for v in range(count):
                fastmri_files.write_volume(root / split / f"{split}{v:03d}.h5", seed=v, slices=slices, coils=coils,
                                           shape=kspace)
        size_mb = sum(p.stat().st_size for p in root.rglob("*.h5")) / 2**20
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", WORKER, str(root), str(root / "run"), str(crop), str(coils or 0)],
                             capture_output=True, text=True, check=True)
        peak_kb = int(next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("PEAK_KB")))
    return {"files": n_files, "slices": n_files * slices, "data_mb": size_mb, "peak_rss_mb": peak_kb / 1024,
            "seconds": time.perf_counter() - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, nargs="+", default=[10, 40])
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--kspace", type=int, nargs=2, default=[320, 184], metavar=("H", "W"))
    parser.add_argument("--crop", type=int, default=160)
    parser.add_argument("--coils", type=int, default=None, help="multi-coil files with this many coils")
    args = parser.parse_args()
    rows = [measure(n, args.slices, tuple(args.kspace), args.crop, args.coils) for n in args.files]
    print(f"{'files':>6} {'slices':>7} {'data (MB)':>10} {'peak RSS (MB)':>14} {'time (s)':>9}")
    for r in rows:
        print(f"{r['files']:>6} {r['slices']:>7} {r['data_mb']:>10.1f} {r['peak_rss_mb']:>14.1f} {r['seconds']:>9.1f}")
    ratio = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    print(f"peak memory ratio {rows[-1]['files']} / {rows[0]['files']} files: {ratio:.3f} "
          f"(data ratio {rows[-1]['data_mb'] / rows[0]['data_mb']:.1f})")
    out = HERE / "results" / f"fastmri_memory{'_multicoil' if args.coils else ''}.json"
    out.write_text(json.dumps({"args": vars(args), "rows": rows, "peak_ratio": ratio}, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
