"""Epoch time of train.py end to end: a plain run against the Jacobian penalty as configs ship it and as the
"fast" preset, for cs_unrolled and mri_4x_varnet.

    python benchmarks/epoch_time.py                       # CPU (benchmarks/results/epoch_time.json)
    python benchmarks/epoch_time.py --device cuda          # a GPU (epoch_time_cuda.json)
    python benchmarks/epoch_time.py --epochs 3 --configs cs_unrolled --extra data.n_train=100 --out F

Each setting is one train.py process, alone, of ``--epochs`` epochs evaluated only at the last, so the
earlier epochs' seconds (metrics.json) are training alone: the first (every sample of the penalty's bank is
cold: with ``every`` = k the bank fills over several epochs) and the median of the others.  Ratios are to
the plain run of the same config; processes minutes apart drift by up to 15 % on this CPU (docs/cost.md).
Settings (SETTINGS): plain (regularizer.name=none); sja+sj as cs_unrolled ships it (every step, the
estimator's defaults: preset "exact"); sja+sj with preset "fast".
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "epoch_time.json"
CONFIGS = ("cs_unrolled", "mri_4x_varnet")
SETTINGS = {"plain": ("regularizer.name=none",),
            "sja+sj, exact (as shipped)": ("regularizer.name=sja+sj", "regularizer.preset=exact"),
            "sja+sj, fast": ("regularizer.name=sja+sj", "regularizer.preset=fast")}


def epoch_seconds(config: str, overrides: tuple, epochs: int, device: str, timeout: float) -> list[float]:
    """Seconds of each epoch of one train.py run (the last one includes its evaluation)."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        cmd = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / f"{config}.yaml"),
               *overrides, f"train.epochs={epochs}", f"train.eval_every={epochs}", f"train.device={device}",
               "--run-dir", str(run_dir), "--no-progress"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=dict(os.environ))
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        return [row["seconds"] for row in json.loads((run_dir / "metrics.json").read_text())]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (>= 3: a first, a later, an evaluated)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per train.py run")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--extra", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides for every run (e.g. a smaller data set for a quick check)")
    args = parser.parse_args()
    if args.epochs < 3:
        parser.error(f"--epochs must be >= 3 (a first epoch, a later one and the evaluated last), got {args.epochs}")
    out = args.out or (RESULTS.with_name("epoch_time_cuda.json") if args.device != "cpu" else RESULTS)
    rows = []
    for config in args.configs:
        for label, overrides in SETTINGS.items():
            seconds = epoch_seconds(config, (*overrides, *args.extra), args.epochs, args.device, args.timeout)
            later = statistics.median(seconds[1:-1])
            rows.append({"config": config, "setting": label, "overrides": list(overrides), "epoch_seconds": seconds,
                         "first_s": seconds[0], "later_s": later})
            print(f"{config:14s} {label:28s} first {seconds[0]:7.2f} s  later {later:7.2f} s", flush=True)
    plain = {r["config"]: r["later_s"] for r in rows if r["setting"] == "plain"}
    print(f"\n| config | setting | epoch (s) | / plain | first epoch / later |\n| --- | --- | ---: | ---: | ---: |")
    for r in rows:
        r["ratio"] = r["later_s"] / plain[r["config"]]
        r["first_over_later"] = r["first_s"] / r["later_s"]
        print(f"| {r['config']} | {r['setting']} | {r['later_s']:.2f} | {r['ratio']:.2f}x | {r['first_over_later']:.2f}x |")
    out.parent.mkdir(parents=True, exist_ok=True)
    import torch  # noqa: WPS433 (only for the record)
    out.write_text(json.dumps({"device": args.device if args.device == "cpu" else torch.cuda.get_device_name(args.device),
                               "torch": torch.__version__, "epochs": args.epochs, "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
