"""The ``gpo`` command line.

``gpo solve GAME``  solve a zero-sum game (an OpenSpiel name or a .npy/.csv payoff file) with an
update rule, print the equilibrium, value and Nash gap next to the exact answer (``solve_pivot``), and
optionally plot the gap curve; ``--rule auto`` runs :func:`gpo_core.solve` instead (an
equilibrium within ``--tol``, certified).

``gpo demo``        the main job on its embedded defaults: solve OpenSpiel's toy games and print a
convergence table, run the theory checks (``proofs_check --quick``), and play a short GPO game
between two tiny language models.

``gpo train CONFIG``  run the GPO loop from a TOML config (see ``examples/gpo_train.toml``).

``gpo eval ...``  attack success and over-refusal of a model on red-team suites.

``gpo export --model M --run CKPT --out DIR``  a run's player as a Hugging Face model folder.

``gpo eval --model PATH [--suite NAME | --prompts FILE]...``  attack success rate and over-refusal of
a causal LM on red-team suites (``backends.evaluate``).

It lives in ``backends`` because it joins all three packages (``gpo_core``, ``backends``,
``proofs_check``) while ``gpo_core`` imports neither of the others. Heavy dependencies
(matplotlib, OpenSpiel, torch) are imported only by the commands that use them, so ``gpo solve``
runs without torch.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time
from typing import Sequence

import numpy as np

import gpo_core as gc

from gpo_core.games import MAX_ENTRIES

RULES = ("hedge", "mmd", "optimistic-hedge", "rm+", "prm+", "drm+")
AUTO = "auto"  # gc.solve: an equilibrium within --tol, certified (no trajectory)


def make_rule(name: str, eta: float | None, alpha: float, steps: int, game: gc.MatrixGame) -> gc.UpdateRule:
    """Build a rule by CLI name; ``eta=None`` picks Hedge's horizon-tuned step for this game."""
    if name not in RULES:
        raise ValueError(f"--rule must be one of {', '.join(RULES)}, got {name!r}")
    if name == "rm+":
        return gc.regret_matching_plus()
    if name == "prm+":
        return gc.predictive_regret_matching_plus()
    if name == "drm+":
        return gc.discounted_regret_matching_plus()
    if eta is None and name == "optimistic-hedge":
        # Optimistic Hedge's O(1/T) rate needs a constant step below ~1/(4 max|A|) (Syrgkanis
        # et al. 2015), not the O(1/sqrt(T)) horizon-tuned one.
        eta = 0.1 / max(float(np.max(np.abs(game.payoff))), 1e-12)
    if eta is None:
        m, n = game.shape
        width = max(game.payoff_range, 1e-12)
        eta = gc.horizon_tuned(steps, max(m, n, 2), width)(1)
    if name == "hedge":
        return gc.hedge(eta)
    if name == "optimistic-hedge":
        return gc.optimistic(gc.hedge(eta))
    return gc.mmd(eta, alpha)


def load_game(spec: str, max_entries: int = MAX_ENTRIES) -> gc.MatrixGame:
    """An OpenSpiel game name, or a path to a .npy/.csv payoff file: one game, not a batch."""
    from gpo_core._openspiel import LIST_GAMES  # noqa: PLC0415  (imports no OpenSpiel)

    named = "(" in spec or "." not in os.path.basename(spec)  # OpenSpiel names have no dot
    if os.path.exists(spec) or os.path.sep in spec or not named:
        if not os.path.exists(spec):
            raise ValueError(
                f"game file {spec!r} does not exist (nor is it an OpenSpiel game name): give a .npy or "
                f".csv payoff file, or an OpenSpiel game such as matrix_rps ({LIST_GAMES})"
            )
        game = gc.MatrixGame.from_file(spec)
    else:
        game = gc.MatrixGame.from_openspiel(spec, max_entries=max_entries)
    if game.batch_shape:
        raise ValueError(
            f"gpo solve takes one game, a payoff of shape (m, n); {spec!r} holds a batch of "
            f"shape {tuple(game.payoff.shape)}: save one game, or solve the batch from Python "
            "(gc.solve(gc.MatrixGame.from_file(path)) or gc.play)"
        )
    return game


STEP_RULES = ("hedge", "optimistic-hedge", "mmd")  # the rules with a step size (--eta)


