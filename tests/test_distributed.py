"""Data-parallel GPO: 2 CPU ranks under torchrun (gloo) vs one process with the same global batch."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "ddp_worker.py"


def _run(argv, out):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore::FutureWarning"}
    proc = subprocess.run(argv + [str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_two_ranks_stay_identical_and_match_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    _run(torchrun + [str(WORKER)], two)
    _run([sys.executable, str(WORKER)], one)
    r0, r1 = (json.loads((two / f"rank{r}.json").read_text()) for r in (0, 1))
    single = json.loads((one / "rank0.json").read_text())

    # the replicas never drift: identical parameters on both ranks after training ...
    assert r0["digest"] == r1["digest"]
    assert r0["digest"] != r0["start"], "the players did train"
    # ... and both ranks hold the same shared state
    assert r0["metrics"] == r1["metrics"]
    assert r0["history"] == r1["history"]
    assert len(r0["history"]) == len(single["history"]) == 3 * 8

    # The same global batch of seed prompts, but different sampling streams (each rank seeds its
    # own generator per call), so one process agrees in distribution only: the mean reward over
    # 32 answers has a standard deviation near 0.01 here; 0.05 is about 3.5 sigma of the difference.
    a = [m["reward/mean"] for m in r0["metrics"]]
    b = [m["reward/mean"] for m in single["metrics"]]
    assert all(abs(x - y) <= 0.05 for x, y in zip(a, b)), (a, b)
    assert set(r0["metrics"][0]) == set(single["metrics"][0])
