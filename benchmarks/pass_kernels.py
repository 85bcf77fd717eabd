"""Kernels (and operators) of each kind of pass the spectral penalty runs, on two rows of a cost case.

    python benchmarks/pass_kernels.py                       # every case of jacobian_cost.py
    python benchmarks/pass_kernels.py --cases unrolled-cs

Counts from ``jacinv.dispatch_count.DispatchCount`` (they do not depend on the machine's load), at
initialisation, on the first two training measurements of the case: a plain forward and a plain training
pass (forward and backward), a forward-mode (dual) pass, the differentiable value (a dual pass with a graph
and the backward of its norm), and one power step with forward-mode and with finite-difference products.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import jacobian_cost  # noqa: E402  (the cases)

from jacinv.dispatch_count import DispatchCount  # noqa: E402
from jacinv.regularizers.products import JacobianProducts  # noqa: E402

ROWS = 2


def passes(f, y: torch.Tensor, t: torch.Tensor) -> dict:
    """The passes to count: name -> a function running it once on rows y with tangent t."""
    def power_step(mode):
        products = JacobianProducts(f, y, mode)
        products.vjp(products.jvp(t))

    def value():
        JacobianProducts(f, y, "forward").jvp(t, create_graph=True).flatten(1).norm(dim=1).sum().backward()

    return {"plain forward": lambda: f(y), "plain forward + backward": lambda: f(y).sum().backward(),
            "dual (forward-mode) pass": lambda: JacobianProducts(f, y, "forward").jvp(t),
            "differentiable value + backward": value,
            "power step, forward mode": lambda: power_step("forward"),
            "power step, finite differences": lambda: power_step("finite_difference")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", default=list(jacobian_cost.CASES), choices=list(jacobian_cost.CASES))
    args = parser.parse_args()
    print("| case | pass (2 rows) | kernels | operators |\n| --- | --- | ---: | ---: |")
    for case in args.cases:
        trainer = jacobian_cost.Trainer(case, "plain")
        y = trainer.y[:ROWS]
        t = torch.randn(y.shape, generator=torch.Generator().manual_seed(0)).to(y)
        for name, run in passes(trainer.f, y, t).items():
            with DispatchCount() as count:
                run()
            print(f"| {case} | {name} | {count.kernels} | {count.operators} |", flush=True)


if __name__ == "__main__":
    main()
