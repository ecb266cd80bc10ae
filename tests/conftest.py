"""Test-wide settings: one torch thread (2-core CI stalls with 2), strict numpy, hypothesis profiles."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# ---------------------------------------------------------------- skips under CI
# Everything a test needs is installed by the [all] extra, so under CI (CI=true) a skip can only
# be one of these, each for something pip cannot provide; any other skip (a missing or broken
# package, an importorskip left in) fails the test run instead of passing green.
ALLOWED_SKIPS_UNDER_CI = {
    "CUDA": "no CUDA GPU on the machine (the GPU tests)",
    "a GPU is visible": "on a GPU machine, the CPU rehearsal of the GPU benchmark",
    "libmvec": "glibc's libmvec with AVX2 is not on the machine's CPU or libc",
}
if os.environ.get("GPO_TEST_NUMPY_KERNELS") == "1":  # the run that switches the C kernels off
    ALLOWED_SKIPS_UNDER_CI["GPO_TEST_NUMPY_KERNELS=1"] = "the C-kernel tests in the numpy run"
    ALLOWED_SKIPS_UNDER_CI["switches the C kernels off"] = "the build check in the numpy run"
_UNEXPECTED_SKIPS: list[str] = []


def _under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def _note_skip(report) -> None:
    if not (_under_ci() and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = str(report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr)
    if not any(key in reason for key in ALLOWED_SKIPS_UNDER_CI):
        _UNEXPECTED_SKIPS.append(f"{report.nodeid}: {reason}")


def pytest_runtest_logreport(report) -> None:
    _note_skip(report)


def pytest_collectreport(report) -> None:  # a module-level skip (importorskip at import)
    _note_skip(report)


def pytest_sessionfinish(session, exitstatus) -> None:
    if _UNEXPECTED_SKIPS:
        allowed = "; ".join(f"{k} ({v})" for k, v in ALLOWED_SKIPS_UNDER_CI.items())
        lines = "\n  ".join(_UNEXPECTED_SKIPS)
        print(f"\nCI=true: {len(_UNEXPECTED_SKIPS)} skip(s) outside the allowed list [{allowed}]:"
              f"\n  {lines}\nInstall what they need (pip install -e '.[all]') or fix the test.")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _torch_one_thread() -> None:
    try:
        import torch
    except ImportError:  # the core tests run without the llm extra
        return
    torch.set_num_threads(1)


_torch_one_thread()


def _numpy_kernels_only() -> None:
    """``GPO_TEST_NUMPY_KERNELS=1`` runs the suite as an install without a C compiler would:
    gpo_core's C kernels off, the numpy steps instead (a test-only switch; the library reads
    no environment variable)."""
    if os.environ.get("GPO_TEST_NUMPY_KERNELS") == "1":
        import gpo_core._fused

        gpo_core._fused.KERNELS = None


_numpy_kernels_only()


def _skip_without_kernels() -> None:
    """Skip a C-path test where the kernels are off. On an ordinary install that cannot pass
    unnoticed: tests/test_kernels.py's test_the_install_built_the_c_kernels fails instead."""
    import gpo_core._fused

    if gpo_core._fused.KERNELS is None:
        pytest.skip(
            "GPO_TEST_NUMPY_KERNELS=1 switched the C kernels off"
            if os.environ.get("GPO_TEST_NUMPY_KERNELS") == "1"
            else "gpo_core._kernels is not built (no C compiler at install)"
        )


@pytest.fixture(params=["c", "numpy"])
def kernels(request, monkeypatch):
    """Run a test with gpo_core's C kernels (skipped where they are not built) and without."""
    import gpo_core._fused

    if request.param == "c":
        _skip_without_kernels()
    else:
        monkeypatch.setattr(gpo_core._fused, "KERNELS", None)
    return request.param


@pytest.fixture(autouse=True)
def _strict_numpy():
    """Overflow, division by zero and invalid operations are errors; underflow to 0 is fine."""
    with np.errstate(divide="raise", over="raise", invalid="raise", under="ignore"):
        yield


class _CountingKernels:
    """gpo_core's C kernels, counting the calls of each function (``calls``: name -> count)."""

    def __init__(self, real):
        self.real, self.calls = real, {}

    def __getattr__(self, name):
        fn = getattr(self.real, name)

        def counted(*args):
            self.calls[name] = self.calls.get(name, 0) + 1
            return fn(*args)

        return counted


@pytest.fixture
def kernel_calls(monkeypatch):
    """gpo_core's C kernels behind a call counter (skipped where they are not built): a test
    shows that a fast path is taken, not only that its answer is right."""
    import gpo_core._fused

    _skip_without_kernels()
    spy = _CountingKernels(gpo_core._fused.KERNELS)
    monkeypatch.setattr(gpo_core._fused, "KERNELS", spy)
    return spy.calls
