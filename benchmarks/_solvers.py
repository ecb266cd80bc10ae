"""The solvers the benchmarks compare, each behind one small function.

Exact solvers take ``(payoff, warmup=False)`` and return ``(x, y)``; they run in a
:class:`_common.CappedRunner` worker (``warmup=True`` solves a 2x2 game to pay for imports).
Anytime solvers (OpenSpiel's CFR+, nashpy's fictitious play) run here, in the benchmark process,
with the Nash gap of their average measured at checkpoints whose cost is *not* counted.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

_TINY = np.array([[1.0, -1.0], [-0.5, 0.5]])


def _pick(payoff: np.ndarray, warmup: bool) -> np.ndarray:
    return _TINY if warmup else payoff


def normalise(p: Any) -> np.ndarray:
    """Clip tiny negative round-off and renormalise a solver's strategy."""
    p = np.clip(np.asarray(p, dtype=np.float64).ravel(), 0.0, None)
    return p / p.sum()


def gap(payoff: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """``max_i (A y)_i - min_j (x^T A)_j``: the same number as gpo_core.nash_gap, unvalidated."""
    return float(np.max(payoff @ y) - np.min(x @ payoff))


# ---------------------------------------------------------------------------- exact solvers
def highs_solve_lp(payoff: np.ndarray, warmup: bool = False):
    """gpo_core.solve_lp: one HiGHS LP, the column strategy read from its duals."""
    import gpo_core as gc

    sol = gc.solve_lp(gc.MatrixGame(_pick(payoff, warmup)))
    return sol.row, sol.col


def gpo_solve_pivot(payoff: np.ndarray, warmup: bool = False):
    """gpo_core.solve_pivot: RM+ warm start, then support pivoting (exact, certified)."""
    import gpo_core as gc

    sol = gc.solve_pivot(gc.MatrixGame(_pick(payoff, warmup)))
    return sol.row, sol.col


def highs_random_game(n: int, seed: int = 0, warmup: bool = False):
    """gc.solve_lp on ``gc.MatrixGame.random(n, seed)``, built inside the worker.

    For the 10k game: sending an 800 MB matrix through the worker's pipe would cost more than
    drawing it again. The timed call includes drawing the game (seconds, against a cap of minutes).
    """
    import gpo_core as gc

    game = gc.MatrixGame.random(2 if warmup else n, seed=seed)
    sol = gc.solve_lp(game)
    return sol.row, sol.col, float(np.max(game.payoff @ sol.col) - np.min(sol.row @ game.payoff))


def openspiel_lp(payoff: np.ndarray, warmup: bool = False):
    """open_spiel.python.algorithms.lp_solver.solve_zero_sum_matrix_game (cvxpy + ECOS)."""
    import pyspiel
    from open_spiel.python.algorithms import lp_solver

    a = _pick(payoff, warmup)
    game = pyspiel.create_matrix_game(a.tolist(), (-a).tolist())
    p0, p1, _, _ = lp_solver.solve_zero_sum_matrix_game(game)
    return normalise(p0), normalise(p1)


def nashpy_lp(payoff: np.ndarray, warmup: bool = False):
    """nashpy.Game(A).linear_program(): scipy linprog (HiGHS) for each player."""
    import nashpy

    x, y = nashpy.Game(_pick(payoff, warmup)).linear_program()
    return normalise(x), normalise(y)


def nashpy_support_enumeration(payoff: np.ndarray, warmup: bool = False):
    """The first equilibrium nashpy's support enumeration yields (exponential in the size)."""
    import nashpy

    x, y = next(iter(nashpy.Game(_pick(payoff, warmup)).support_enumeration()))
    return normalise(x), normalise(y)


def nashpy_lemke_howson(payoff: np.ndarray, warmup: bool = False):
    """nashpy's Lemke-Howson from the first label (one equilibrium; pivoting)."""
    import warnings

    import nashpy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nashpy warns on degenerate games; the gap checks it
        x, y = nashpy.Game(_pick(payoff, warmup)).lemke_howson(initial_dropped_label=0)
    return normalise(x), normalise(y)


# --------------------------------------------------------------------------- anytime solvers
def _checkpoints() -> Any:
    """Iterations at which an anytime solver's average is measured: every one up to 20, then
    every 5% more (so a reported time overshoots the true crossing by at most ~5%)."""
    k = 1
    while True:
        yield k
        k = k + 1 if k < 20 else max(k + 1, int(k * 1.05))


def run_anytime(step: Any, average: Any, payoff: np.ndarray, tols: list[float], cap: float):
    """Drive ``step()`` until the gap of ``average()`` is below every tol, or ``cap`` seconds.

    Returns ``{tol: (seconds, iterations) or None}`` and the last gap measured; the seconds
    count only ``step()`` calls (the checkpoints' gap evaluations are excluded).
    """
    results: dict[float, Any] = {tol: None for tol in tols}
    spent, it, last_gap = 0.0, 0, float("inf")
    for target in _checkpoints():
        t0 = time.perf_counter()
        while it < target:
            step()
            it += 1
        spent += time.perf_counter() - t0
        x, y = average()
        last_gap = gap(payoff, x, y)
        for tol in tols:
            if results[tol] is None and last_gap <= tol:
                results[tol] = (spent, it)
        if all(r is not None for r in results.values()) or spent > cap:
            break
    return results, last_gap


def openspiel_cfr_plus(payoff: np.ndarray, tols: list[float], cap: float):
    """OpenSpiel's C++ CFR+ on the turn-based form of the matrix game.

    The timed part is the solver's construction plus its iterations; building the pyspiel game
    from the numpy matrix is not timed. CFR+ here is RM+ with alternating updates and linear
    averaging at the one information set of each player.
    """
    import pyspiel

    game = pyspiel.convert_to_turn_based(
        pyspiel.create_matrix_game(payoff.tolist(), (-payoff).tolist())
    )
    t0 = time.perf_counter()
    solver = pyspiel.CFRPlusSolver(game)
    build = time.perf_counter() - t0
    root = game.new_initial_state()
    child = root.child(0)  # player 1's information set does not reveal player 0's action
    m, n = payoff.shape

    def average():
        policy = solver.average_policy()
        x, y = np.zeros(m), np.zeros(n)
        for a, p in policy.get_state_policy(root):
            x[a] = p
        for a, p in policy.get_state_policy(child):
            y[a] = p
        return normalise(x), normalise(y)

    results, last = run_anytime(
        solver.evaluate_and_update_policy, average, payoff, tols, cap - build
    )
    return {t: (None if r is None else (r[0] + build, r[1])) for t, r in results.items()}, last


def nashpy_fictitious_play(payoff: np.ndarray, tols: list[float], cap: float, seed: int = 0):
    """nashpy's fictitious play; the average strategy is the normalised play count."""
    import nashpy

    np.random.seed(seed)  # nashpy breaks ties with the global numpy generator
    gen = nashpy.Game(payoff).fictitious_play(iterations=10**9)
    state = {"counts": next(gen)}

    def step():
        state["counts"] = next(gen)

    def average():
        rows, cols = state["counts"]
        return normalise(rows), normalise(cols)

    return run_anytime(step, average, payoff, tols, cap)