def check_solve_args(args: argparse.Namespace) -> None:
    """Refuse options that the chosen rule ignores and bad values, before any work."""
    rule = args.rule
    if args.eta is not None:
        if rule not in STEP_RULES:
            raise ValueError(
                f"--eta is the step size of {', '.join(STEP_RULES)}; --rule {rule} has none "
                "(regret matching needs no step size): drop --eta"
            )
        if not (math.isfinite(args.eta) and args.eta > 0):
            raise ValueError(f"--eta must be a finite number > 0, got {args.eta}")
    if args.alpha is not None:
        if rule != "mmd":
            raise ValueError(
                f"--alpha is mmd's regularisation weight; --rule {rule} does not use it: drop "
                "--alpha, or use --rule mmd"
            )
        if not (math.isfinite(args.alpha) and args.alpha >= 0):
            raise ValueError(f"--alpha must be a finite number >= 0, got {args.alpha}")
    if rule == AUTO:
        for flag, given in (("--alternating", args.alternating), ("--averaging", args.averaging)):
            if given:
                raise ValueError(
                    f"{flag} sets how a rule plays, and --rule auto (gc.solve) picks its own "
                    f"method: drop {flag}, or pick a rule"
                )
    if args.tol is not None and not (math.isfinite(args.tol) and args.tol > 0):
        raise ValueError(f"--tol must be a finite number > 0, got {args.tol}")
    if args.max_entries < 1:
        raise ValueError(f"--max-entries must be >= 1, got {args.max_entries}")
    if args.plot:
        check_plot_path(args.plot)


def check_plot_path(path: str) -> None:
    """``--plot``: matplotlib installed, a format it writes, a file path in a writable folder."""
    from gpo_core._validate import check_output_file  # noqa: PLC0415

    if importlib.util.find_spec("matplotlib") is None:
        raise ValueError("--plot needs matplotlib: pip install 'gpo[viz]'")
    check_output_file(path, "--plot")
    from matplotlib.backend_bases import FigureCanvasBase  # noqa: PLC0415

    kinds = FigureCanvasBase.get_supported_filetypes()
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    if ext and ext not in kinds:
        raise ValueError(
            f"--plot {path!r}: matplotlib cannot write .{ext} files; end the name in one of "
            f"{', '.join('.' + k for k in sorted(kinds))}"
        )


def _fmt(v: np.ndarray) -> str:
    return "[" + ", ".join(f"{p:.4f}" for p in np.asarray(v).ravel()) + "]"


def cmd_solve(args: argparse.Namespace) -> int:
    """``gpo solve``."""
    if args.rule == AUTO and args.plot:
        raise ValueError("--plot draws a rule's gap curve, and --rule auto has none: "
                         "pick a rule (e.g. --rule drm+ --alternating) to plot")
    check_solve_args(args)
    game = load_game(args.game, args.max_entries)
    if args.rule == AUTO:
        return _solve_auto(game, args)
    alpha = 0.05 if args.alpha is None else args.alpha
    rule = make_rule(args.rule, args.eta, alpha, args.steps, game)
    averaging = args.averaging or "uniform"
    start = time.perf_counter()
    traj = gc.play(game, rule, steps=args.steps, alternating=args.alternating,
                   averaging=averaging, tol=args.tol)
    elapsed = time.perf_counter() - start
    # The exact reference by support pivoting: certified, and seconds where HiGHS takes minutes
    # on games of thousands of actions (it falls back to HiGHS itself when pivoting fails).
    start = time.perf_counter()
    sol = gc.solve_pivot(game)
    exact_time = time.perf_counter() - start
    x, y = traj.average
    print(f"game        {game.name or args.game}  ({game.shape[0]} x {game.shape[1]})")
    print(f"rule        {rule.name}, {traj.num_steps} steps, "
          f"{'alternating' if args.alternating else 'simultaneous'}, {averaging} average")
    print(f"row (avg)   {_fmt(x)}")
    print(f"col (avg)   {_fmt(y)}")
    print(f"value       {float(game.value(x, y)) + 0.0:.6g}   (exact: {float(sol.value) + 0.0:.6g})")
    print(f"nash gap    {float(gc.nash_gap(game, x, y)):.3e}   (exact solution: "
          f"{float(gc.nash_gap(game, sol.row, sol.col)):.1e}); last iterate {float(traj.last_gap[-1]):.3e}")
    how = f"{int(sol.pivots)} pivots" if str(sol.method) == "pivot" else "HiGHS fallback"
    print(f"time        {elapsed:.3f} s   (exact: {exact_time:.3f} s, solve_pivot, {how})")
    if args.plot:
        plot_gap(traj, args.plot, title=f"{game.name or args.game}: {rule.name}")
        print(f"plot        {args.plot}")
    return 0


