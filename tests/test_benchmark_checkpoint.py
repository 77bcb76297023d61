"""benchmarks/checkpoint.py runs at a tiny size and prints its two tables with every row and parseable numbers."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "checkpoint.py"

RESTORE_ROWS = [
    "safetensors.numpy load_file (baseline)",
    "safetensors.numpy load_file + jax.device_put, 1 device",
    "namax load_state_dict (eager, NumPy)",
    "from_state_dict, lazy, 1 device",
    "from_state_dict, lazy, 4x2 mesh (8 devices)",
    "load_state_dict + from_state_dict, 4x2 mesh",
]
SAVE_ROWS = [
    "safetensors.numpy save_file (baseline)",
    "namax save_state_dict(to_state_dict(...))",
]
HEADER = "| case | time (s) | ratio vs {} | peak RSS increase (MB) | RSS / file size |"


def _table(lines: list[str], title: str) -> list[list[str]]:
    """The cells of each data row of the table after ``**title**``."""
    start = lines.index(f"**{title}**")
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("**"):
            break
        if line.startswith("| ") and not line.startswith("| case "):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


@pytest.mark.slow
def test_checkpoint_benchmark_tiny(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.run([sys.executable, str(SCRIPT), "--mb", "4", "--runs", "1"], capture_output=True,
                          text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    assert HEADER.format("safetensors.numpy load") in lines, proc.stdout
    assert HEADER.format("safetensors.numpy save") in lines, proc.stdout
    for title, names in (("Restore", RESTORE_ROWS), ("Save", SAVE_ROWS)):
        rows = _table(lines, title)
        assert [r[0] for r in rows] == names, proc.stdout
        for name, seconds, ratio, rss_mb, per_file in rows:
            assert float(seconds) >= 0, name
            assert re.fullmatch(r"\d+\.\d\dx", ratio), (name, ratio)
            float(rss_mb), float(per_file)
        assert rows[0][2] == "1.00x", rows[0]
    assert list(tmp_path.iterdir()) == [], "the benchmark left files in its temp dir"
