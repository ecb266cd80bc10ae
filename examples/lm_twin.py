"""The LLM twin of a matrix game: do two transformers follow gpo_core.play's Hedge iterates?

Two random tiny Llamas write one-token outputs (``backends.enumerated``), so their distributions
and the game's Nash gap are exact. They play a random 3x4 game through ``run_game`` with
simultaneous Hedge steps (eta = 0.5), fitted to tolerance (the default L-BFGS fit, and a tight
1e-6), and, for contrast, with the update the backend used before the fit tolerance existed (4
AdamW steps of lr 1e-2). The figure shows, per round, the total-variation distance of each run's
iterates from play's (with the bound the 1e-6 tolerance implies, ``tests/test_lm_twin.py``), and
the Nash gap of the averaged policies next to play's.

Run: ``python examples/lm_twin.py [--rounds 30] [--out docs/img/lm_twin.png]``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from typing import Sequence

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

RUNS = {
    "fit to 1e-6 (L-BFGS)": dict(fit_tol=1e-6, fit_atol=1e-12),
    "fit to 1e-2 (default)": dict(),
    "4 AdamW steps, lr 1e-2 (before)": dict(optimizer="adam", lr=1e-2, max_fit_steps=4,
                                             fit_tol=1e-12),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", "--steps", dest="rounds", type=int, default=30)
    parser.add_argument("--eta", type=float, default=0.5)
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "img", "lm_twin.png"),
                        help="the PNG to write (a folder: metrics.png inside it)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or not args.eta > 0:
        parser.error("--rounds must be >= 1 and --eta > 0")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import gpo_core as gc
    from backends.enumerated import iterate_probabilities, lm_matrix_game_players
    from gpo_core._io import atomic_path
    from gpo_core.alignment import GameConfig, run_game

    game = gc.MatrixGame.random(3, 4, seed=1)
    config = GameConfig(rounds=args.rounds, schedule="simultaneous", batch_size=1,
                        conditional_adversary=False, defender_eta=args.eta,
                        adversary_eta=args.eta)
    fig, (ax_tv, ax_gap) = plt.subplots(1, 2, figsize=(11, 4))
    rounds = np.arange(1, args.rounds + 2)
    traj = None
    table: dict[str, list[float]] = {}
    for label, kw in RUNS.items():
        d, a, r = lm_matrix_game_players(game, seed=0, **kw)
        x0, y0 = d.probabilities(), a.probabilities()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the 4-step run never converges
            res = run_game(d, a, r, config)
        pis = iterate_probabilities(d, res.defender_iterates) + [d.probabilities()]
        mus = iterate_probabilities(a, res.adversary_iterates) + [a.probabilities()]
        # play's iterates from the same start, by the core's own step
        lx, ly = np.log(x0), np.log(y0)
        tv = [0.0]
        for t in range(args.rounds):
            x, y = np.exp(lx), np.exp(ly)
            lx = gc.mirror_step(lx, game.payoff @ y, args.eta, 0.0, np.zeros_like(lx))
            ly = gc.mirror_step(ly, -(x @ game.payoff), args.eta, 0.0, np.zeros_like(ly))
            tv.append(max(0.5 * np.abs(np.exp(lx) - pis[t + 1]).sum(),
                          0.5 * np.abs(np.exp(ly) - mus[t + 1]).sum()))
        ax_tv.semilogy(rounds, np.maximum(tv, 1e-8), label=label)
        gaps = [float(gc.nash_gap(game, np.mean(pis[:t], 0), np.mean(mus[:t], 0)))
                for t in range(1, args.rounds + 1)]
        ax_gap.semilogy(rounds[:-1], gaps, label=label)
        table[f"TV: {label}"] = tv[1:]
        if traj is None:
            traj = gc.play(game, gc.hedge(args.eta), gc.hedge(args.eta), steps=args.rounds,
                           x0=x0, y0=y0)
        steps = res.metric("defender/fit/steps")
        print(f"{label:34s} max TV to play {max(tv):.2e}, final averaged gap {gaps[-1]:.4f} "
              f"(play {float(traj.final_gap):.4f}), gradient evaluations per update "
              f"{np.mean(steps):.1f}")
    ax_gap.semilogy(rounds[:-1], np.asarray(traj.nash_gap), "k--", label="gpo_core.play (exact)")
    ax_tv.set(xlabel="round t", ylabel="max TV(network iterate, play's iterate)",
              title="Iterates: distance from play's Hedge")
    ax_gap.set(xlabel="round t", ylabel="Nash gap of the averaged policies",
               title="Averaged policies: exact Nash gap")
    for ax in (ax_tv, ax_gap):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    print("\n| round | " + " | ".join(table) + " |\n|---" * (len(table) + 1) + "|")
    for t in range(args.rounds):
        print(f"| {t + 2} | " + " | ".join(f"{col[t]:.2e}" for col in table.values()) + " |")
    out = args.out if args.out.endswith(".png") else os.path.join(args.out, "metrics.png")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    print(f"plot: {out}")
    return 0 if math.isfinite(float(traj.final_gap)) else 1


if __name__ == "__main__":
    sys.exit(main())
