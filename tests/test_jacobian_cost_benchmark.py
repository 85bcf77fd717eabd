"""The cost benchmark's bookkeeping: error parts and the aggregation over training seeds."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import jacobian_cost  # noqa: E402


def checks(*triples):
    """Checks as the accuracy worker records them: {target: (estimate, batch max, norm where estimated)}."""
    return [{"sja": t, "sj": t} for t in triples]


def test_error_parts_add_up_to_the_error_of_each_check():
    pairs = checks((9.0, 10.0, 9.5), (9.8, 10.0, 10.0))  # the first: wrong sample and not converged
    parts = jacobian_cost.error_parts(pairs)
    assert parts["ranking"]["sja"] == pytest.approx(0.05) and parts["convergence"]["sja"] == pytest.approx(0.05)
    assert jacobian_cost.max_rel_error(pairs)["sja"] == pytest.approx(0.10)
    parts = jacobian_cost.error_parts(checks((9.8, 10.0, 10.0)))
    assert parts["ranking"]["sj"] == 0.0 and parts["convergence"]["sj"] == pytest.approx(0.02)


def test_errors_over_seeds_are_the_mean_with_the_worst_seed_beside():
    results = []
    for seed, estimate in enumerate((9.0, 9.6, 9.9)):
        early = checks((estimate, 10.0, 10.0))
        results.append({"case": "fc-cs", "method": "jacinv-lazy", "seed": seed, "step_ms": 10.0 + seed, "early": early,
                        "early_error": jacobian_cost.max_rel_error(early), "early_parts": jacobian_cost.error_parts(early)})
    row = jacobian_cost.over_seeds(results)
    assert row["early_error"]["sja"] == pytest.approx((0.10 + 0.04 + 0.01) / 3)
    assert row["early_error_worst"]["sj"] == pytest.approx(0.10)
    assert row["early_parts"]["convergence"]["sja"] == pytest.approx((0.10 + 0.04 + 0.01) / 3)
    assert row["step_ms"] == 10.0 and [r["seed"] for r in row["per_seed"]] == [0, 1, 2]
    assert jacobian_cost.over_seeds(results[:1]) == results[0]


def test_the_dispatch_worker_counts_a_plain_step_and_the_penalty_without_host_waits():
    row = jacobian_cost.dispatch_worker("fc-cs", "jacinv", "cpu", {})
    assert row["syncs_per_step"] == row["plain_syncs_per_step"] == 0
    assert row["ops_per_step"] > row["plain_ops_per_step"] > 0


def test_the_epoch_time_benchmark_reads_each_epochs_seconds(tmp_path):
    import epoch_time
    out = tmp_path / "epochs.json"
    argv = ["epoch_time.py", "--configs", "cs_unrolled", "--epochs", "3", "--out", str(out), "--extra",
            "data.n_train=20", "data.n_val=10", "data.n_test=10", "train.batch_size=10", "model.kwargs={iterations: 2}"]
    old, sys.argv = sys.argv, argv
    try:
        epoch_time.main()
    finally:
        sys.argv = old
    rows = json.loads(out.read_text())["rows"]
    assert [r["setting"] for r in rows] == list(epoch_time.SETTINGS)
    assert all(len(r["epoch_seconds"]) == 3 and r["later_s"] == r["epoch_seconds"][1] for r in rows)
    assert rows[0]["ratio"] == 1.0


def test_pass_kernels_counts_each_pass_and_forward_mode_costs_more_than_finite_differences():
    """pass_kernels.py's passes run and are counted: on a small unrolled net a dual pass launches more kernels
    than a plain forward, and a finite-difference power step fewer than a forward-mode one."""
    import torch

    import pass_kernels
    from jacinv.dispatch_count import DispatchCount
    from jacinv.models import build_model
    from jacinv.operators import GaussianCS

    op = GaussianCS((1, 6, 6), 12, seed=0)
    net = build_model("unrolled", op, iterations=2, depth=2, features=4)
    y = op(torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(0)))
    kernels = {}
    for name, run in pass_kernels.passes(net, y, torch.randn(y.shape, generator=torch.Generator().manual_seed(1))).items():
        with DispatchCount() as count:
            run()
        kernels[name] = count.kernels
    assert kernels["dual (forward-mode) pass"] > kernels["plain forward"] > 0
    assert kernels["plain forward + backward"] > kernels["plain forward"]
    assert kernels["differentiable value + backward"] > kernels["dual (forward-mode) pass"]
    assert kernels["power step, finite differences"] < kernels["power step, forward mode"]
