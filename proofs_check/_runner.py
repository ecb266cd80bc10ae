"""``python -m proofs_check``: run every check on every game, print one table, write plots.

:func:`run` builds the task list (quick or full), runs it with a tqdm progress bar, writes one PNG
per claim plus ``report.txt`` into ``out_dir`` and returns a :class:`~proofs_check.Report`;
:func:`main` is the command line and returns the exit status (1 if any claim failed).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from typing import Callable, Sequence

import numpy as np

import gpo_core as gc
from gpo_core._validate import short
from proofs_check._common import label
from proofs_check._diversity import check_diversity_equilibrium
from proofs_check._games import (
    openspiel_extensive_games,
    openspiel_matrix_games,
    random_games,
    tilted_start,
    uniform_is_equilibrium,
)
from proofs_check._hedge import (
    alternating_result,
    check_hedge_regret_bound,
    folk_result_from_record,
    measure_gap_rate,
    rate_from_record,
    rate_result,
    regret_result_from_record,
    selfplay_record,
)
from proofs_check._mmd import check_mmd_linear_rate, check_qre_gap_bound
from proofs_check._plots import plot_claim, write_text_atomic
from proofs_check._result import CheckResult, Report, Skip
from proofs_check._sequences import least_likely_gains, random_gains, switching_gains

__all__ = ["run", "main", "Config", "QUICK", "FULL"]

Task = Callable[[], list[CheckResult]]


@dataclasses.dataclass(frozen=True)
class Config:
    """What a run covers.

    Attributes:
        T: rounds of self-play for games up to 500 actions a side.
        T_large: rounds for larger games.
        random_shapes: ``(m, n, seed)`` of the random games.
        openspiel_names: OpenSpiel zero-sum matrix games to use (``None``: all of them).
        extensive: also use Kuhn poker and Blotto.
        seq_T: rounds of the sequence (non-self-play) regret checks.
        seq_actions: action counts of those sequences.
        seq_kinds: which sequences (``random``, ``least_likely``, ``switching``, ``switching50``).
        mmd_alphas: MMD regularisation weights, as fractions of the payoff range.
        mmd_games: how many of the games get the MMD check (``None``: all).
        qre_alphas: QRE weights, as fractions of the payoff range.
        diversity: ``(prompts, responses, seed)`` of the tabular games.
        diversity_taus: entropy weights (0 = unregularised), as fractions of the reward range.
        diversity_T: rounds of the diversity dynamics.
        tolerance: allowed shortfall of the fitted gap exponent below 1/2.
    """

    T: int
    T_large: int
    random_shapes: tuple[tuple[int, int, int], ...]
    openspiel_names: tuple[str, ...] | None
    extensive: bool
    seq_T: int
    seq_actions: tuple[int, ...]
    seq_kinds: tuple[str, ...]
    mmd_alphas: tuple[float, ...]
    mmd_games: int | None
    qre_alphas: tuple[float, ...]
    diversity: tuple[tuple[int, int, int], ...]
    diversity_taus: tuple[float, ...]
    diversity_T: int
    tolerance: float = 0.05


FULL = Config(
    T=20_000,
    T_large=10_000,
    random_shapes=(
        (2, 2, 0), (2, 2, 1), (3, 3, 2), (5, 3, 3), (3, 7, 4), (10, 10, 5), (30, 50, 6),
        (100, 100, 7), (200, 20, 8), (1000, 1000, 9), (1000, 40, 10),
    ),
    openspiel_names=None,
    extensive=True,
    seq_T=20_000,
    seq_actions=(2, 3, 10, 100, 1000),
    seq_kinds=("random", "least_likely", "switching", "switching50"),
    mmd_alphas=(0.05, 0.2),
    mmd_games=None,
    qre_alphas=(0.01, 0.1, 1.0),
    diversity=((3, 2, 0), (4, 3, 1), (6, 2, 2), (20, 5, 3), (100, 10, 4)),
    diversity_taus=(0.0, 0.05, 0.2),
    diversity_T=5000,
)

# The quick run is a smoke test of every claim on three small games (well under a minute, part of
# the test suite). Its games are the fast ones whose *empirical* rate exponents sit clear of the
# 1/2 - tolerance line at T = 2000; games whose exponent is within noise of that line at short
# horizons (rock-paper-scissors from a tilted start, Kuhn poker with tuned steps) are covered by
# the full run only. The verdict on the claims is the full run's, not the quick run's.
QUICK = Config(
    T=2000,
    T_large=2000,
    random_shapes=((5, 3, 3), (30, 50, 6)),
    openspiel_names=("matrix_brps",),
    extensive=False,
    seq_T=2000,
    seq_actions=(2, 10),
    seq_kinds=("least_likely", "switching"),
    mmd_alphas=(0.2,),
    mmd_games=3,
    qre_alphas=(0.1,),
    diversity=((4, 3, 1),),
    diversity_taus=(0.0, 0.1),
    diversity_T=1000,
)


def _games(cfg: Config) -> tuple[list[gc.MatrixGame], list[Skip]]:
    matrix, skips = openspiel_matrix_games()
    if cfg.openspiel_names is not None:
        matrix = [g for g in matrix if g.name in cfg.openspiel_names]
    games = list(matrix)
    if cfg.extensive:
        extensive, more = openspiel_extensive_games()
        games += extensive
        skips += more
    games += random_games(list(cfg.random_shapes))
    return games, skips


def _game_tasks(game: gc.MatrixGame, cfg: Config) -> list[tuple[str, Task]]:
    T = cfg.T if max(game.shape) <= 500 else cfg.T_large
    if uniform_is_equilibrium(game):
        x0, y0 = tilted_start(game)
        name = f"{label(game)} [tilted start: uniform is an equilibrium]"
    else:
        x0 = y0 = None
        name = label(game)

    def anytime() -> list[CheckResult]:
        rec = selfplay_record(game, "anytime", T, x0=x0, y0=y0)
        sim = rate_from_record(rec)
        alt = measure_gap_rate(game, "anytime", T, alternating=True, x0=x0, y0=y0)
        return [
            regret_result_from_record(rec, name),
            folk_result_from_record(rec, name),
            rate_result(name, sim, cfg.tolerance),
            alternating_result(name, alt, sim, cfg.tolerance),
        ]

    def tuned() -> list[CheckResult]:
        rec = selfplay_record(game, "tuned", T, x0=x0, y0=y0)
        meas = measure_gap_rate(game, "tuned", T, x0=x0, y0=y0)
        return [
            regret_result_from_record(rec, name),
            folk_result_from_record(rec, name),
            rate_result(name, meas, cfg.tolerance),
        ]

    def qre() -> list[CheckResult]:
        out = []
        for frac in cfg.qre_alphas:
            alpha = frac * game.payoff_range
            out.append(dataclasses.replace(check_qre_gap_bound(game, alpha), game=f"{name} alpha={frac:g}B"))
            out.append(
                dataclasses.replace(check_qre_gap_bound(game, alpha, sharp=True), game=f"{name} alpha={frac:g}B")
            )
        return out

    return [(f"hedge anytime {name}", anytime), (f"hedge tuned {name}", tuned), (f"qre {name}", qre)]


def _mmd_tasks(games: Sequence[gc.MatrixGame], cfg: Config) -> list[tuple[str, Task]]:
    chosen = list(games) if cfg.mmd_games is None else list(games)[: cfg.mmd_games]
    tasks: list[tuple[str, Task]] = []
    for game in chosen:
        for frac in cfg.mmd_alphas:

            def task(game: gc.MatrixGame = game, frac: float = frac) -> list[CheckResult]:
                res = check_mmd_linear_rate(game, frac * game.payoff_range)
                return [dataclasses.replace(res, game=f"{label(game)} alpha={frac:g}B")]

            tasks.append((f"mmd {label(game)} alpha={frac:g}B", task))
    return tasks


def _sequence_tasks(cfg: Config) -> list[tuple[str, Task]]:
    tasks: list[tuple[str, Task]] = []
    T = cfg.seq_T
    for n in cfg.seq_actions:
        for kind in cfg.seq_kinds:
            if kind == "random":
                seq = random_gains(n, 1.0, seed=n)
            elif kind == "least_likely":
                seq = least_likely_gains(n, 1.0)
            elif kind == "switching":
                seq = switching_gains(n, 1.0, period=max(1, T // 2))
            elif kind == "switching50":
                seq = switching_gains(n, 1.0, period=50)
            else:
                raise ValueError(f"unknown sequence kind {kind!r} in the run configuration")
            for eta in ("tuned", "anytime"):

                def task(seq=seq, eta=eta) -> list[CheckResult]:
                    return [check_hedge_regret_bound(seq, eta, T)]

                tasks.append((f"regret {seq.name} {eta}", task))
    return tasks


def _diversity_tasks(cfg: Config) -> list[tuple[str, Task]]:
    tasks: list[tuple[str, Task]] = []
    for p, q, seed in cfg.diversity:
        reward = np.random.default_rng(seed).uniform(0.0, 1.0, size=(p, q))
        for frac in cfg.diversity_taus:
            tau = frac * float(reward.max() - reward.min())

            def task(reward=reward, tau=tau, frac=frac, p=p, q=q, seed=seed) -> list[CheckResult]:
                name = f"tabular {p}x{q} seed={seed}" + (f" tau={frac:g}B" if tau > 0 else "")
                return [check_diversity_equilibrium(reward, tau, cfg.diversity_T, name=name)]

            tasks.append((f"diversity {p}x{q} tau={frac:g}", task))
    return tasks


_TITLES = {
    "regret/hedge-tuned": "Hedge regret vs t, horizon-tuned step (bound: ln n/eta + eta t B^2/8)",
    "regret/hedge-anytime": "Hedge regret vs t, eta_t = c/sqrt(t) (bound: sqrt(t+1) ln n/c + cB^2(2 sqrt t - 1)/8)",
    "folk/hedge-anytime": "Nash gap of the average vs t, anytime Hedge (dotted: (R_x+R_y)/t, dashed: closed-form bound)",
    "folk/hedge-tuned": "Nash gap of the average vs t, horizon-tuned Hedge (dotted: (R_x+R_y)/t, dashed: bound)",
    "rate/hedge-anytime": "Nash gap of the average vs T, anytime Hedge, simultaneous (dashed: folk bound)",
    "rate/hedge-tuned": "Nash gap at horizon T vs T, step tuned to each T (dashed: B(sqrt(ln m/2)+sqrt(ln n/2))/sqrt(T))",
    "rate/alternating-anytime": "Alternating (defender first) vs simultaneous (dotted): no theorem, no bound",
    "mmd/linear-rate": "MMD: KL(z*||z_t) vs t (dashed: (1+eta alpha)^-t KL(z*||z_1), Sokota et al. Thm 3.4)",
    "diversity/point-mass": "Adversary's mean strategy: TV to the point mass on the worst prompt (dashed: bound)",
    "diversity/gibbs": "Entropy-regularised adversary: ||mu_t - Gibbs||_1 (dashed: strong-convexity certificate)",
}


def run(
    quick: bool = False,
    out_dir: str | os.PathLike[str] = "proofs_check_out",
    *,
    progress: bool | None = None,
    config: Config | None = None,
) -> Report:
    """Run every check; write plots and ``report.txt`` to ``out_dir``; return the :class:`Report`.

    Args:
        quick: the quick subset (under a minute; part of the test suite) instead of the full run.
        out_dir: folder for the PNGs and the report (created if missing).
        progress: show a tqdm progress bar (default: only for the full run).
        config: override the run's :class:`Config` (advanced; default ``QUICK`` or ``FULL``).
    """
    if not isinstance(quick, bool):
        raise TypeError(f"quick must be a bool, got {short(quick)}")
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a path (str or os.PathLike), got {short(out_dir)}")
    if config is not None and not isinstance(config, Config):
        raise TypeError(f"config must be a proofs_check.Config, got {short(config)}")
    cfg = config or (QUICK if quick else FULL)
    out = os.fspath(out_dir)
    os.makedirs(out, exist_ok=True)
    start = time.perf_counter()

    games, skips = _games(cfg)
    tasks: list[tuple[str, Task]] = []
    tasks += _sequence_tasks(cfg)
    for game in games:
        tasks += _game_tasks(game, cfg)
    tasks += _mmd_tasks(games, cfg)
    tasks += _diversity_tasks(cfg)

    show = (not quick) if progress is None else bool(progress)
    results: list[CheckResult] = []
    iterator = tasks
    bar = None
    if show:
        from tqdm import tqdm  # noqa: PLC0415 (optional dependency)

        bar = tqdm(tasks, desc="proofs_check", unit="check", dynamic_ncols=True)
        iterator = bar
    for desc, task in iterator:
        if bar is not None:
            bar.set_postfix_str(desc[:40], refresh=False)
        results.extend(task())
    if bar is not None:
        bar.close()

    ordered = sorted(results, key=lambda r: _claim_order(r.claim))
    plots = []
    for claim in dict.fromkeys(r.claim for r in ordered):
        group = [r for r in ordered if r.claim == claim]
        path = os.path.join(out, claim.replace("/", "_") + ".png")
        written = plot_claim(group, path, _TITLES.get(claim, claim))
        if written:
            plots.append(written)
    report = Report(
        results=tuple(ordered),
        skipped=tuple(skips),
        plots=tuple(plots),
        out_dir=out,
        quick=quick,
        seconds=time.perf_counter() - start,
    )
    write_text_atomic(os.path.join(out, "report.txt"), render(report, details=True))
    return report


_ORDER = [
    "regret/hedge-tuned", "regret/hedge-anytime", "folk/hedge-tuned", "folk/hedge-anytime",
    "rate/hedge-tuned", "rate/hedge-anytime", "rate/alternating-anytime", "mmd/linear-rate",
    "qre/gap-log", "qre/gap-entropy", "diversity/point-mass", "diversity/gibbs",
]


def _claim_order(claim: str) -> int:
    return _ORDER.index(claim) if claim in _ORDER else len(_ORDER)


def render(report: Report, *, details: bool = False) -> str:
    """The table, the skipped games, the rate comparison and (optionally) every result line."""
    lines = [
        f"proofs_check ({'quick' if report.quick else 'full'} run, {report.seconds:.1f} s): "
        f"{'ALL CLAIMS HOLD' if report.ok else 'SOME CLAIMS FAIL'}",
        "",
        report.table(),
        "",
    ]
    if report.skipped:
        lines.append("Skipped (not checked):")
        lines += [f"  {s.game}: {s.reason}" for s in report.skipped]
        lines.append("")
    alt = {r.game: r for r in report.results if r.claim == "rate/alternating-anytime"}
    sim = {r.game: r for r in report.results if r.claim == "rate/hedge-anytime"}
    if alt:
        lines.append(
            "Measured decay exponent p (gap ~ T^-p) of the averaged gap, anytime Hedge: "
            "simultaneous vs GPO's alternating schedule (no theorem is claimed for the latter):"
        )
        for game, r in alt.items():
            s = sim.get(game)
            lines.append(f"  {game}: simultaneous {s.lhs if s else math.nan:.3f}, alternating {r.lhs:.3f}")
        lines.append("")
    failed = [r for r in report.results if not r.holds]
    if failed:
        lines.append("Failures:")
        lines += ["  " + r.line() for r in failed]
        lines.append("")
    if details:
        lines.append("All results:")
        lines += ["  " + r.line() for r in report.results]
        lines.append("")
        lines.append("Citations:")
        lines += [f"  {claim}: {cite}" for claim, _, _, _, cite in report.rows()]
        lines.append("")
    if report.plots:
        lines.append(f"Plots and report written to {report.out_dir}/")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m proofs_check [--quick] [--out DIR]``; returns 0 if all claims hold."""
    parser = argparse.ArgumentParser(
        prog="python -m proofs_check",
        description="Executable checks of every theoretical claim behind GPO (one table + plots).",
    )
    parser.add_argument("--quick", action="store_true", help="the quick subset (under a minute)")
    parser.add_argument(
        "--out", default="proofs_check_out", metavar="DIR",
        help="folder for the PNG plots and report.txt (default: proofs_check_out/)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="do not show the progress bar"
    )
    args = parser.parse_args(None if argv is None else list(argv))
    report = run(quick=args.quick, out_dir=args.out, progress=False if args.no_progress else None)
    print(render(report))
    return 0 if report.ok else 1