def _solve_auto(game: gc.MatrixGame, args: argparse.Namespace) -> int:
    """``gpo solve GAME --rule auto``: :func:`gpo_core.solve`, the fastest certified route."""
    tol = 1e-4 if args.tol is None else args.tol
    start = time.perf_counter()
    sol = gc.solve(game, tol, max_steps=args.steps)
    elapsed = time.perf_counter() - start
    work = (f"{sol.iterations} steps" if sol.method.startswith("drm+")
            else f"{sol.iterations} pivots")
    print(f"game        {game.name or args.game}  ({game.shape[0]} x {game.shape[1]})")
    print(f"method      gc.solve: {sol.method}, {work}, tol {tol:g}")
    print(f"row         {_fmt(sol.row)}")
    print(f"col         {_fmt(sol.col)}")
    print(f"value       {float(sol.value) + 0.0:.6g}")
    print(f"nash gap    {float(sol.gap):.3e}   (certified from full products)")
    print(f"time        {elapsed:.3f} s")
    return 0


def plot_gap(traj: gc.Trajectory, path: str, title: str) -> None:
    """Write a log-log plot of the Nash gap of the average and of the last iterate (atomically)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6, 4))
    floor = 1e-16
    ax.loglog(traj.steps, np.maximum(traj.nash_gap, floor), label="average")
    ax.loglog(traj.steps, np.maximum(traj.last_gap, floor), label="last iterate", alpha=0.6)
    ax.set_xlabel("step t")
    ax.set_ylabel("Nash gap")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)


def _save_figure(fig, path: str) -> None:
    from gpo_core._io import atomic_path  # noqa: PLC0415

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=os.path.splitext(path)[1].lstrip(".") or "png", dpi=120)


def toy_games() -> list[gc.MatrixGame]:
    """Every zero-sum matrix game OpenSpiel registers, plus blotto and Kuhn poker in matrix form."""
    import pyspiel  # noqa: PLC0415

    games = []
    for name in sorted(pyspiel.registered_names()):
        if not name.startswith("matrix_"):
            continue
        try:
            games.append(gc.MatrixGame.from_openspiel(name))
        except ValueError:
            continue  # general-sum (prisoner's dilemma, coordination, ...): not a zero-sum game
    games.append(gc.MatrixGame.from_openspiel("blotto"))
    games.append(gc.MatrixGame.from_openspiel("kuhn_poker"))
    return games


def convergence_table(steps: int = 2000, progress: bool = True) -> str:
    """Markdown table: every toy game solved exactly (LP) and by each rule's average."""
    rows = ["| game | shape | value (LP) | hedge gap | optimistic hedge gap | mmd gap | rm+ gap |",
            "|---|---|---|---|---|---|---|"]
    games = toy_games()
    it = games
    if progress:
        try:
            from tqdm import tqdm  # noqa: PLC0415

            it = tqdm(games, desc="toy games", unit="game", file=sys.stderr)
        except ImportError:
            pass
    for game in it:
        scale = max(game.payoff_range, 1e-12)
        sol = gc.solve_lp(game)
        gaps = []
        # A seeded non-uniform start: from the uniform profile a symmetric game is already solved.
        rng = np.random.default_rng(0)
        x0 = rng.dirichlet(np.ones(game.shape[0]))
        y0 = rng.dirichlet(np.ones(game.shape[1]))
        for name in RULES_IN_TABLE:
            rule = make_rule(name, None, 0.05 * scale / 10, steps, game)
            alt = name == "rm+"
            traj = gc.play(game, rule, steps=steps, alternating=alt, x0=x0, y0=y0,
                           averaging="linear" if alt else "uniform")
            gaps.append(float(traj.final_gap) / scale)
        rows.append(f"| {game.name} | {game.shape[0]}x{game.shape[1]} | {float(sol.value) + 0.0:.4g} | "
                    + " | ".join(f"{g:.1e}" for g in gaps) + " |")
    rows.append(f"\nNash gaps of the averaged profile after {steps} steps from a seeded random start, "
                "divided by the payoff range. hedge and mmd use the horizon-tuned step, rm+ "
                "alternates with linear averaging; mmd (alpha = 0.005 x range) approaches the "
                "regularised equilibrium, so its gap stalls near that equilibrium's own gap.")
    return "\n".join(rows)


RULES_IN_TABLE = ("hedge", "optimistic-hedge", "mmd", "rm+")


def cmd_demo(args: argparse.Namespace) -> int:
    """``gpo demo``: the main job on embedded defaults."""
    from gpo_core._validate import check_output_dir  # noqa: PLC0415

    check_output_dir(args.out, "--out")
    print("## 1. OpenSpiel toy games: exact LP vs learning dynamics\n")
    print(convergence_table(args.steps))
    status = 0
    print("\n## 2. Theory checks (proofs_check --quick)\n")
    import proofs_check  # noqa: PLC0415

    status |= proofs_check.main(["--quick", "--out", os.path.join(args.out, "proofs_check")])
    print("\n## 3. A short GPO game between two tiny language models\n")
    example = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "examples", "tiny_red_team.py")
    if importlib.util.find_spec("torch") is None:
        print("the LLM demo needs the llm extra (torch is not installed): pip install -e '.[llm]'")
        return 1
    if not os.path.exists(example):
        print(f"{example} is not here (the demo runs from a source checkout)")
        return 1
    spec = importlib.util.spec_from_file_location("gpo_example_tiny_red_team", example)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    status |= module.main(["--rounds", str(args.rounds), "--out", os.path.join(args.out, "tiny_red_team")])
    return status


