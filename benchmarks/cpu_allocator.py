"""What keeping freed memory in the process (``jacinv.cpu_memory``, on by default) saves per CPU training step.

    python benchmarks/cpu_allocator.py            # the four cases of jacobian_cost.py, plain and sja+sj
    python benchmarks/cpu_allocator.py --cases dncnn5-blur-x2 --methods plain

Each (case, method, allocator) runs in a fresh process, alone on the machine: the training steps of
``jacobian_cost.Trainer`` (Adam, lr 1e-3) from initialisation, WARMUP untimed, then the case's timed
steps; "system" is glibc's default allocator, "kept" raises its mmap and trim thresholds as jacinv's
training loop does.  Prints the mean step time, the minor page faults per step, the speed-up, and
writes benchmarks/results/cpu_allocator.json.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch

from jacinv.checkpoint import write_json
from jacobian_cost import CASES, THREADS, TIMED_STEPS, Trainer

RESULTS = Path(__file__).parent / "results" / "cpu_allocator.json"
METHODS = {"plain": "plain", "sja+sj": "jacinv"}   # label: jacobian_cost method
ALLOCATORS = ("system", "kept")
WARMUP = 10


def worker(case: str, method: str, allocator: str) -> dict:
    """Mean step time (ms) and minor page faults per step over the timed steps."""
    t = Trainer(case, METHODS[method], keep_memory=allocator == "kept")
    for _ in range(WARMUP):
        t.step()
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = [t.step()[0] for _ in range(TIMED_STEPS[case])]
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    return {"case": case, "method": method, "allocator": allocator, "note": t.allocator,
            "step_ms": 1000 * sum(times) / len(times), "faults_per_step": faults / len(times)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", nargs=3, metavar=("CASE", "METHOD", "ALLOCATOR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return
    rows = []
    for case in args.cases:
        for method in args.methods:
            for allocator in ALLOCATORS:
                proc = subprocess.run([sys.executable, __file__, "--worker", case, method, allocator],
                                      capture_output=True, text=True, check=False)
                if proc.returncode:
                    print(proc.stderr, file=sys.stderr)
                    raise SystemExit(f"worker {case} {method} {allocator} failed")
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(f"{case:18s} {method:7s} {allocator:6s} {rows[-1]['step_ms']:8.1f} ms "
                      f"{rows[-1]['faults_per_step']:9.0f} faults/step", flush=True)
    print("\n| case | method | step, system (ms) | step, kept (ms) | speed-up | page faults / step, system / kept |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for system, kept in zip(rows[::2], rows[1::2]):
        print(f"| {system['case']} | {system['method']} | {system['step_ms']:.1f} | {kept['step_ms']:.1f} | "
              f"{system['step_ms'] / kept['step_ms']:.2f}x | {system['faults_per_step']:.0f} / {kept['faults_per_step']:.0f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json({"torch": torch.__version__, "threads": THREADS, "warmup": WARMUP, "rows": rows}, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
