r"""proofs_check: executable checks of every theoretical claim behind GPO.

Run ``python -m proofs_check`` (``--quick`` for the one-minute subset, ``--out DIR`` for the
folder of plots): it prints one table (claim, games, worst measured/bound ratio, verdict), writes
one PNG per claim and ``report.txt``, and exits non-zero if any claim fails.

The claims (each check's docstring states the theorem, its assumptions and its source):

==========================  =======================================================================
``regret/hedge-*``          Hedge's regret <= ln n/eta + eta t B^2/8 (Cesa-Bianchi & Lugosi 2006,
                            Thm. 2.2) or the anytime bound for eta_t = c/sqrt(t) (from the proof of
                            Thm. 2.3), in self-play and on adversarial sequences:
                            :func:`check_hedge_regret_bound`
``folk/hedge-*``            gap(average) <= (R_x + R_y)/t <= closed form, every t (Freund &
                            Schapire 1999): :func:`check_folk_theorem_gap`
``rate/hedge-*``            fitted exponent of the averaged gap >= 1/2 - tol (GPO Thm. 3.2's
                            O(T^-1/2); empirical): :func:`check_averaged_gap_rate`
``rate/alternating-*``      the same for GPO's alternating defender-first schedule (no theorem
                            claimed): :func:`check_alternating_schedule`
``mmd/linear-rate``         KL(z*||z_{t+1}) <= (1+eta alpha)^-t KL(z*||z_1) (Sokota et al. 2023,
                            Thm. 3.4): :func:`check_mmd_linear_rate`
``qre/gap-*``               gap(QRE) <= alpha(H(x*)+H(y*)) <= alpha(ln m + ln n):
                            :func:`check_qre_gap_bound`
``diversity/*``             the adversary's equilibrium is a point mass without regularisation and
                            exp(-V/tau)/Z with entropy weight tau (GPO §3.3):
                            :func:`check_diversity_equilibrium`
==========================  =======================================================================

Every check returns a frozen :class:`CheckResult` (``claim, game, lhs, rhs, holds, citation,
ratio``; ``ratio <= 1`` exactly when the claim holds) and accepts ``bound_scale`` in ``(0, 1]`` to
tighten its bound, which is how the tests show that each check can fail.

Examples:
    >>> import gpo_core as gc
    >>> import proofs_check as pc
    >>> res = pc.check_folk_theorem_gap(gc.MatrixGame([[2.0, -1.0], [-1.0, 1.0]]), "anytime", T=500)
    >>> res.holds, res.ratio < 1
    (True, True)
"""

from proofs_check._diversity import (
    check_diversity_equilibrium,
    explicit_normal_form,
    gibbs_adversary,
    prompt_values,
)
from proofs_check._games import (
    openspiel_extensive_games,
    openspiel_matrix_games,
    random_games,
    tilted_start,
)
from proofs_check._hedge import (
    HedgeSpec,
    RateMeasurement,
    SelfPlayRecord,
    check_alternating_schedule,
    check_averaged_gap_rate,
    check_folk_theorem_gap,
    check_hedge_regret_bound,
    hedge_spec,
    measure_gap_rate,
    selfplay_record,
)
from proofs_check._mmd import check_mmd_linear_rate, check_qre_gap_bound
from proofs_check._result import CheckResult, Curve, Report, Skip
from proofs_check._runner import FULL, QUICK, Config, main, render, run
from proofs_check._sequences import (
    GainSequence,
    array_gains,
    least_likely_gains,
    random_gains,
    switching_gains,
)

__all__ = [
    "CheckResult",
    "Config",
    "Curve",
    "FULL",
    "GainSequence",
    "HedgeSpec",
    "QUICK",
    "RateMeasurement",
    "Report",
    "SelfPlayRecord",
    "Skip",
    "array_gains",
    "check_alternating_schedule",
    "check_averaged_gap_rate",
    "check_diversity_equilibrium",
    "check_folk_theorem_gap",
    "check_hedge_regret_bound",
    "check_mmd_linear_rate",
    "check_qre_gap_bound",
    "explicit_normal_form",
    "gibbs_adversary",
    "hedge_spec",
    "least_likely_gains",
    "main",
    "measure_gap_rate",
    "openspiel_extensive_games",
    "openspiel_matrix_games",
    "prompt_values",
    "random_gains",
    "random_games",
    "render",
    "run",
    "selfplay_record",
    "switching_gains",
    "tilted_start",
]
