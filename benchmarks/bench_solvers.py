"""Time to Nash gap 1e-2 and 1e-4: gpo_core.play's rules against HiGHS, OpenSpiel and nashpy.

Random zero-sum games ``A_ij ~ U[-1, 1]`` (``gc.MatrixGame.random(n, seed=...)``), square, of
10 to 1000 actions, all solvers side by side in one run. For each solver and size the table
shows the time until the Nash gap ``max_i (A y)_i - min_j (x^T A)_j`` of its output is below the
target, the ratio to ``gc.solve_lp`` (one HiGHS LP and its duals) on the same game, and the iterations used.

How each solver is timed:

* gpo rules: Hedge and optimistic Hedge (simultaneous, uniform average), RM+, predictive RM+
  and discounted RM+ (alternating, linear or quadratic average: CFR+'s and DCFR's schedules),
  and RM+ and predictive RM+
  without alternation (where plain RM+ stalls and the prediction makes PRM+ converge).
  ``gc.play(game, rule, steps=budget, tol=target, ...)`` stops as soon as the
  averaged gap (computed for free from running utility averages) is below ``target``. The step
  budget is the cap divided by the per-step time of a 30-step pilot. Hedge and optimistic Hedge
  use a constant step ``eta`` tuned per size and target on a *held-out* game (seed + 1000) over a
  small grid (tuning time not counted, reported in the notes).
* ``gc.solve(game, target)``, the library's entry point for an equilibrium within a target
  gap: exact pivoting up to 300 actions, else discounted RM+ on a float32 copy of the game,
  its answer certified in float64; timed whole, in this process.
* exact solvers (HiGHS, ``gc.solve_pivot``, OpenSpiel's LP via cvxpy+ECOS, nashpy's LP / support
  enumeration / Lemke-Howson) run in a worker process that is killed at the cap; their time is the call alone.
* OpenSpiel's C++ CFR+ and nashpy's fictitious play are iterated here; the gap of their average
  is measured at checkpoints (every iteration to 20, then every 5%) whose cost is not counted.

Runs shorter than 0.2 s are repeated (up to 5 runs) and the fastest is kept. Once a solver hits
the cap at one size, larger sizes are skipped for that target ("> cap, skipped").

Usage::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python \
        benchmarks/bench_solvers.py --quick
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python \
        benchmarks/bench_solvers.py --out benchmarks/results/solvers_full.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as cm  # noqa: E402
import _solvers as sv  # noqa: E402

import gpo_core as gc  # noqa: E402
from gpo_core.predictive import predictive_regret_matching_plus  # noqa: E402

TOLS = (1e-2, 1e-4)
ETA_GRID = (0.03, 0.1, 0.3, 1.0, 3.0)


@dataclass
class Cell:
    """One solver on one size for one target."""

    seconds: float | None = None  # time to the target; None if not reached
    iters: int | None = None
    status: str = "ok"  # ok | capped | skipped | error | missed
    note: str = ""
    gap: float | None = None  # gap reached (exact solvers; anytime solvers when capped)


@dataclass
class Row:
    name: str
    cells: dict[tuple[int, float], Cell] = field(default_factory=dict)


# ------------------------------------------------------------------------------ gpo rules
@dataclass(frozen=True)
class GpoSolver:
    name: str
    make: Any  # eta -> UpdateRule (eta ignored by parameter-free rules)
    alternating: bool
    averaging: str
    tuned: bool = False


GPO_SOLVERS = (
    GpoSolver("gpo hedge (tuned η, simult., uniform avg)", gc.hedge, False, "uniform", tuned=True),
    GpoSolver(
        "gpo optimistic hedge (tuned η, simult., uniform avg)",
        lambda eta: gc.optimistic(gc.hedge(eta)),
        False,
        "uniform",
        tuned=True,
    ),
    GpoSolver("gpo RM+ (alt., linear avg)", lambda eta: gc.regret_matching_plus(), True, "linear"),
    GpoSolver(
        "gpo RM+ (alt., quadratic avg)", lambda eta: gc.regret_matching_plus(), True, "quadratic"
    ),
    GpoSolver(
        "gpo PRM+ (alt., quadratic avg)",
        lambda eta: predictive_regret_matching_plus(),
        True,
        "quadratic",
    ),
    GpoSolver(
        "gpo DRM+ (discounted RM+, α=1.5; alt., quadratic avg)",
        lambda eta: gc.discounted_regret_matching_plus(),
        True,
        "quadratic",
    ),
    # Without alternation: plain RM+ stalls, the prediction is what makes PRM+ converge.
    GpoSolver(
        "gpo RM+ (simult., linear avg)", lambda eta: gc.regret_matching_plus(), False, "linear"
    ),
    GpoSolver(
        "gpo PRM+ (simult., quadratic avg)",
        lambda eta: predictive_regret_matching_plus(),
        False,
        "quadratic",
    ),
)


def _play(game: gc.MatrixGame, solver: GpoSolver, eta: float, steps: int, tol: float | None):
    return gc.play(
        game,
        solver.make(eta),
        steps=steps,
        alternating=solver.alternating,
        averaging=solver.averaging,
        tol=tol,
        record_every=max(1, steps // 1000),
    )


def _per_step(game: gc.MatrixGame, solver: GpoSolver) -> float:
    seconds, _ = cm.best_of(
        lambda: _play(game, solver, 0.1, 30, None), repeat_below=1.0, max_repeat=3
    )
    return seconds / 30


def _tune(game: gc.MatrixGame, solver: GpoSolver, tol: float, per_step: float, budget: float):
    """Pick eta from ETA_GRID: fewest steps to ``tol`` on ``game`` (else the lowest gap)."""
    steps = max(50, int(budget / len(ETA_GRID) / per_step))
    scores = []
    t0 = time.perf_counter()
    for eta in ETA_GRID:
        traj = _play(game, solver, eta, steps, tol)
        reached = float(traj.final_gap) <= tol
        score = traj.num_steps if reached else float(traj.final_gap)
        scores.append((0 if reached else 1, score, eta))
    best = min(scores)
    return best[2], time.perf_counter() - t0


def run_gpo(
    solver: GpoSolver, n: int, seed: int, cap: float, tune_budget: float, skip: set
) -> dict:
    game = gc.MatrixGame.random(n, seed=seed)
    per_step = _per_step(game, solver)
    budget = max(100, int(cap / per_step))
    out = {}
    for tol in TOLS:
        if (solver.name, tol) in skip:
            out[tol] = Cell(status="skipped")
            continue
        eta, note = 0.1, ""
        if solver.tuned:
            held_out = gc.MatrixGame.random(n, seed=seed + 1000)
            eta, tune_s = _tune(held_out, solver, tol, per_step, tune_budget)
            note = f"η={eta:g} (tuned in {tune_s:.1f} s)"
        seconds, traj = cm.best_of(lambda: _play(game, solver, eta, budget, tol))
        final = float(traj.final_gap)
        recomputed = sv.gap(game.payoff, *traj.average)  # play's running gap, checked afresh
        if abs(recomputed - final) > 1e-9:
            raise AssertionError(f"{solver.name}: play's gap {final:.3e} != {recomputed:.3e}")
        if final <= tol:
            out[tol] = Cell(seconds, traj.num_steps, "ok", note)
        else:
            out[tol] = Cell(None, traj.num_steps, "capped", note, gap=final)
            skip.add((solver.name, tol))
    return out


SOLVE = "gpo solve (auto: pivoting up to 300 actions, else DRM+ on float32; certified)"


def run_solve(n: int, seed: int) -> dict:
    """``gc.solve(game, tol)``: the library's entry point for an equilibrium within ``tol``,
    timed whole (the float32 copy and the float64 certificate included)."""
    game = gc.MatrixGame.random(n, seed=seed)
    out = {}
    for tol in TOLS:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # out of steps: not reached
            try:
                seconds, sol = cm.best_of(lambda: gc.solve(game, tol))
            except RuntimeWarning as err:
                out[tol] = Cell(status="capped", note=str(err)[:60])
                continue
        g = sv.gap(game.payoff, sol.row, sol.col)
        if abs(g - float(sol.gap)) > 1e-9:
            raise AssertionError(f"gc.solve's gap {float(sol.gap):.3e} != {g:.3e}")
        drm = sol.method.startswith("drm+")
        note = sol.method if drm else f"{sol.method}, {sol.iterations} pivots"
        out[tol] = Cell(seconds, sol.iterations if drm else None,
                        "ok" if g <= tol else "missed", note, gap=None if g <= tol else g)
    return out


# ------------------------------------------------------------------------- exact solvers
EXACT = (
    ("HiGHS: gc.solve_lp (1 LP + duals)", "highs_solve_lp"),
    ("gpo solve_pivot (DRM+ warm start + support pivoting)", "gpo_solve_pivot"),
    ("nashpy linear_program (scipy linprog)", "nashpy_lp"),
    ("OpenSpiel lp_solver (cvxpy+ECOS)", "openspiel_lp"),
    ("nashpy support enumeration", "nashpy_support_enumeration"),
    ("nashpy Lemke-Howson", "nashpy_lemke_howson"),
)


def run_exact(
    runner: cm.CappedRunner, label: str, fn: str, payoff: np.ndarray, cap: float, skip: set
):
    if (label, "exact") in skip:
        return {tol: Cell(status="skipped") for tol in TOLS}
    status, seconds, result = runner.run("_solvers", fn, (payoff,), cap)
    if status == "capped":
        skip.add((label, "exact"))
        return {tol: Cell(status="capped") for tol in TOLS}
    if status == "error":
        short = str(result).strip().splitlines()[-1][:80]
        return {tol: Cell(status="error", note=short) for tol in TOLS}
    x, y = result
    g = sv.gap(payoff, x, y)
    return {
        tol: Cell(seconds, None, "ok" if g <= tol else "missed", gap=g) for tol in TOLS
    }


# ----------------------------------------------------------------------- anytime solvers
def run_anytime(label: str, fn: Any, payoff: np.ndarray, cap: float, skip: set):
    tols = [t for t in TOLS if (label, t) not in skip]
    out = {t: Cell(status="skipped") for t in TOLS if t not in tols}
    if not tols:
        return out
    results, last = fn(payoff, tols, cap)
    for tol in tols:
        r = results[tol]
        if r is None:
            out[tol] = Cell(status="capped", gap=last)
            skip.add((label, tol))
        else:
            out[tol] = Cell(r[0], r[1], "ok")
    return out


# ---------------------------------------------------------------------------------- table
def render(rows: list[Row], sizes: list[int], tol: float, base: str, cap: float) -> str:
    columns = ["solver"] + [f"n = {n}" for n in sizes]
    body = []
    for row in rows:
        cells = []
        for n in sizes:
            c = row.cells.get((n, tol), Cell(status="n/a"))
            ref = rows_by_name(rows, base).cells.get((n, tol))
            ref_s = ref.seconds if ref is not None and ref.status in ("ok", "missed") else None
            if c.status in ("ok",) and c.seconds is not None:
                ratio = c.seconds / ref_s if ref_s else None
                text = f"{cm.fmt_time(c.seconds)} ({cm.fmt_ratio(ratio)})"
                if c.iters:
                    text += f", {c.iters} it"
            elif c.status == "missed":
                text = f"gap {c.gap:.1e} > target"
            elif c.status == "capped":
                ratio = cap / ref_s if ref_s else None
                text = f"> {cap:g} s (> {cm.fmt_ratio(ratio)})"
                if c.gap is not None:
                    text += f", gap {c.gap:.1e}"
            elif c.status == "skipped":
                text = "> cap (skipped)"
            elif c.status == "error":
                text = f"error: {c.note}"
            else:
                text = "n/a"
            if c.note and c.status != "error":
                text += f"; {c.note}"
            cells.append(text)
        body.append([row.name] + cells)
    return cm.markdown_table(columns, body)


def rows_by_name(rows: list[Row], name: str) -> Row:
    return next(r for r in rows if r.name == name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cm.parse_common(parser)
    parser.add_argument("--sizes", type=int, nargs="*", default=None, help="override the sizes")
    parser.add_argument("--cap", type=float, default=None, help="seconds per solver, size, target")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = args.sizes or ([10, 100] if args.quick else [10, 30, 100, 300, 1000])
    cap = args.cap or (3.0 if args.quick else 30.0)
    highs_cap = max(cap, 30.0 if args.quick else 120.0)
    tune_budget = cap / 2
    cm.limit_threads(args.threads)
    t_start = time.perf_counter()
    head = cm.header(
        "Time to Nash gap (random U[-1,1] zero-sum games, square)",
        [os.path.relpath(sys.executable), *sys.argv] if argv is None else ["bench_solvers", *argv],
        {
            "settings": f"sizes {sizes}, seed {args.seed}, cap {cap:g} s per solver/size/target "
            f"(HiGHS reference: {highs_cap:g} s), BLAS threads {args.threads}, η grid {ETA_GRID}",
        },
    )
    sys.stdout.write(head + "\n")
    sys.stdout.flush()

    names = [SOLVE] + [s.name for s in GPO_SOLVERS] + [e[0] for e in EXACT] + [
        "OpenSpiel CFR+ (C++, turn-based)",
        "nashpy fictitious play",
    ]
    rows = [Row(name) for name in names]
    byname = {r.name: r for r in rows}
    skip: set = set()
    runner = cm.CappedRunner(args.threads)
    try:
        for n in sizes:
            payoff = gc.MatrixGame.random(n, seed=args.seed).payoff
            # first: a worker restarted after a capped exact solver imports its libraries on
            # the second core for a while, which slowed this millisecond call by half at n <= 30
            for tol, cell in run_solve(n, args.seed).items():
                byname[SOLVE].cells[(n, tol)] = cell
            for label, fn in EXACT:
                this_cap = highs_cap if label.startswith("HiGHS: gc.solve_lp") else cap
                for tol, cell in run_exact(runner, label, fn, payoff, this_cap, skip).items():
                    byname[label].cells[(n, tol)] = cell
            for solver in GPO_SOLVERS:
                for tol, cell in run_gpo(solver, n, args.seed, cap, tune_budget, skip).items():
                    byname[solver.name].cells[(n, tol)] = cell
            for label, fn in (
                ("OpenSpiel CFR+ (C++, turn-based)", sv.openspiel_cfr_plus),
                ("nashpy fictitious play", sv.nashpy_fictitious_play),
            ):
                for tol, cell in run_anytime(label, fn, payoff, cap, skip).items():
                    byname[label].cells[(n, tol)] = cell
            done = time.perf_counter() - t_start
            print(f"<!-- n = {n} done at {done:.0f} s -->", file=sys.stderr)
    finally:
        runner.close()

    base = EXACT[0][0]
    text = head + "\n"
    for tol in TOLS:
        text += f"\n#### Time to Nash gap ≤ {tol:g} (ratio to {base}; iterations)\n\n"
        text += render(rows, sizes, tol, base, cap)
    exact_gaps = [
        c.gap for label, _ in EXACT for c in byname[label].cells.values() if c.gap is not None
    ]
    text += (
        f"\nExact solvers' own Nash gaps: max {max(exact_gaps):.1e} over all sizes.\n"
        if exact_gaps
        else ""
    )
    text += f"Load average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}; "
    text += f"total wall time {time.perf_counter() - t_start:.0f} s.\n"
    if args.out:
        cm.write_atomic(args.out, text)
    sys.stdout.write(text[len(head):])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
