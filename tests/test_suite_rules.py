"""The suite's own rules: under CI only the named skips pass, and plain `pytest` collects.

Each runs pytest in a subprocess on a small folder, with this suite's conftest, so the rule is
seen to fail a test run, not only to exist.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run_suite(tmp_path: pathlib.Path, body: str, ci: str | None) -> subprocess.CompletedProcess:
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    (tmp_path / "test_sample.py").write_text(body)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "GPO_TEST_NUMPY_KERNELS")}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", str(tmp_path)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)


UNEXPECTED = """
import pytest

def test_needs_a_package():
    pytest.importorskip("a_package_that_is_not_installed")

def test_passes():
    pass
"""
ALLOWED = """
import pytest

@pytest.mark.skipif(True, reason="needs a CUDA GPU (none visible)")
def test_on_a_gpu():
    pass

def test_passes():
    pass
"""
MODULE_LEVEL = """
import pytest

pytest.importorskip("a_package_that_is_not_installed")

def test_never_runs():
    pass
"""


@pytest.mark.parametrize("body", [UNEXPECTED, MODULE_LEVEL], ids=["in a test", "at import"])
def test_under_ci_an_unlisted_skip_fails_the_session(tmp_path, body):
    proc = _run_suite(tmp_path, body, ci="true")
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "CI=true: 1 skip(s) outside the allowed list" in proc.stdout
    assert "a_package_that_is_not_installed" in proc.stdout


def test_outside_ci_a_skip_is_only_a_skip(tmp_path):
    proc = _run_suite(tmp_path, UNEXPECTED, ci=None)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "1 skipped" in proc.stdout and "outside the allowed list" not in proc.stdout


def test_under_ci_a_listed_skip_passes(tmp_path):
    proc = _run_suite(tmp_path, ALLOWED, ci="true")
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "1 passed, 1 skipped" in proc.stdout


def test_plain_pytest_collects_the_suite():
    """`pytest` (the console script, no `python -m`) imports tests.strategies and strategies."""
    pytest_script = pathlib.Path(sys.executable).with_name("pytest")
    argv = [str(pytest_script)] if pytest_script.exists() else [sys.executable, "-c",
                                                                "import pytest; pytest.main()"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([*argv, "--collect-only", "-q", "tests/test_approx.py",
                           "tests/test_exact.py"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "ERROR collecting" not in proc.stdout
    assert re.search(r"^\d+ tests collected", proc.stdout, re.M), proc.stdout[-1000:]
