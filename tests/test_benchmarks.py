"""The benchmark scripts still run: a GPU session gets 15 minutes of device time, so the prepared
GPU check (benchmarks/gpu_check.sh, bench_scale.py part g) must not fail there on a typo. Part g
is rehearsed here on CPU tensors (its numbers mean nothing on this machine; the test checks the
tables are made and every average reached its gap)."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
import array_api_compat  # noqa: E402, F401  (the [all] extra installs both: missing is a failure)
import torch  # noqa: E402


@pytest.fixture
def bench_scale(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_scale

    return bench_scale


@pytest.mark.slow
def test_part_g_rehearsed_on_cpu_tensors_makes_both_tables(bench_scale, tmp_path, capsys):
    out = tmp_path / "g.md"
    assert bench_scale.main(["--quick", "--parts", "g", "--g-device", "cpu", "--g-sizes", "40",
                             "--out", str(out)]) == 0
    text = out.read_text()
    assert "#### g. On a GPU" in text and "part g: sizes [40], device cpu" in text
    steps = [r for r in text.splitlines() if r.startswith("| 40×40 | torch")]
    assert len(steps) == 2 * len(bench_scale.G_CASES)  # float64 and float32, every rule
    gaps = [r for r in text.splitlines() if r.startswith("| 40×40 | float")]
    assert len(gaps) == 2
    for row in gaps:  # each average re-checked on the host in float64: at most the target
        found = [float(g) for g in re.findall(r"gap (\d\.\de[-+]\d\d)", row)]
        assert len(found) == 2 and all(g <= 1e-4 * (1 + 1e-3) for g in found), row


def test_part_g_without_a_gpu_says_it_was_skipped(bench_scale):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: part g runs on it")
    assert bench_scale.part_g([40], 1, None).startswith("Skipped: no CUDA device visible")


def test_gpu_check_script_parses_and_asks_for_its_output_folder():
    script = ROOT / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    env = {"PATH": "/usr/bin:/bin", "PY": sys.executable}
    res = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode != 0 and "set OUT" in res.stderr
