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


def _torch_one_thread() -> None:
    try:
        import torch
    except ImportError:  # the core tests run without the llm extra
        return
    torch.set_num_threads(1)


_torch_one_thread()


@pytest.fixture(autouse=True)
def _strict_numpy():
    """Overflow, division by zero and invalid operations are errors; underflow to 0 is fine."""
    with np.errstate(divide="raise", over="raise", invalid="raise", under="ignore"):
        yield
