"""How gpo_core.play scales: big games, the cost of one step, batches, and a 10k x 10k game.

Parts (``--parts abcdg``; ``--quick`` runs a, b, c, g on smaller settings and never d):

a. Time to Nash gap 1e-4 on n x n random games (U[-1, 1]) for n in {100, 1000, 3000}: the
   regret-matching rules of the library (RM+, predictive RM+ and discounted RM+, alternating,
   linear or quadratic averaging) against ``gc.solve_lp`` (one HiGHS LP and its duals, killed at
   the cap and then reported as "not finished") and, at n = 100, OpenSpiel's C++ CFR+;
   iterations against plain alternating RM+ with linear averaging (= CFR+ on a matrix game);
   ``gc.solve`` runs discounted RM+ (``FASTEST``) on a float32 copy of the game with its answer
   certified in float64 (``method='drm+'``; the copy and the check are timed too), and its
   automatic choice. ``gc.solve_pivot`` (exact: discounted-RM+ warm start, then support pivoting) is
   timed on the same game; its gap is that of an exact answer.
b. One ``gc.play`` step's cost against the two bare matrix-vector products it needs (``A @ y``
   and ``x @ A``, float64) on 1000 x 1000 and 3000 x 3000: per-step times of ``play`` and of a
   loop of the two products are measured alternately, several times, and the ratio of the
   medians is reported, per call and for one more step (``play`` with twice the steps minus
   ``play`` once, per step: the steady-state cost without the call's one-off setup; target
   <= 1.15); the same for a float32 game, and for the payoff as a
   torch tensor (float64 and float32; on CPU, and on CUDA when a GPU is present, where wall time
   with ``torch.cuda.synchronize()`` is compared).
c. 10,000 games of 10 x 10 in one batched ``play`` call against a Python loop of ``play`` over
   the single games (same rule, same fixed number of steps; RM+ and PRM+ alternating, Hedge
   simultaneous with a uniform average; target >= 25x). The batched result
   is checked against the loop's to 1e-12 on the games the loop ran.
d. (full run only, and only with enough free memory) a 10,000 x 10,000 float64 game solved to
   Nash gap 1e-3 in a fresh process, with that process's peak resident memory (``VmHWM``) and
   ``play``'s own peak allocations (``tracemalloc``) against the 800 MB matrix, then ``gc.solve``
   on it (its float32 copy adds half the matrix); then HiGHS
   (``gc.solve_lp``) on the same game in a worker killed after ``--d-highs-cap`` seconds.
g. (only where CUDA is visible, or with ``--g-device``) on the GPU: one ``play`` step on a tensor
   game against the two bare products in torch on the device (wall time, synchronised; 1000,
   3000 and 10,000 actions, float64 and float32), and the time discounted RM+ takes to gap 1e-4
   (1e-3 on the 10k game) on the device against the same rule on a numpy game on this machine's
   CPU, each average re-checked in float64 on the host. ``benchmarks/gpu_check.sh`` runs it
   with the CUDA tests on a GPU machine; ``--g-device cpu`` rehearses it here.

Usage::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/bench_scale.py --quick
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/bench_scale.py \
        --out benchmarks/results/scale_full.md
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import tracemalloc
import warnings
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as cm  # noqa: E402
import _solvers as sv  # noqa: E402

import gpo_core as gc  # noqa: E402
from gpo_core.pivot import default_warm_steps  # noqa: E402
from gpo_core.predictive import predictive_regret_matching_plus  # noqa: E402

RULES = (
    ("RM+ (alt., linear avg) [plain]", gc.regret_matching_plus, "linear"),
    ("RM+ (alt., quadratic avg)", gc.regret_matching_plus, "quadratic"),
    ("PRM+ (alt., linear avg)", predictive_regret_matching_plus, "linear"),
    ("PRM+ (alt., quadratic avg)", predictive_regret_matching_plus, "quadratic"),
    ("DRM+ (alt., quadratic avg)", gc.discounted_regret_matching_plus, "quadratic"),
)
FASTEST = RULES[-1]  # the rule the float32 rows and part d run (fewest iterations in part a)


def _play(game, make, averaging, steps, tol=None):
    return gc.play(
        game,
        make(),
        steps=steps,
        alternating=True,
        averaging=averaging,
        tol=tol,
        record_every=max(1, steps // 1000),
    )


def _float32_game(game: gc.MatrixGame) -> gc.MatrixGame:
    """The same game stored (and solved) in float32."""
    return gc.MatrixGame(game.payoff.astype(np.float32))


# ----------------------------------------------------------------------------------- part a
def part_a(sizes: list[int], cap: float, highs_cap: float, threads: int, tol: float = 1e-4) -> str:
    rows = []
    runner = cm.CappedRunner(threads)
    try:
        for n in sizes:
            game = gc.MatrixGame.random(n, seed=0)
            status, highs_s, result = runner.run(
                "_solvers", "highs_solve_lp", (game.payoff,), highs_cap
            )
            highs_ok = status == "ok"
            if highs_ok:
                hgap = sv.gap(game.payoff, *result)
                rows.append([n, "HiGHS: gc.solve_lp (1 LP + duals)", cm.fmt_time(highs_s), "1.00×",
                             "—", "—",
                             f"exact (gap {hgap:.0e})"])
            else:
                rows.append([n, "HiGHS: gc.solve_lp (1 LP + duals)", f"not finished in {highs_cap:g} s",
                             "—", "—", "—", status])
            base_iters = None
            timings = []
            for label, make, averaging in RULES:
                pilot, _ = cm.best_of(
                    lambda: _play(game, make, averaging, 20), repeat_below=1.0, max_repeat=3
                )
                budget = max(100, int(cap / (pilot / 20)))
                seconds, traj = cm.best_of(lambda: _play(game, make, averaging, budget, tol))
                reached = float(traj.final_gap) <= tol
                if base_iters is None:
                    base_iters = traj.num_steps if reached else None
                timings.append((seconds if reached else float("inf"), label))
                if highs_ok:
                    ratio = cm.fmt_ratio(seconds / highs_s) if reached else "—"
                else:
                    ratio = f"< {cm.fmt_ratio(seconds / highs_cap)}" if reached else "—"
                it_ratio = (
                    cm.fmt_ratio(traj.num_steps / base_iters) if reached and base_iters else "—"
                )
                rows.append([n, f"gpo {label}", cm.fmt_time(seconds) if reached else f"> {cap:g} s",
                             ratio, traj.num_steps, it_ratio,
                             f"gap {float(traj.final_gap):.1e}"])
            # gc.solve: the library's entry point for an equilibrium within tol. Its DRM+ route
            # on a float32 copy (the copy and the float64 certificate timed too), and "auto"
            # (pivoting up to 300 actions, else that route)
            for label, kwargs in (
                ("gc.solve(method='drm+'): DRM+ on a float32 copy, certified in float64",
                 {"method": "drm+", "mixed": True, "max_steps": budget}),
                ("gc.solve (auto)", {"max_steps": budget}),
            ):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # out of steps: shown below
                    seconds, sol = cm.best_of(lambda: gc.solve(game, tol, **kwargs))
                gap64 = sv.gap(game.payoff, sol.row, sol.col)
                reached = gap64 <= tol
                if kwargs.get("method") == "drm+":  # a rule; "auto" may pivot (shown apart)
                    timings.append((seconds if reached else float("inf"), label))
                if highs_ok:
                    ratio = cm.fmt_ratio(seconds / highs_s) if reached else "—"
                else:
                    ratio = f"< {cm.fmt_ratio(seconds / highs_cap)}" if reached else "—"
                drm = sol.method.startswith("drm+")
                rows.append([n, f"gpo {label}", cm.fmt_time(seconds) if reached else "not reached",
                             ratio, sol.iterations if drm else f"{sol.iterations} pivots",
                             cm.fmt_ratio(sol.iterations / base_iters) if drm and base_iters
                             else "—",
                             f"gap {gap64:.1e} (float64 check), {sol.method}"])
            best = min(timings)
            if np.isfinite(best[0]):
                rows.append([n, f"**fastest library rule: {best[1]}**", cm.fmt_time(best[0]),
                             cm.fmt_ratio(best[0] / highs_s) if highs_ok
                             else f"< {cm.fmt_ratio(best[0] / highs_cap)}", "", "", ""])
            # The library's exact solver: RM+ warm start, then support pivoting; its answer is
            # an equilibrium to rounding (it is certified, or HiGHS's answer is returned).
            pivot_s, sol = cm.best_of(lambda: gc.solve_pivot(game))
            pgap = sv.gap(game.payoff, sol.row, sol.col)
            warm = default_warm_steps(n, n)
            pivot_ok = pgap <= tol
            if highs_ok:
                ratio = cm.fmt_ratio(pivot_s / highs_s)
            else:
                ratio = f"< {cm.fmt_ratio(pivot_s / highs_cap)}"
            rows.append([n, "**gpo solve_pivot** (exact: DRM+ warm start + support pivoting)",
                         cm.fmt_time(pivot_s), ratio,
                         f"{warm} DRM+ + {int(sol.pivots)} pivots", "—",
                         f"exact (gap {pgap:.0e}, method {sol.method})"])
            if n <= 100:
                results, last = sv.openspiel_cfr_plus(game.payoff, [tol], cap)
                r = results[tol]
                if r is None:
                    rows.append([n, "OpenSpiel CFR+ (C++)", f"> {cap:g} s", "—", "—", "—",
                                 f"gap {last:.1e}"])
                else:
                    rows.append([n, "OpenSpiel CFR+ (C++)", cm.fmt_time(r[0]),
                                 cm.fmt_ratio(r[0] / highs_s) if highs_ok else "—", r[1],
                                 cm.fmt_ratio(r[1] / base_iters) if base_iters else "—",
                                 f"fastest library rule is {cm.fmt_ratio(r[0] / best[0])} faster; "
                                 f"solve_pivot {cm.fmt_ratio(r[0] / pivot_s)} faster"
                                 + ("" if pivot_ok else " (but missed the gap)")])
            print(f"<!-- part a: n = {n} done -->", file=sys.stderr)
    finally:
        runner.close()
    cols = ["n", "solver", "time to gap 1e-4", "ratio to HiGHS", "iterations",
            "iterations vs plain RM+", "note"]
    return cm.markdown_table(cols, rows)


# ----------------------------------------------------------------------------------- part b
def _bare_pair(a: np.ndarray, steps: int) -> tuple[float, float]:
    """Per-pair (wall, CPU) seconds of ``steps`` pairs ``a @ y``, ``x @ a``."""
    n = a.shape[0]
    x = np.full(n, 1.0 / n, dtype=a.dtype)
    y = x.copy()
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        a @ y
        x @ a
    return (time.perf_counter() - w0) / steps, (time.process_time() - c0) / steps


def step_cost(game: gc.MatrixGame, make: Any, steps: int, reps: int, **kwargs) -> dict[str, float]:
    """Per-step costs of ``play`` and of the two bare products, measured in alternating blocks.

    Both wall-clock and CPU time (``time.process_time``: this process's own time on a core, which
    a busy shared machine inflates far less than wall time) are kept; the ratios are taken of
    the medians over ``reps`` blocks and of the minima. ``play`` has a one-off cost per call
    (its buffers, and the extra product ``A^T x_1`` the averaged gap needs) that a short block
    spreads over few steps, so each rep also runs ``2 steps`` and the *marginal* cost of one
    step, ``(t(2 steps) - t(steps)) / steps``, is reported beside the per-call average.
    """
    bare_w, bare_c, play_w, play_c, marg_c = [], [], [], [], []
    for _ in range(reps):
        w, c = _bare_pair(game.payoff, steps)
        bare_w.append(w)
        bare_c.append(c)
        w0, c0 = time.perf_counter(), time.process_time()
        gc.play(game, make(), steps=steps, record_every=steps, **kwargs)
        play_w.append((time.perf_counter() - w0) / steps)
        play_c.append((time.process_time() - c0) / steps)
        c0 = time.process_time()
        gc.play(game, make(), steps=2 * steps, record_every=2 * steps, **kwargs)
        marg_c.append((time.process_time() - c0) / steps - play_c[-1])
    med = np.median
    return {
        "play_cpu": float(med(play_c)),
        "bare_cpu": float(med(bare_c)),
        "cpu_ratio": float(med(play_c) / med(bare_c)),
        "min_ratio": float(min(play_w) / min(bare_w)),
        "marginal_ratio": float(med(marg_c) / med(bare_c)),
    }


def _torch_rows(
    game: gc.MatrixGame, case: tuple, steps: int, reps: int, threads: int
) -> list[list[str]]:
    """The same step-cost comparison with the payoff as a torch tensor (CPU, and CUDA if present).

    Empty when torch is missing. CUDA launches are
    asynchronous, so each block ends with ``torch.cuda.synchronize()`` and only wall time counts
    there (the CPU time of a GPU run measures the launching thread, not the work).
    """
    try:
        import torch
    except ImportError:
        return []
    torch.set_num_threads(threads)  # torch keeps its own pool: give it the BLAS thread count
    label, make, kwargs = case
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        for dtype in (torch.float64, torch.float32):
            # a writable copy: torch warns on (and cannot protect) numpy's read-only payoff
            a = torch.tensor(np.array(game.payoff), dtype=dtype, device=device)
            tgame = gc.MatrixGame(a)
            sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
            v = torch.full((a.shape[0],), 1.0 / a.shape[0], dtype=dtype, device=device)
            bare_w, play_w, bare_c, play_c, marg_w, marg_c = [], [], [], [], [], []
            gc.play(tgame, make(), steps=2, record_every=2, **kwargs)  # warm-up (CUDA context)
            for _ in range(reps):
                sync()
                w0, c0 = time.perf_counter(), time.process_time()
                for _ in range(steps):
                    a @ v
                    v @ a
                sync()
                bare_w.append((time.perf_counter() - w0) / steps)
                bare_c.append((time.process_time() - c0) / steps)
                w0, c0 = time.perf_counter(), time.process_time()
                gc.play(tgame, make(), steps=steps, record_every=steps, **kwargs)
                sync()
                play_w.append((time.perf_counter() - w0) / steps)
                play_c.append((time.process_time() - c0) / steps)
                w0, c0 = time.perf_counter(), time.process_time()
                gc.play(tgame, make(), steps=2 * steps, record_every=2 * steps, **kwargs)
                sync()
                marg_w.append((time.perf_counter() - w0) / steps - play_w[-1])
                marg_c.append((time.process_time() - c0) / steps - play_c[-1])
            med = np.median
            if device == "cuda":
                ratio = float(med(play_w) / med(bare_w))
                marginal = float(med(marg_w) / med(bare_w))
                rows.append([game_label(game), f"torch {str(dtype)[6:]} cuda", label,
                             cm.fmt_time(float(med(play_w))) + " (wall)",
                             cm.fmt_time(float(med(bare_w))) + " (wall)", f"{ratio:.3f}× (wall)",
                             f"{min(play_w) / min(bare_w):.3f}×", f"{marginal:.3f}× (wall)",
                             "met" if marginal <= 1.15 else "missed"])
            else:
                ratio = float(med(play_c) / med(bare_c))
                marginal = float(med(marg_c) / med(bare_c))
                rows.append([game_label(game), f"torch {str(dtype)[6:]} cpu", label,
                             cm.fmt_time(float(med(play_c))), cm.fmt_time(float(med(bare_c))),
                             f"{ratio:.3f}×", f"{min(play_w) / min(bare_w):.3f}×",
                             f"{marginal:.3f}×", "met" if marginal <= 1.15 else "missed"])
    return rows


def game_label(game: gc.MatrixGame) -> str:
    m, n = game.shape
    return f"{m}×{n}"


def part_b(sizes: list[int], reps: int, threads: int = 1) -> str:
    rows = []
    cases = (
        ("RM+ (alt., linear avg)", gc.regret_matching_plus,
         dict(alternating=True, averaging="linear")),
        ("PRM+ (alt., quadratic avg)", predictive_regret_matching_plus,
         dict(alternating=True, averaging="quadratic")),
        ("PRM+ (alt., quadratic avg), tol=1e-12", predictive_regret_matching_plus,
         dict(alternating=True, averaging="quadratic", tol=1e-12)),
        ("DRM+ (alt., quadratic avg), tol=1e-12", gc.discounted_regret_matching_plus,
         dict(alternating=True, averaging="quadratic", tol=1e-12)),
        ("hedge(0.1) (simult., uniform avg)", lambda: gc.hedge(0.1), {}),
        ("mmd(0.1, alpha=0.05) (simult., uniform avg)", lambda: gc.mmd(0.1, alpha=0.05), {}),
        ("optimistic(hedge(0.1)) (simult., uniform avg)",
         lambda: gc.optimistic(gc.hedge(0.1)), {}),
    )
    for n in sizes:
        game = gc.MatrixGame.random(n, seed=0)
        steps = max(5, int(50 * (1000 / n) ** 2))  # blocks of about 50 ms
        f32 = _float32_game(game)
        runs = ((game, "float64", cases, steps), (f32, "float32", cases[:4], 2 * steps))
        for g, dtype, todo, k in runs:
            for label, make, kwargs in todo:
                r = step_cost(g, make, k, reps, **kwargs)
                verdict = "met" if r["marginal_ratio"] <= 1.15 else "missed"
                rows.append([f"{n}×{n}", dtype, label, cm.fmt_time(r["play_cpu"]),
                             cm.fmt_time(r["bare_cpu"]), f"{r['cpu_ratio']:.3f}×",
                             f"{r['min_ratio']:.3f}×", f"{r['marginal_ratio']:.3f}×", verdict])
        rows.extend(_torch_rows(game, cases[0], steps, reps, threads))
        print(f"<!-- part b: n = {n} done -->", file=sys.stderr)
    cols = ["game", "dtype", "rule", "play: CPU time per step (per call)",
            "bare A@y + x@A (CPU)", "ratio per call (median CPU)", "ratio per call (min wall)",
            "ratio of one more step (median CPU)", "target ≤ 1.15× (one more step)"]
    return cm.markdown_table(cols, rows)


def part_c(num_games: int, loop_games: int, steps: int) -> str:
    games = gc.MatrixGame.random(10, seed=0, batch_shape=(num_games,))
    singles = [gc.MatrixGame(games.payoff[i]) for i in range(loop_games)]
    rows = []
    hedge = ("hedge(0.1) (simult., uniform avg)", lambda: gc.hedge(0.1), None)
    for label, make, averaging in (RULES[0], RULES[3], hedge):
        if averaging is None:  # Hedge: its theory's schedule (simultaneous, uniform average)
            run = lambda g: gc.play(g, make(), steps=steps, record_every=1)  # noqa: E731
        else:
            run = lambda g: _play(g, make, averaging, steps)  # noqa: E731
        batched_s, batched = cm.best_of(lambda: run(games), max_repeat=3)
        t0 = time.perf_counter()
        loop = [run(g) for g in singles]
        loop_s = (time.perf_counter() - t0) * num_games / loop_games
        err = max(
            float(np.max(np.abs(batched.average.row[i] - t.average.row)))
            for i, t in enumerate(loop)
        )
        if err > 1e-12:  # the batched fast path must give the single games' answers
            raise AssertionError(f"batched play differs from the loop by {err:.1e} > 1e-12")
        ratio = loop_s / batched_s
        scaled = (
            "" if loop_games == num_games
            else f" (timed on {loop_games}, ×{num_games // loop_games})"
        )
        rows.append([label, steps, cm.fmt_time(batched_s), cm.fmt_time(loop_s) + scaled,
                     f"{ratio:.1f}×", "met" if ratio >= 25 else "missed", f"{err:.0e}"])
    cols = [f"rule ({num_games:,} games of 10×10)", "steps", "one batched play",
            "loop of single plays",
            "speed-up", "target ≥ 25×", "max abs. difference batched vs loop (avg. strategy)"]
    return cm.markdown_table(cols, rows)


# ----------------------------------------------------------------------------------- part g
G_CASES = (
    ("RM+ (alt., linear avg)", gc.regret_matching_plus,
     dict(alternating=True, averaging="linear")),
    ("DRM+ (alt., quadratic avg), tol=1e-12", gc.discounted_regret_matching_plus,
     dict(alternating=True, averaging="quadratic", tol=1e-12)),
    ("hedge(0.1) (simult., uniform avg)", lambda: gc.hedge(0.1), {}),
)


def _device_step_rows(torch: Any, game: gc.MatrixGame, device: str, reps: int) -> list[list[str]]:
    """Part g's step costs: one ``play`` step on a ``device`` tensor game against the two bare
    products in torch on the same device, in wall time with the device synchronised around each
    block (a GPU's CPU time measures the launching thread, not the work)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    n = game.shape[0]
    rows = []
    for dtype in (torch.float64, torch.float32):
        a = torch.tensor(np.array(game.payoff), dtype=dtype, device=device)
        tgame = gc.MatrixGame(a)
        v = torch.full((n,), 1.0 / n, dtype=dtype, device=device)
        sync()
        t0 = time.perf_counter()
        for _ in range(5):
            a @ v
            v @ a
        sync()
        pair = (time.perf_counter() - t0) / 5
        for label, make, kwargs in G_CASES:
            pilot = []
            for k in (2, 2, 22):  # a warm-up, then 2 and 22 steps: 20 steps without the setup
                sync()
                t0 = time.perf_counter()
                gc.play(tgame, make(), steps=k, record_every=k, **kwargs)
                sync()
                pilot.append(time.perf_counter() - t0)
            per_step = max((pilot[2] - pilot[1]) / 20, pair)
            # blocks of about 50 ms of play (a GPU step can cost many bare pairs: launches)
            steps = int(min(5000, max(5, 0.05 / per_step)))
            bare, per_call, marginal = [], [], []
            for _ in range(reps):
                sync()
                t0 = time.perf_counter()
                for _ in range(steps):
                    a @ v
                    v @ a
                sync()
                bare.append((time.perf_counter() - t0) / steps)
                t0 = time.perf_counter()
                gc.play(tgame, make(), steps=steps, record_every=steps, **kwargs)
                sync()
                per_call.append((time.perf_counter() - t0) / steps)
                t0 = time.perf_counter()
                gc.play(tgame, make(), steps=2 * steps, record_every=2 * steps, **kwargs)
                sync()
                marginal.append((time.perf_counter() - t0) / steps - per_call[-1])
            med = np.median
            one_more = float(med(marginal) / med(bare))
            rows.append([f"{n}×{n}", f"torch {str(dtype)[6:]} {device}", label, steps,
                         cm.fmt_time(float(med(per_call))), cm.fmt_time(float(med(bare))),
                         f"{med(per_call) / med(bare):.3f}×", f"{one_more:.3f}×",
                         "met" if one_more <= 1.15 else "missed"])
    return rows


def _time_to_gap(torch: Any, game: gc.MatrixGame, device: str | None, dtype: str, tol: float,
                 cap: float) -> tuple[float, int, float]:
    """(seconds, steps, float64 gap of the average) for ``FASTEST`` to ``tol`` on ``game`` stored
    as a ``device`` tensor of ``dtype`` (``device=None``: a numpy array on the host)."""
    label, make, averaging = FASTEST
    if device is None:
        g = game if dtype == "float64" else _float32_game(game)
        sync = lambda: None  # noqa: E731
    else:
        g = gc.MatrixGame(torch.tensor(np.array(game.payoff), dtype=getattr(torch, dtype),
                                       device=device))
        sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    t0 = time.perf_counter()
    _play(g, make, averaging, 3)
    sync()
    budget = max(10, int(cap / max((time.perf_counter() - t0) / 3, 1e-7)))
    seconds, out = cm.best_of(lambda: (_play(g, make, averaging, budget, tol=tol), sync())[0])
    row = np.asarray(out.average.row.cpu() if device else out.average.row, dtype=np.float64)
    col = np.asarray(out.average.col.cpu() if device else out.average.col, dtype=np.float64)
    return seconds, int(out.num_steps), float(sv.gap(game.payoff, row, col))


def part_g(sizes: list[int], reps: int, device: str | None, threads: int = 1,
           cap: float = 60.0) -> str:
    """A GPU (or ``--g-device``): step costs against the bare products on the device, and time
    to gap for the fastest rule on the device against the same rule on this machine's CPU."""
    try:
        import torch
    except ImportError:
        return "Skipped: torch is not installed.\n"
    torch.set_num_threads(threads)  # torch keeps its own pool: give it the BLAS thread count
    if device is None:
        if not torch.cuda.is_available():
            return ("Skipped: no CUDA device visible (`--g-device cpu` rehearses this part on "
                    "CPU tensors).\n")
        device = "cuda"
    text = ""
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        text += (f"Device: {props.name}, {props.total_memory / 2**30:.0f} GiB, torch "
                 f"{torch.__version__}, CUDA {torch.version.cuda}.\n\n")
    step_rows, gap_rows = [], []
    for n in sizes:
        game = gc.MatrixGame.random(n, seed=0)
        step_rows += _device_step_rows(torch, game, device, reps)
        tol = 1e-4 if n <= 3000 else 1e-3
        for dtype in ("float64", "float32"):
            host_s, host_k, host_gap = _time_to_gap(torch, game, None, dtype, tol, cap)
            dev_s, dev_k, dev_gap = _time_to_gap(torch, game, device, dtype, tol, cap)
            gap_rows.append([f"{n}×{n}", dtype, f"{tol:g}", FASTEST[0],
                             f"{cm.fmt_time(host_s)} ({host_k} steps, gap {host_gap:.1e})",
                             f"{cm.fmt_time(dev_s)} ({dev_k} steps, gap {dev_gap:.1e})",
                             f"{host_s / dev_s:.1f}×"])
        print(f"<!-- part g: n = {n} done -->", file=sys.stderr)
    text += cm.markdown_table(
        ["game", "payoff", "rule", f"steps per block (of {reps})", "play: wall time per step",
         "bare A@y + x@A (wall)", "ratio per call", "ratio of one more step",
         "target ≤ 1.15× (one more step)"], step_rows)
    text += "\n" + cm.markdown_table(
        ["game", "dtype", "gap", "rule", "numpy on this machine's CPU",
         f"torch on {device}", "speed-up"], gap_rows)
    return text


# ----------------------------------------------------------------------------------- part d
def part_d(n: int, tol: float, cap: float, threads: int, highs_cap: float = 600.0) -> str:
    """Run :func:`part_d_child` in a fresh process, so that its peak RSS is this part's alone."""
    need_gib = 3 * n * n * 8 / 2**30 + 1.0
    avail = cm.mem_available_gib()
    if not avail >= need_gib:
        return f"Skipped: {avail:.1f} GiB available, {need_gib:.1f} GiB wanted.\n"
    runner = cm.CappedRunner(threads)
    try:
        status, _, text = runner.run("bench_scale", "part_d_child", (n, tol, cap), cap + 120.0,
                                     repeat_below=0.0)
    finally:
        runner.close()
    text = text if status == "ok" else f"Part d failed: {status} {text}\n"
    if highs_cap > 0:
        runner = cm.CappedRunner(threads)
        try:
            status, seconds, result = runner.run("_solvers", "highs_random_game", (n, 0),
                                                 highs_cap, repeat_below=0.0)
        finally:
            runner.close()
        if status == "ok":
            text += (f"\nHiGHS (`gc.solve_lp`) on the same game: solved in {seconds:.0f} s "
                     f"(drawing the game included), gap {result[2]:.0e}.\n")
        elif status == "capped":
            text += f"\nHiGHS (`gc.solve_lp`) on the same game: not finished in {highs_cap:g} s.\n"
        else:
            text += f"\nHiGHS (`gc.solve_lp`) on the same game failed: {status} {result}\n"
    return text


def _peak_rss() -> int:
    """Peak resident memory of this process image, in bytes.

    ``VmHWM`` from /proc/self/status is reset by ``exec``; ``ru_maxrss`` is not (a spawned worker
    would report the parent's peak), so it is only the fallback off Linux.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def part_d_child(n: int, tol: float, cap: float, warmup: bool = False) -> str:
    if warmup:
        return ""
    rss0 = _peak_rss()
    t0 = time.perf_counter()
    game = gc.MatrixGame.random(n, seed=0)
    build = time.perf_counter() - t0
    rss_game = _peak_rss()
    matrix = game.payoff.nbytes
    label, make, averaging = FASTEST
    t0 = time.perf_counter()
    pilot = _play(game, make, averaging, 3)
    per_step = (time.perf_counter() - t0) / 3
    del pilot
    budget = max(10, int(cap / per_step))
    tracemalloc.start()
    t0 = time.perf_counter()
    traj = _play(game, make, averaging, budget, tol)
    seconds = time.perf_counter() - t0
    _, play_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_end = _peak_rss()
    gap = float(gc.nash_gap(game, traj.average.row, traj.average.col))
    reached = gap <= tol
    steps = traj.num_steps
    del traj
    # gc.solve on the same game: its float32 copy (half the matrix) is the memory it adds
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # out of steps: shown by its gap
        sol = gc.solve(game, tol, max_steps=budget)
    solve_s = time.perf_counter() - t0
    rss_solve = _peak_rss()
    solve_gap = float(sv.gap(game.payoff, sol.row, sol.col))
    rows = [
        ["matrix A (float64)", f"{matrix / 2**20:.0f} MiB", "1.00×"],
        ["fresh process's peak RSS before the game (interpreter, numpy, scipy)",
         f"{rss0 / 2**20:.0f} MiB", f"{rss0 / matrix:.2f}×"],
        ["peak RSS after `gc.MatrixGame.random(n)`", f"{rss_game / 2**20:.0f} MiB",
         f"{rss_game / matrix:.2f}×"],
        ["  of which added by building the game", f"{(rss_game - rss0) / 2**20:.0f} MiB",
         f"{(rss_game - rss0) / matrix:.2f}×"],
        ["peak RSS after play", f"{rss_end / 2**20:.0f} MiB", f"{rss_end / matrix:.2f}×"],
        ["play's own peak allocations (tracemalloc)", f"{play_peak / 2**20:.2f} MiB",
         f"{play_peak / matrix:.4f}×"],
        ["peak RSS after `gc.solve` (its float32 copy of the game included)",
         f"{rss_solve / 2**20:.0f} MiB", f"{rss_solve / matrix:.2f}×"],
    ]
    text = (
        f"{label} on a {n}×{n} game: "
        + (f"gap {gap:.1e} ≤ {tol:g} after {steps} steps in {seconds:.1f} s"
           if reached
           else f"NOT reached: gap {gap:.1e} after {steps} steps ({seconds:.1f} s cap)")
        + f" ({per_step * 1e3:.0f} ms per step; building the game took {build:.1f} s).\n"
        + f"`gc.solve(game, {tol:g})` on the same game: {sol.method}, {sol.iterations} "
        + f"{'steps' if sol.method.startswith('drm+') else 'pivots'} in {solve_s:.1f} s (the "
        + f"float32 copy and the float64 check included), gap {solve_gap:.1e} "
        + ("≤" if solve_gap <= tol else ">") + f" {tol:g}.\n\n"
    )
    return text + cm.markdown_table(["memory", "size", "vs matrix"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cm.parse_common(parser)
    parser.add_argument(
        "--parts", default=None, help="which parts to run, e.g. 'ab' (default: all)"
    )
    parser.add_argument(
        "--g-device", default=None,
        help="part g's torch device (default: cuda when visible, else part g is skipped; "
        "'cpu' rehearses it on CPU tensors)",
    )
    parser.add_argument(
        "--g-sizes", type=int, nargs="+", default=None,
        help="part g's game sizes (default 1000 3000 10000; --quick: 1000)",
    )
    parser.add_argument(
        "--d-highs-cap", type=float, default=600.0,
        help="seconds HiGHS gets on part d's 10k game (0 skips it; default 600)",
    )
    args = parser.parse_args(argv)
    parts = args.parts or ("abcg" if args.quick else "abcdg")
    cm.limit_threads(args.threads)
    t_start = time.perf_counter()
    q = args.quick
    g_sizes = args.g_sizes or ([1000] if q else [1000, 3000, 10_000])
    reps_g = 5 if q else 15
    settings = {
        "a": "sizes [100, 1000], rule cap 20 s, HiGHS cap 10 s" if q
        else "sizes [100, 1000, 3000], rule cap 120 s, HiGHS cap 120 s",
        "b": f"sizes [1000, 3000], {9 if q else 25} alternating blocks of ~50 ms each",
        "c": "10,000 games, loop timed on 500 games and scaled, 100 steps" if q
        else "10,000 games, loop over all 10,000, 100 steps",
        "d": f"10,000 × 10,000, gap 1e-3, cap 300 s, HiGHS cap {args.d_highs_cap:g} s",
        "g": f"sizes {g_sizes}, device {args.g_device or 'cuda (when visible)'}, {reps_g} alternating blocks "
        "of ~50 ms; gap 1e-4 (1e-3 above n = 3000), cap 60 s",
    }
    head = cm.header(
        "Scaling of gc.play",
        [os.path.relpath(sys.executable), *sys.argv] if argv is None else ["bench_scale", *argv],
        {f"part {p}": settings[p] for p in parts} | {"BLAS threads": str(args.threads)},
    )
    sys.stdout.write(head + "\n")
    sys.stdout.flush()
    text = head
    sections = {
        "a": ("a. Time to Nash gap 1e-4: library rules vs HiGHS and CFR+",
              lambda: part_a([100, 1000] if q else [100, 1000, 3000], 20.0 if q else 120.0,
                             10.0 if q else 120.0, args.threads)),
        "b": ("b. One play step vs the two bare matrix-vector products",
              lambda: part_b([1000, 3000], 9 if q else 25, args.threads)),
        "c": ("c. Batched games vs a Python loop",
              lambda: part_c(10_000, 500 if q else 10_000, 100)),
        "d": ("d. A 10,000 × 10,000 game to gap 1e-3, and its memory",
              lambda: part_d(10_000, 1e-3, 300.0, args.threads, args.d_highs_cap)),
        "g": ("g. On a GPU: one step vs the bare products, and time to gap vs the CPU",
              lambda: part_g(g_sizes, reps_g, args.g_device, args.threads)),
    }
    for p in parts:
        title, fn = sections[p]
        t0 = time.perf_counter()
        body = f"\n#### {title}\n\n" + fn()
        body += f"\n(part {p}: {time.perf_counter() - t0:.0f} s)\n"
        sys.stdout.write(body)
        sys.stdout.flush()
        text += body
    tail = (f"\nLoad average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}; "
            f"total wall time {time.perf_counter() - t_start:.0f} s.\n")
    sys.stdout.write(tail)
    text += tail
    if args.out:
        cm.write_atomic(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
