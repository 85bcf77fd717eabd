import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_reproduce_quick_fills_the_cache_and_reuses_it(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "reproduce.py"), "--quick", "--study", "q",
           "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "--workdir", str(tmp_path / "runs")]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, cwd=ROOT)
    assert first.returncode == 0, first.stderr[-2000:]
    assert len(list((tmp_path / "cache").glob("*.json"))) == 4 * 2
    table = (tmp_path / "out" / "cs_q-quick.md").read_text()
    assert table.count("| sja+sj |") == 4 and (tmp_path / "out" / "cs_q-quick.png").exists()
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert second.returncode == 0 and (tmp_path / "out" / "cs_q-quick.md").read_text() == table
    assert not any((tmp_path / "runs").glob("*/curves.png")) or len(list((tmp_path / "runs").iterdir())) == 8
