"""Every example runs end to end as a subprocess (CleanRL's smoke test), fast settings."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.py") if p.name != "__init__.py")
# Extra arguments that keep the slow ones short; every example must accept --steps.
FAST = {
    "smollm_safety.py": ["--batch-size", "1", "--responses", "2", "--max-new-tokens", "4"],
}


def test_every_example_is_listed():
    assert {"tiny_red_team.py", "custom_backend.py", "smollm_safety.py"} <= set(EXAMPLES)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs(name, tmp_path):
    argv = [sys.executable, str(ROOT / "examples" / name), "--steps", "1" if name == "smollm_safety.py" else "3"]
    argv += FAST.get(name, [])
    if name != "custom_backend.py":
        argv += ["--out", str(tmp_path / "out")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "error"}
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| round |" in proc.stdout  # each prints its metric table
    if name != "custom_backend.py":
        assert (tmp_path / "out" / "metrics.png").read_bytes()[:4] == b"\x89PNG"


def test_tiny_red_team_resumes_after_a_kill(tmp_path):
    """Kill after round 2 of 3, rerun: the resumed run's table equals an uninterrupted run's."""
    script = ROOT / "examples" / "tiny_red_team.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = subprocess.run([sys.executable, str(script), "--steps", "3", "--out", str(tmp_path / "a")],
                          env=env, capture_output=True, text=True, timeout=900)
    assert full.returncode == 0, full.stderr[-2000:]
    first = subprocess.run([sys.executable, str(script), "--steps", "2", "--out", str(tmp_path / "b")],
                           env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-2000:]
    # same config except the number of rounds: the run continues from round 3
    second = subprocess.run([sys.executable, str(script), "--steps", "3", "--out", str(tmp_path / "b")],
                            env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-2000:]
    table = lambda out: out.split("\n\nplot:")[0]  # noqa: E731
    assert table(second.stdout) == table(full.stdout)
