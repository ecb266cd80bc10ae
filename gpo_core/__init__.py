"""gpo_core: an exact, tested game-theory core for game-theoretic LLM alignment (GPO).

Sign convention, stated once: the row player (the defender) maximises ``x^T A y``; the column
player (the adversary) minimises it. Rules receive "higher is better" utilities: ``A y`` for the
row player and ``-A^T x`` for the column player.

Examples:
    >>> import gpo_core as gc
    >>> game = gc.MatrixGame([[0, -1, 1], [1, 0, -1], [-1, 1, 0]])
    >>> traj = gc.play(game, gc.hedge(eta=0.1), gc.hedge(eta=0.1), steps=5000)
    >>> bool(gc.nash_gap(game, traj.average.row, traj.average.col) < 1e-2)
    True
"""

from gpo_core import bounds
from gpo_core.approx import GapSolution, solve
from gpo_core.diagnostics import (
    BestResponse,
    best_response,
    external_regret,
    nash_gap,
    regularized_gap,
)
from gpo_core.discounted import discounted_regret_matching_plus
from gpo_core.dynamics import Profile, Trajectory, play
from gpo_core.exact import QRESolution, Solution, solve_lp, solve_qre
from gpo_core.games import MatrixGame
from gpo_core.pivot import PivotSolution, solve_pivot
from gpo_core.predictive import PRMPlusState, predictive_regret_matching_plus
from gpo_core.regret_matching import RMPlusState, regret_matching_plus
from gpo_core.rule_api import RuleState, UpdateRule
from gpo_core.rules import (
    HedgeState,
    MMDState,
    OptimisticState,
    hedge,
    mirror_step,
    mmd,
    optimistic,
)
from gpo_core.schedules import Schedule, constant, horizon_tuned, inverse_sqrt
from gpo_core.simplex import entropy, kl, log_softmax, logsumexp, softmax, uniform_logits

__version__ = "0.1.0"

__all__ = [
    "BestResponse",
    "GapSolution",
    "HedgeState",
    "MMDState",
    "MatrixGame",
    "OptimisticState",
    "PRMPlusState",
    "PivotSolution",
    "Profile",
    "QRESolution",
    "RMPlusState",
    "RuleState",
    "Schedule",
    "Solution",
    "Trajectory",
    "UpdateRule",
    "best_response",
    "bounds",
    "constant",
    "discounted_regret_matching_plus",
    "entropy",
    "external_regret",
    "hedge",
    "horizon_tuned",
    "inverse_sqrt",
    "kl",
    "log_softmax",
    "logsumexp",
    "mirror_step",
    "mmd",
    "nash_gap",
    "optimistic",
    "play",
    "predictive_regret_matching_plus",
    "regret_matching_plus",
    "regularized_gap",
    "softmax",
    "solve",
    "solve_lp",
    "solve_pivot",
    "solve_qre",
    "uniform_logits",
]
