"""Evaluate a trained run: test metrics beside classical baselines, a JSON report and figures.

    python evaluate.py runs/cs
    python evaluate.py runs/cs --bound                 # plus the generalisation bound
    python evaluate.py runs/sr_x2 data.root=/data/DIV2K_valid_HR data.source=folder
"""
import sys

from jacinv.cli import evaluate_main

if __name__ == "__main__":
    sys.exit(evaluate_main())