def cmd_train(args: argparse.Namespace) -> int:
    """``gpo train CONFIG``: the GPO loop from a TOML file."""
    from backends.train import train_from_toml  # noqa: PLC0415

    return train_from_toml(args.config, out=args.out, resume=not args.no_resume)


def cmd_eval(args: argparse.Namespace) -> int:
    """``gpo eval ...``: :func:`backends.evaluate.main` on the remaining arguments."""
    from backends.evaluate import main as eval_main  # noqa: PLC0415

    return eval_main(args.rest)


def cmd_export(args: argparse.Namespace) -> int:
    """``gpo export``: a run's player as a Hugging Face model folder (:mod:`backends.export`)."""
    from backends.export import export  # noqa: PLC0415

    out = export(args.model, args.run, args.out, adapter=args.adapter, player=args.player,
                 iterate=args.iterate, merge=args.merge)
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    p = argparse.ArgumentParser(prog="gpo", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("solve", help="solve a zero-sum game with an update rule")
    s.add_argument("game", help="OpenSpiel game name (e.g. matrix_brps, kuhn_poker) or .npy/.csv file")
    s.add_argument("--rule", default="hedge", choices=(*RULES, AUTO),
                   help="an update rule, or auto: gc.solve, an equilibrium within --tol "
                        "(default 1e-4) by the fastest certified route")
    s.add_argument("--steps", type=int, default=10_000, help="steps (with auto: at most)")
    s.add_argument("--eta", type=float, default=None,
                   help="step size of hedge, optimistic-hedge, mmd (default: tuned to the game)")
    s.add_argument("--alpha", type=float, default=None,
                   help="mmd's regularisation weight (default 0.05)")
    s.add_argument("--alternating", action="store_true", help="defender first, then adversary")
    s.add_argument("--averaging", default=None, choices=("uniform", "linear", "quadratic"),
                   help="weights of the average (default uniform)")
    s.add_argument("--tol", type=float, default=None, help="stop once the averaged gap <= tol")
    s.add_argument("--plot", default=None, help="write the gap curve to this PNG")
    s.add_argument("--max-entries", type=int, default=MAX_ENTRIES,
                   help="refuse OpenSpiel games whose matrix has more entries (default "
                        f"{MAX_ENTRIES:,}: about {MAX_ENTRIES // 10_000_000} GB to build)")
    s.set_defaults(func=cmd_solve)
    d = sub.add_parser("demo", help="the main job: toy games, theory checks, a tiny GPO game")
    d.add_argument("--steps", type=int, default=2000)
    d.add_argument("--rounds", type=int, default=10)
    d.add_argument("--out", default="gpo_out")
    d.set_defaults(func=cmd_demo)
    t = sub.add_parser("train", help="run the GPO loop from a TOML config")
    t.add_argument("config")
    t.add_argument("--out", default=None, help="output folder (default: the config's)")
    t.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    t.set_defaults(func=cmd_train)
    # gpo eval's own options live in backends.evaluate (imported only when it runs).
    e = sub.add_parser("eval", add_help=False, help="ASR and over-refusal of a model on red-team "
                       "suites (gpo eval --help for its options)")
    e.set_defaults(func=cmd_eval)
    x = sub.add_parser("export", help="write a run's player as a Hugging Face model folder")
    x.add_argument("--model", required=True, help="the model the run started from (or smollm2)")
    x.add_argument("--run", required=True, help="the run's checkpoint_dir")
    x.add_argument("--out", required=True, help="a new folder to write")
    x.add_argument("--adapter", default=None, help="for a LoRA run: a peft adapter folder")
    x.add_argument("--player", default="defender", choices=("defender", "adversary"))
    x.add_argument("--iterate", default="last",
                   help="'last', 'average' (every kept iterate + mixture.json) or a number")
    x.add_argument("--merge", action="store_true", help="merge LoRA adapters into the base")
    x.set_defaults(func=cmd_export)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gpo`` console script."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "eval":
        args.rest = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    for name in ("steps", "rounds"):
        if getattr(args, name, 1) is not None and getattr(args, name, 1) < 1:
            print(f"gpo: error: --{name} must be >= 1, got {getattr(args, name)}", file=sys.stderr)
            return 2
    try:
        return int(args.func(args))
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"gpo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
