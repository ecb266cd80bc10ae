"""Every example runs end to end as a subprocess (CleanRL's smoke test), fast settings."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Scripts only: "_"-prefixed files are modules the scripts import, and gpo_experiment.py (which
# takes a --config, not --steps) runs its whole pipeline at its smoke size in test_experiment.py.
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.py")
                  if not p.name.startswith("_") and p.name != "gpo_experiment.py")
# Extra arguments that keep the slow ones short; every example must accept --steps.
FAST = {
    "smollm_safety.py": ["--batch-size", "1", "--responses", "2", "--max-new-tokens", "4",
                         "--eval-limit", "2", "--eval-max-new-tokens", "4"],
}
# Scripts that measure rather than play: no rounds; each writes a JSON file of numbers instead.
REPORTS = {"redteam_eval.py": (["--limit", "1", "--max-new-tokens", "2", "--llm-judge-rows", "3"],
                               "redteam_numbers.json")}


def test_every_example_is_listed():
    assert {"tiny_red_team.py", "custom_backend.py", "smollm_safety.py"} <= set(EXAMPLES)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs(name, tmp_path):
    argv = [sys.executable, str(ROOT / "examples" / name), "--steps", "1" if name == "smollm_safety.py" else "3"]
    argv += FAST.get(name, [])
    if name in REPORTS:
        argv = argv[:2] + REPORTS[name][0]
    if name != "custom_backend.py":
        argv += ["--out", str(tmp_path / "out")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "error"}
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if name in REPORTS:
        numbers = json.loads((tmp_path / "out" / REPORTS[name][1]).read_text())
        assert numbers["eval"]["prompts"] == 3 and "minilm_logistic" in numbers["refusal_judges"]
        return
    assert "| round |" in proc.stdout  # each prints its metric table
    if name != "custom_backend.py":
        assert (tmp_path / "out" / "metrics.png").read_bytes()[:4] == b"\x89PNG"


def test_tiny_red_team_resumes_after_a_kill(tmp_path):
    """SIGKILL a 3-round run once round 1's checkpoint is written, rerun the same command: the
    resumed run's table equals an uninterrupted run's."""
    script = ROOT / "examples" / "tiny_red_team.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, str(script), "--steps", "3", "--out"]
    full = subprocess.run([*argv, str(tmp_path / "a")], env=env, capture_output=True, text=True,
                          timeout=900)
    assert full.returncode == 0, full.stderr[-2000:]
    state = tmp_path / "b" / "checkpoint" / "state.json"
    run = subprocess.Popen([*argv, str(tmp_path / "b")], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 900
        while run.poll() is None and time.monotonic() < deadline:
            if state.exists() and json.loads(state.read_text())["round"] >= 1:
                run.send_signal(signal.SIGKILL)  # mid-run: no handler, no clean-up
                break
            time.sleep(0.05)
        assert run.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    done = json.loads(state.read_text())["round"]
    assert 1 <= done < 3  # killed between rounds 1 and 3, its checkpoint intact
    second = subprocess.run([*argv, str(tmp_path / "b")], env=env, capture_output=True, text=True,
                            timeout=900)
    assert second.returncode == 0, second.stderr[-2000:]
    assert json.loads(state.read_text())["round"] == 3
    table = lambda out: out.split("\n\nplot:")[0]  # noqa: E731
    assert table(second.stdout) == table(full.stdout)


@pytest.mark.slow
def test_gpo_demo_runs_end_to_end(tmp_path):
    """`gpo demo`, the README's main job, with small settings: the toy-game table, the theory
    checks and one GPO round between two tiny models, each writing its outputs."""
    out = tmp_path / "demo"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "backends.cli", "demo", "--steps", "50",
                           "--rounds", "1", "--out", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = proc.stdout
    for heading in ("## 1. OpenSpiel toy games", "## 2. Theory checks", "## 3. A short GPO game"):
        assert heading in printed
    assert "| kuhn_poker | 64x64 |" in printed and "ALL CLAIMS HOLD" in printed
    assert "| round |" in printed.split("## 3.")[1]
    assert (out / "proofs_check" / "report.txt").exists()
    assert (out / "tiny_red_team" / "metrics.png").read_bytes()[:4] == b"\x89PNG"
