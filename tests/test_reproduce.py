import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def reproduce(tmp_path, *studies, timeout=3600):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "reproduce.py"), "--quick", "--jobs", "2", "--study", *studies,
           "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "--workdir", str(tmp_path / "runs")]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.slow
def test_reproduce_quick_fills_the_cache_and_reuses_it(tmp_path):
    first = reproduce(tmp_path, "q")
    assert first.returncode == 0, first.stderr[-2000:]
    # 4 values x (none, sja+sj at two kappas); every sja+sj final run is its chosen candidate
    assert len(list((tmp_path / "cache").glob("*.json"))) == 4 * 3
    table = (tmp_path / "out" / "cs_q-quick.md").read_text()
    assert table.count("| sja+sj |") == 4 and (tmp_path / "out" / "cs_q-quick.png").exists()
    tuning = (tmp_path / "out" / "cs_q-quick_tuning.md").read_text()
    assert tuning.count("| sja+sj |") == 4
    second = reproduce(tmp_path, "q", timeout=600)
    assert second.returncode == 0 and "to train" not in second.stdout
    assert (tmp_path / "out" / "cs_q-quick.md").read_text() == table


@pytest.mark.slow
def test_reproduce_quick_mri_study_reports_the_zero_filled_baseline(tmp_path):
    done = reproduce(tmp_path, "mri")
    assert done.returncode == 0, done.stderr[-2000:]
    mri = (tmp_path / "out" / "mri-quick.md").read_text()
    assert mri.count("| adjoint A^T y |") == 4 and mri.count("| sja+sj |") == 2 * 4  # both tables
    assert (tmp_path / "out" / "mri-quick_ge.png").exists()
    rows = json.loads((tmp_path / "out" / "mri-quick.json").read_text())
    assert [r["mri"] for r in rows[::2]] == ["4x random", "4x equispaced", "8x random", "8x equispaced"]
    assert all(r["kappa"] is None and len(r["curves"][0]["ge"]) == 1 for r in rows)  # Algorithm 4, kappa 20
