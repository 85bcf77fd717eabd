import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import reproduce  # noqa: E402


def run_quick(tmp_path, *studies, timeout=3600):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "reproduce.py"), "--quick", "--jobs", "2", "--study", *studies,
           "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "--workdir", str(tmp_path / "runs")]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_run_keys_follow_the_resolved_config_not_the_override_order():
    a = reproduce.run_key(["seed=1", "noise.radius=0.3"])
    assert a == reproduce.run_key(["noise.radius=0.3", "seed=1"]) == reproduce.run_key(["seed=1"])  # 0.3 is cs.yaml's
    assert a != reproduce.run_key(["seed=2"]) != reproduce.run_key(["seed=1"], config="denoise")


def test_the_sweeps_share_the_central_runs_and_its_kappa_choice():
    plan = reproduce.Plan({n: reproduce.STUDIES[n] for n in ("central", "q", "m")}, quick=False)
    candidates = plan.candidates()
    keys = lambda jobs: [reproduce.run_key(o, c) for c, o, _ in jobs]  # noqa: E731
    assert keys(candidates[("q", 160, "sja+sj")]) == keys(candidates[("central", 0.3, "sja+sj")])
    assert keys(candidates[("m", 800, "sja+sj")]) == keys(candidates[("central", 0.3, "sja+sj")])
    assert len(candidates[("q", 80, "sj")]) == len(reproduce.KAPPAS) and ("q", 80, "none") not in candidates
    chosen = {point: 2.0 for point in candidates}
    finals = plan.finals("m", reproduce.STUDIES["m"], chosen, (0, 1, 2))
    config, overrides, _ = finals[(200, "fja+fj")][2]
    assert {"data.n_train=200", "seed=2", "train.epochs=200", "regularizer.kappa=2.0"} <= set(overrides)
    assert "regularizer.kappa=2.0" not in finals[(200, "none")][0][1]
    del chosen[("m", 400, "sj")]  # candidates not all trained yet: that point waits
    assert (400, "sj") not in plan.finals("m", reproduce.STUDIES["m"], chosen, (0,))


def test_the_fine_kappa_grid_adds_only_the_half_decades_to_the_q_runs():
    plan = reproduce.Plan({n: reproduce.STUDIES[n] for n in ("q", "q_fine")}, quick=False)
    candidates = plan.candidates()
    keys = lambda jobs: [reproduce.run_key(o, c) for c, o, _ in jobs]  # noqa: E731
    fine, coarse = keys(candidates[("q_fine", 640, "sj")]), keys(candidates[("q", 640, "sj")])
    assert ("q_fine", 640, "fja+fj") not in candidates
    assert len(fine) == 5 and set(coarse) < set(fine)
    assert [k for c, o, _ in candidates[("q_fine", 640, "sj")] for k in o if k.startswith("regularizer.kappa=")] == [
        "regularizer.kappa=20.0", "regularizer.kappa=6.3", "regularizer.kappa=2.0", "regularizer.kappa=0.63",
        "regularizer.kappa=0.2"]
    assert len(reproduce.Plan({"q_fine": reproduce.STUDIES["q_fine"]}, quick=True).candidates()[("q_fine", 320, "sja+sj")]) == 2


@pytest.mark.parametrize("name", ["denoise", "mri", "sr"])
def test_every_imaging_point_builds(name):
    from jacinv.experiment import build_experiment

    study = reproduce.STUDIES[name]
    plan = reproduce.Plan({name: study}, quick=False)
    chosen = {point: 20.0 for point in plan.candidates()}
    finals = plan.finals(name, study, chosen, (0,))
    for value in dict.fromkeys(value for value, _ in finals):  # the regulariser does not change the data
        config, overrides, _ = finals[(value, study.regularizers[-1])][0]
        exp = build_experiment(reproduce.resolve(overrides, config))
        assert len(exp.train_set) == reproduce.resolve(overrides, config)["data"]["n_train"]


@pytest.mark.slow
def test_reproduce_quick_fills_the_cache_and_reuses_it(tmp_path):
    first = run_quick(tmp_path, "q")
    assert first.returncode == 0, first.stderr[-2000:]
    # 4 values x (none, sja+sj at two kappas); every sja+sj final run is its chosen candidate
    cached = [p.name for p in (tmp_path / "cache").glob("*.json")]
    assert len([n for n in cached if not n.endswith("-tv.json")]) == 4 * 3
    assert len([n for n in cached if n.endswith("-tv.json")]) == 4  # the TV reference: one per value and seed
    table = (tmp_path / "out" / "cs_q-quick.md").read_text()
    assert table.count("| sja+sj |") == 4 and (tmp_path / "out" / "cs_q-quick.png").exists()
    assert table.count("| TV (classical) | mu ") == 4
    tuning = (tmp_path / "out" / "cs_q-quick_tuning.md").read_text()
    assert tuning.count("| sja+sj |") == 4
    second = run_quick(tmp_path, "q", timeout=600)
    assert second.returncode == 0 and "to train" not in second.stdout
    assert (tmp_path / "out" / "cs_q-quick.md").read_text() == table


@pytest.mark.slow
def test_reproduce_quick_mri_study_reports_the_zero_filled_baseline(tmp_path):
    done = run_quick(tmp_path, "mri")
    assert done.returncode == 0, done.stderr[-2000:]
    mri = (tmp_path / "out" / "mri-quick.md").read_text()
    assert mri.count("| adjoint |") == 4 and mri.count("| sja+sj |") == 2 * 4  # both tables
    assert mri.count("| tv(mu=") == 4
    assert (tmp_path / "out" / "mri-quick_ge.png").exists()
    rows = json.loads((tmp_path / "out" / "mri-quick.json").read_text())
    assert [r["mri"] for r in rows[::2]] == ["4x random", "4x equispaced", "8x random", "8x equispaced"]
    assert all(r["kappa"] is None and len(r["curves"][0]["ge"]) == 1 for r in rows)  # Algorithm 4, kappa 20


def test_refresh_tables_replaces_marked_blocks_only(tmp_path):
    (tmp_path / "a.md").write_text("| new |\n")
    doc = tmp_path / "results.md"
    doc.write_text("text\n<!-- table a.md -->\n| old |\n<!-- end table -->\nmore\n<!-- table b.md -->\nx\n<!-- end table -->\n")
    reproduce.refresh_tables(doc, tmp_path)
    assert doc.read_text() == ("text\n<!-- table a.md -->\n| new |\n<!-- end table -->\nmore\n"
                               "<!-- table b.md -->\n(not run yet: b.md)\n<!-- end table -->\n")


def test_report_table_lists_every_classical_method_once_per_point():
    metrics = lambda p: {"psnr": p, "ssim": 0.5, "nmse": 0.1, "volume_nmse": 0.01, "generalisation_gap": 0.2}  # noqa: E731
    report = {"network": metrics(30.0), "adjoint": metrics(20.0), "tv(mu=0.01)": metrics(25.0)}
    rows = [{"mri": "4x random", "regularizer": reg, "report": report} for reg in ("none", "sja+sj")]
    lines = reproduce.report_markdown(rows, "mri").splitlines()[2:]
    assert [line.split(" | ")[1] for line in lines] == ["adjoint", "tv(mu=0.01)", "none", "sja+sj"]
    assert "| 25.00 | 0.500 | 0.0100 |" in lines[1]
