import json
import subprocess
import sys

import gemmlab
from conftest import CPU_BACKENDS


def test_ladder_prints_every_backend_and_writes_json(tmp_path):
    path = tmp_path / "ladder.json"
    result = subprocess.run(
        [sys.executable, "-m", "gemmlab", "ladder", "--shape", "3", "17", "4", "--repeats", "3", "--json", str(path)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for name in CPU_BACKENDS:
        assert name in result.stdout
    assert "x loops" in result.stdout and "x torch" in result.stdout
    data = json.loads(path.read_text())
    assert data["shape"] == [3, 17, 4]
    assert set(data["results"]) >= set(CPU_BACKENDS)
    assert all(r["per_call"] > 0 for r in data["results"].values())


def test_info_json():
    result = subprocess.run([sys.executable, "-m", "gemmlab", "info", "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert [i["name"] for i in json.loads(result.stdout)] == [i["name"] for i in gemmlab.backend_info()]
