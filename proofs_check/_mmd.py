r"""Checks of the entropy-regularised variant: MMD's linear last-iterate rate and the QRE's gap.

* :func:`check_mmd_linear_rate` -- Sokota et al. 2023, Thm. 3.4: for :math:`\eta\le\alpha/L^2`,
  :math:`L = \max|A_{ij}|`, the last iterate of magnetic mirror descent (:func:`gpo_core.mmd`,
  uniform magnet, simultaneous updates) satisfies
  :math:`\mathrm{KL}(z^*\|z_{t+1}) \le (1+\eta\alpha)^{-t}\mathrm{KL}(z^*\|z_1)`, where
  :math:`z^*` is the unique :math:`\alpha`-regularised equilibrium (:func:`gpo_core.solve_qre`).
* :func:`check_qre_gap_bound` -- the unregularised Nash gap of that equilibrium is at most
  :math:`\alpha(H(x^*)+H(y^*)) \le \alpha(\ln m+\ln n)` (derived in :mod:`gpo_core.bounds`,
  item 4; the entropy-smoothing bound of Nesterov 2005).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import gpo_core as gc
from gpo_core import bounds
from gpo_core._validate import check_positive, check_positive_int, short
from gpo_core.simplex import safe_log
from proofs_check._common import check_game, check_scale, check_start, label
from proofs_check._games import tilted_start
from proofs_check._result import CheckResult, Curve, make_ratio

__all__ = ["check_mmd_linear_rate", "check_qre_gap_bound"]

CITE_MMD = "Sokota et al. 2023 (ICLR), Thm. 3.4: KL(z*||z_{t+1}) <= (1+eta*alpha)^-t KL(z*||z_1), eta <= alpha/L^2"
CITE_QRE = "derived in gpo_core.bounds (item 4): gap(QRE) <= alpha(H(x*)+H(y*)) <= alpha(ln m + ln n); cf. Nesterov 2005 smoothing"


def _divergence(log_star_x, star_x, z_x, log_star_y, star_y, z_y) -> float:
    """KL(x*||x) + KL(y*||y) from normalised logits (0 log 0 = 0)."""
    kx = float(np.sum(np.where(star_x > 0, star_x * (log_star_x - z_x), 0.0)))
    ky = float(np.sum(np.where(star_y > 0, star_y * (log_star_y - z_y), 0.0)))
    return kx + ky


def _measured_contraction(steps: np.ndarray, div: np.ndarray, floor: float) -> float:
    """exp(slope) of log KL against t, fitted where KL is well above rounding (nan if < 3 points)."""
    keep = div > floor
    if np.count_nonzero(keep) < 3:
        return math.nan
    design = np.c_[np.ones(np.count_nonzero(keep)), steps[keep].astype(np.float64)]
    coef, *_ = np.linalg.lstsq(design, np.log(div[keep]), rcond=None)
    return math.exp(float(coef[1]))


def check_mmd_linear_rate(
    game: gc.MatrixGame,
    alpha: float,
    eta: float | None = None,
    T: int | None = None,
    *,
    x0: Any = None,
    y0: Any = None,
    seed: int = 0,
    floor: float = 1e-10,
    bound_scale: float = 1.0,
) -> CheckResult:
    r"""MMD's last iterate converges linearly to the unique regularised equilibrium.

    Theorem (Sokota et al. 2023, "A unified approach to reinforcement learning, quantal response
    equilibria, and two-player zero-sum games", ICLR, Thm. 3.4), specialised to a matrix game:
    with the negative entropy as mirror map (1-strongly convex w.r.t. :math:`\ell_1`), the
    operator :math:`F(x,y) = (-Ay, A^\top x)` is :math:`L`-Lipschitz from :math:`\ell_1` to
    :math:`\ell_\infty` with :math:`L = \max|A_{ij}|`, and for any :math:`\eta \le \alpha/L^2`

    .. math:: \mathrm{KL}(x^*\|x_{t+1}) + \mathrm{KL}(y^*\|y_{t+1})
              \le (1+\eta\alpha)^{-t}\,\big(\mathrm{KL}(x^*\|x_1) + \mathrm{KL}(y^*\|y_1)\big),

    where :math:`(x^*, y^*)` is the :math:`\alpha`-QRE (uniform magnets), computed independently
    by :func:`gpo_core.solve_qre` (Newton's method).

    Assumptions: simultaneous updates with :func:`gpo_core.mmd` ``(eta, alpha)`` for both players,
    uniform magnet, an interior start.

    Args:
        game: the zero-sum game.
        alpha: regularisation weight ``> 0``.
        eta: step ``<= alpha / max|A|^2`` (default: exactly that, the largest the theorem covers).
        T: steps (default: until the bound falls to ``floor`` times its start).
        x0, y0: interior starting strategies; default a seeded tilted start
            (:func:`~proofs_check.tilted_start`), since the uniform start can be the QRE itself.
        seed: seed of the default start.
        floor: relative level of the bound below which floating point, not the theorem, decides
            (used only for the default ``T``).
        bound_scale: tighten the bound by this factor in ``(0, 1]`` (to show failure).

    Returns:
        A :class:`~proofs_check.CheckResult` at the step with the largest divergence/bound ratio;
        ``holds`` allows an absolute slack of ``1000 eps (1 + ln(mn))`` for rounding in the KL.

    Examples:
        >>> res = check_mmd_linear_rate(gc.MatrixGame([[1.0, -1.0], [-1.0, 1.0]]), alpha=0.5)
        >>> res.holds, res.claim
        (True, 'mmd/linear-rate')
    """
    game = check_game(game)
    alpha = check_positive(alpha, "alpha")
    scale = check_scale(bound_scale)
    floor = check_positive(floor, "floor")
    if floor >= 1:
        raise ValueError(f"floor must be a small positive fraction (< 1), got {floor!r}")
    m, n = game.shape
    A = game.payoff
    L = float(np.max(np.abs(A)))
    eta_max = bounds.mmd_max_step(alpha, L)
    if eta is None:
        eta = eta_max
    eta = check_positive(eta, "eta")
    if eta > eta_max * (1 + 1e-12):
        raise ValueError(
            f"eta={eta:g} exceeds alpha/L^2 = {eta_max:g} (L = max|A| = {L:g}): Sokota et al. "
            "Thm. 3.4 does not cover it; pass eta <= alpha / max|A|^2"
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {short(seed)}")
    tx, ty = tilted_start(game, seed)
    x_start = check_start(tx if x0 is None else x0, "x0", m)
    y_start = check_start(ty if y0 is None else y0, "y0", n)

    qre = gc.solve_qre(game, alpha)
    sx, sy = qre.row, qre.col
    lsx, lsy = safe_log(sx), safe_log(sy)
    rule = gc.mmd(eta, alpha)
    state_x, state_y = rule.init(safe_log(x_start)), rule.init(safe_log(y_start))
    d0 = _divergence(lsx, sx, state_x.logits, lsy, sy, state_y.logits)
    if d0 <= 1e-14:
        raise ValueError("the start is (numerically) the regularised equilibrium itself; start elsewhere")
    rate = bounds.mmd_contraction(eta, alpha)
    if T is None:
        T = min(200_000, max(1, math.ceil(math.log(1.0 / floor) / -math.log(rate))))
    T = check_positive_int(T, "T")

    div = np.empty(T)
    for t in range(T):
        x, y = gc.softmax(state_x.logits), gc.softmax(state_y.logits)
        state_x, state_y = rule.step(state_x, A @ y), rule.step(state_y, -(x @ A))
        div[t] = _divergence(lsx, sx, state_x.logits, lsy, sy, state_y.logits)
    steps = np.arange(1, T + 1)
    bound = scale * np.asarray(bounds.mmd_divergence_bound(steps, eta, alpha, d0))
    slack = 1000 * np.finfo(np.float64).eps * (1.0 + math.log(m * n))
    holds = bool(np.all(div <= bound + slack))
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        ratios = np.where(bound > 0, div / np.where(bound > 0, bound, 1.0), np.inf)
    i = int(np.argmax(ratios))
    measured_rate = _measured_contraction(steps, div, 1e3 * slack)
    return CheckResult(
        claim="mmd/linear-rate",
        game=label(game),
        lhs=float(div[i]),
        rhs=float(bound[i]),
        holds=holds,
        citation=CITE_MMD,
        ratio=make_ratio(float(div[i]), float(bound[i]), "<="),
        detail=(
            f"alpha={alpha:.4g}, eta={eta:.4g} (alpha/L^2 with L=max|A|={L:.4g}), T={T}, "
            f"KL at start {d0:.3g}; contraction per step: theory {rate:.6f}, measured {measured_rate:.6f}; "
            f"QRE residual {float(qre.residual):.1g}; worst at t={i + 1}"
            + (f"; bound scaled by {scale:g}" if scale != 1.0 else "")
        ),
        curve=Curve(steps, div, bound, None, "KL(z*||z_t)"),
    )


def check_qre_gap_bound(
    game: gc.MatrixGame, alpha: float, *, sharp: bool = False, bound_scale: float = 1.0
) -> CheckResult:
    r"""The :math:`\alpha`-QRE is an :math:`\alpha(\ln m+\ln n)`-Nash equilibrium of the game.

    Claim (derived in :mod:`gpo_core.bounds`, item 4; the entropy-smoothing argument of Nesterov
    2005): at the logit QRE :math:`(x^*,y^*)` with uniform magnets,
    :math:`\mathrm{gap}(x^*,y^*) \le \alpha(H(x^*) + H(y^*)) \le \alpha(\ln m + \ln n)`. With
    ``sharp=True`` the middle (entropy) bound is checked instead of the outer one.

    Assumptions: :math:`(x^*, y^*)` solves the fixed point to the residual ``solve_qre`` reports.

    Args:
        game: the zero-sum game.
        alpha: regularisation weight ``> 0``.
        sharp: check ``alpha (H(x*) + H(y*))`` instead of ``alpha (ln m + ln n)``.
        bound_scale: tighten the bound by this factor in ``(0, 1]`` (to show failure).

    Returns:
        A :class:`~proofs_check.CheckResult`; ``holds`` allows a slack of ``1e-9 * B`` for the
        solver's residual.

    Examples:
        >>> res = check_qre_gap_bound(gc.MatrixGame([[2.0, -1.0], [-1.0, 1.0]]), alpha=0.1)
        >>> res.holds, res.claim
        (True, 'qre/gap-log')
    """
    game = check_game(game)
    alpha = check_positive(alpha, "alpha")
    scale = check_scale(bound_scale)
    if not isinstance(sharp, bool):
        raise TypeError(f"sharp must be a bool, got {short(sharp)}")
    m, n = game.shape
    qre = gc.solve_qre(game, alpha)
    gap = float(gc.nash_gap(game, qre.row, qre.col))
    h_x, h_y = float(gc.entropy(qre.row)), float(gc.entropy(qre.col))
    if sharp:
        rhs = scale * bounds.qre_nash_gap_entropy_bound(alpha, h_x, h_y)
        claim = "qre/gap-entropy"
    else:
        rhs = scale * bounds.qre_nash_gap_bound(alpha, m, n)
        claim = "qre/gap-log"
    slack = 1e-9 * game.payoff_range
    return CheckResult(
        claim=claim,
        game=label(game),
        lhs=gap,
        rhs=rhs,
        holds=bool(gap <= rhs + slack),
        citation=CITE_QRE,
        ratio=make_ratio(gap, rhs, "<="),
        detail=(
            f"alpha={alpha:.4g} ({alpha / game.payoff_range:.3g} B); H(x*)={h_x:.4g}, H(y*)={h_y:.4g}, "
            f"ln m + ln n = {math.log(m) + math.log(n):.4g}; QRE residual {float(qre.residual):.1g}"
            + (f"; bound scaled by {scale:g}" if scale != 1.0 else "")
        ),
    )
