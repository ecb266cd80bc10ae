"""Reading a GPO run: a progress bar, a markdown metric table and a metric plot.

Torch-free; matplotlib and tqdm are imported on use. Figures are written atomically (a temporary
file in the same folder, then ``os.replace``), so an interrupted run never leaves half a PNG.
"""

from __future__ import annotations

import math
import sys
from typing import Callable, Sequence

from gpo_core._io import atomic_path
from gpo_core.alignment import GameResult, RoundLog

__all__ = ["DEFAULT_KEYS", "progress", "metrics_table", "plot_metrics"]

DEFAULT_KEYS = (
    "reward/mean",
    "attack/success_rate",
    "diversity/one_minus_self_bleu",
    "diversity/embedding",
    "defender/kl/reference",
    "adversary/kl/reference",
)


def progress(total: int, desc: str = "GPO rounds") -> tuple[Callable[[RoundLog], None], Callable[[], None]]:
    """An ``on_round`` callback that advances a tqdm bar showing the reward, and a closer."""
    from tqdm import tqdm  # noqa: PLC0415

    bar = tqdm(total=total, desc=desc, unit="round", file=sys.stderr)

    def on_round(log: RoundLog) -> None:
        bar.n = log.round  # a resumed run starts past 0
        shown = {k.split("/")[-1]: f"{v:.3f}" for k, v in log.metrics.items()
                 if k in ("reward/mean", "attack/success_rate")}
        bar.set_postfix(shown, refresh=False)
        bar.refresh()

    return on_round, bar.close


def metrics_table(result: GameResult, keys: Sequence[str] = DEFAULT_KEYS) -> str:
    """A markdown table: one row per round, one column per key that the run logged."""
    present = [k for k in keys if any(k in log.metrics for log in result.logs)]
    lines = ["| round | " + " | ".join(present) + " |", "|---" * (len(present) + 1) + "|"]
    for log in result.logs:
        cells = [_cell(log.metrics.get(k, math.nan)) for k in present]
        lines.append(f"| {log.round} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(v: float) -> str:
    return "" if math.isnan(v) else f"{v:.4f}"


def plot_metrics(result: GameResult, path: str, keys: Sequence[str] = DEFAULT_KEYS, title: str = "") -> str:
    """One panel per logged key against the round; written to ``path`` atomically."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    present = [k for k in keys if any(k in log.metrics for log in result.logs)]
    if not present:
        raise ValueError(f"none of the keys {list(keys)} were logged; logged: {sorted(result.logs[0].metrics) if result.logs else []}")
    cols = min(3, len(present))
    rows = math.ceil(len(present) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    rounds = [log.round for log in result.logs]
    for ax, key in zip(axes.ravel(), present):
        ax.plot(rounds, result.metric(key), marker="o", ms=3)
        ax.set_title(key)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(present):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)
    return path
