"""PNG plots of the checks: one file per claim, one panel per game, measured series and bound.

Written with matplotlib's object-oriented API on the Agg canvas (no pyplot, no global backend
switch), each file atomically: rendered to a temporary file in the target folder, then moved into
place with ``os.replace``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from gpo_core._io import atomic_path, atomic_write_text
from proofs_check._result import CheckResult

__all__ = ["plot_claim", "write_text_atomic"]

_LINEAR_X = ("mmd/",)  # claims whose x axis is linear (a linear rate is a straight line on semilog-y)
_MAX_PANELS = 24


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    atomic_write_text(path, text)


def _positive(values: np.ndarray | None) -> np.ndarray | None:
    """Values with the non-positive ones set to nan (they cannot sit on a log axis)."""
    if values is None:
        return None
    v = np.asarray(values, dtype=np.float64)
    return np.where(v > 0, v, np.nan)


def plot_claim(results: Sequence[CheckResult], path: str, title: str) -> str | None:
    """Draw every result's curve of one claim into ``path`` (PNG); ``None`` if none has a curve."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 (optional dep)
    from matplotlib.figure import Figure  # noqa: PLC0415

    with_curves = [r for r in results if r.curve is not None][:_MAX_PANELS]
    if not with_curves:
        return None
    cols = min(4, len(with_curves))
    rows = math.ceil(len(with_curves) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.3 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    linear_x = results[0].claim.startswith(_LINEAR_X)
    for i, (res, curve) in enumerate((r, r.curve) for r in with_curves if r.curve is not None):
        ax = fig.add_subplot(rows, cols, i + 1)
        t = np.asarray(curve.t, dtype=np.float64)
        measured = _positive(curve.measured)
        if np.all(np.isnan(measured)):
            ax.text(0.5, 0.5, "identically 0", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.plot(t, measured, color="C0", lw=1.6, label="measured")
        if curve.reference is not None and not np.all(np.isnan(_positive(curve.reference))):
            ax.plot(t, _positive(curve.reference), color="C2", lw=1.0, ls=":", label="reference")
        if curve.bound is not None and not np.all(np.isnan(_positive(curve.bound))):
            ax.plot(t, _positive(curve.bound), color="C3", lw=1.2, ls="--", label="bound")
        ax.set_yscale("log")
        if not linear_x:
            ax.set_xscale("log")
        verdict = "PASS" if res.holds else "FAIL"
        ax.set_title(f"{res.game}\n{verdict}, ratio {res.ratio:.3g}", fontsize=8)
        ax.set_xlabel("t", fontsize=8)
        ax.set_ylabel(curve.ylabel, fontsize=7)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    return path
