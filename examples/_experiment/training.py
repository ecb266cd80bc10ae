"""Helpers of ``examples/gpo_experiment.py``: what training saw, as opposed to what the held-out
evaluation measured. The safety-SFT strength choice (made on the TRAIN seeds) and, per arm, how
often an update had anything to learn (a non-zero fit target: a context whose answers got
different rewards) and how far the defender moved from its start (``defender/kl/reference``)."""

from __future__ import annotations

import math
import os
import numpy as np

from examples._experiment.measure import ARM_LABELS


def signal_table(jobs: dict[str, dict[int, dict]], stage: dict | None) -> str:
    """Markdown: the SFT choice, then per trained arm the share of rounds whose defender and
    adversary updates had a non-zero target, and the defender's KL to its start after the last
    round (mean and range over seeds)."""
    lines = []
    if stage and stage.get("train_signal"):
        shares = ", ".join(f"{r['steps']}: {r['mixed']:.2f}" for r in stage["train_signal"])
        lines += [f"Safety-SFT strength, chosen on the train seeds: {stage['chosen_steps']} steps "
                  f"(share of train seeds whose sampled answers disagree, per candidate step "
                  f"count: {shares}).", ""]
    rows = []
    for arm, label in ARM_LABELS.items():
        runs = [r["rounds"] for r in jobs.get(arm, {}).values() if r.get("rounds")]
        if not runs:
            continue

        def share(who: str) -> str:
            v = [np.mean([x.get(f"{who}/fit/residual_initial", 0.0) > 0 for x in rs]) for rs in runs]
            return f"{np.mean(v):.2f} ({min(v):.2f}-{max(v):.2f})" if any(
                f"{who}/fit/residual_initial" in x for rs in runs for x in rs) else "–"

        kl = [rs[-1].get("defender/kl/reference", math.nan) for rs in runs]
        kl = [k for k in kl if not math.isnan(k)]
        moved = f"{np.mean(kl):.1e} ({min(kl):.1e}-{max(kl):.1e})" if kl else "–"
        rows.append(f"| {label} | {len(runs)} | {share('defender')} | {share('adversary')} | {moved} |")
    if rows:
        lines += ["Training signal (share of rounds whose update had a non-zero target: mean over "
                  "seeds, range) and how far each defender moved (KL to its start after the last "
                  "round):", "", "| arm | seeds | defender rounds with signal | adversary rounds "
                  "with signal | defender KL to start |", "|---|---|---|---|---|", *rows]
    return "\n".join(lines)


def plot_sft(stage: dict | None, folder: str) -> str | None:
    """The safety-SFT strength choice: per candidate step count, on the TRAIN seeds, the share of
    seeds whose sampled answers disagree (what the choice maximises) and the refusal rates."""
    if not stage or not stage.get("train_signal"):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gpo_core._io import atomic_path

    rows = stage["train_signal"]
    steps = [r["steps"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for key, label in (("mixed", "seeds whose answers disagree (maximised)"),
                       ("harmful_refused", "harmful answers refused"),
                       ("benign_refused", "benign answers refused")):
        ax.plot(steps, [r[key] for r in rows], marker="o", label=label)
    ax.axvline(stage["chosen_steps"], color="grey", ls=":", label=f"chosen: {stage['chosen_steps']} steps")
    ax.set_xlabel("safety-SFT steps")
    ax.set_ylabel("share, train seeds")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "sft.png")
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path
