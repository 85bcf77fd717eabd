"""Train a reconstruction network with (model-aware) Jacobian regularisation.

    python train.py                                   # the default: CS on embedded data, ~2 min on 2 CPU cores
    python train.py --config configs/sr_x2.yaml train.epochs=5 regularizer.name=sja
    python train.py --resume runs/cs                  # continue an interrupted run
    python train.py --config configs/cs.yaml --sweep regularizer.name=none,wd,sja+sj
    torchrun --nproc_per_node=2 train.py --config configs/cs.yaml   # DistributedDataParallel
"""
import sys

from jacinv.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
