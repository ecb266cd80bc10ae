r"""Closed-form bounds of the theory, each a pure function that cites the result it implements.

Notation: a learner plays :math:`x_t \in \Delta_n`, then sees gains :math:`u_t \in \mathbb R^n`
("higher is better", as every rule in :mod:`gpo_core.rules` receives them) whose spread in each
round is at most :math:`B` (:math:`\max_i u_{t,i} - \min_i u_{t,i} \le B`; for a matrix game
:math:`B = \max A - \min A` for both players). Its external regret is
:math:`R_T = \max_i \sum_{t\le T} u_{t,i} - \sum_{t\le T}\langle u_t, x_t\rangle`. Hedge starts
from :math:`\pi_1` (uniform unless said otherwise); :math:`\ln(1/\min_i \pi_1(i))` replaces
:math:`\ln n` for another start (``prior_min``).

1. **Hedge, constant step** :math:`\eta` (:func:`gpo_core.hedge` with a float;
   Cesa-Bianchi & Lugosi 2006, *Prediction, Learning, and Games*, Thm. 2.2, stated there for
   losses in :math:`[0,1]` and moved to range :math:`B` by Hoeffding's lemma):

   .. math:: R_T \le \frac{\ln n}{\eta} + \frac{\eta T B^2}{8}, \qquad
             \eta = \frac{1}{B}\sqrt{\frac{8\ln n}{T}} \;\Rightarrow\; R_T \le B\sqrt{\frac{T\ln n}{2}} .

2. **Hedge, anytime step** :math:`\eta_t = c/\sqrt t` in the dual-averaging form the core runs
   (:func:`gpo_core.hedge` with :func:`gpo_core.inverse_sqrt`): after :math:`k` updates the
   logits are :math:`z_1 + \eta_{k+1}\sum_{s\le k} u_s`, so round :math:`t` plays
   :math:`x_t \propto \pi_1 e^{\eta_t U_{t-1}}`, which is the indexing of Cesa-Bianchi & Lugosi
   2006, Thm. 2.3. Their potential argument gives, for any non-increasing :math:`\eta_t`,

   .. math:: R_T \le \frac{\ln n}{\eta_{T+1}} + \frac{B^2}{8}\sum_{t=1}^T \eta_t
             \le \frac{\sqrt{T+1}\,\ln n}{c} + \frac{c B^2 (2\sqrt T - 1)}{8}.

   Derivation (losses :math:`l_t = \max_i u_{t,i} - u_t \in [0,B]^n`, which changes neither the
   play nor the regret): with :math:`\Phi_t = \eta_{t+1}^{-1}\ln\sum_i \pi_1(i) e^{-\eta_{t+1}L_{i,t}}`,
   Hoeffding's lemma gives :math:`\eta_t^{-1}\ln\sum_i\pi_1(i)e^{-\eta_t L_{i,t}} \le \Phi_{t-1}
   - \langle x_t, l_t\rangle + \eta_t B^2/8`; since :math:`\eta \mapsto \eta^{-1}\ln E e^{-\eta L}`
   is non-decreasing (a convex function through 0 has non-decreasing chords) and
   :math:`\eta_{t+1}\le\eta_t`, the left side is :math:`\ge \Phi_t`. Summing from
   :math:`\Phi_0 = 0` and using :math:`\Phi_T \ge -L_{j,T} - \ln(1/\pi_1(j))/\eta_{T+1}` and
   :math:`\sum_{t\le T} t^{-1/2} \le 2\sqrt T - 1` gives the bound. At the book's
   :math:`c = \sqrt{8\ln n}/B` it is :math:`B\sqrt{\ln n/8}\,(\sqrt{T+1} + 2\sqrt T - 1)`,
   below the book's stated :math:`B(2\sqrt{T\ln n/2} + \sqrt{\ln n/8})`
   (:func:`hedge_anytime_regret_bound_cbl`).

3. **Folk theorem** (Freund & Schapire 1999, "Adaptive game playing using multiplicative
   weights", Games Econ. Behav. 29; Cesa-Bianchi & Lugosi 2006, §7.2): for uniform averages of
   the iterates actually played in a zero-sum matrix game,
   :math:`\mathrm{gap}(\bar x_T, \bar y_T) = (R^x_T + R^y_T)/T` exactly (the realised payoffs
   cancel), so any regret bounds bound the gap.

4. **QRE Nash gap** (derived here; the entropy-smoothing bound of Nesterov 2005, "Smooth
   minimization of non-smooth functions", Math. Program. 103): at the :math:`\alpha`-regularised
   equilibrium :math:`(x^*, y^*)` with uniform magnets, :math:`x^*` maximises
   :math:`x^\top A y^* + \alpha H(x)`, so :math:`\max_i (Ay^*)_i \le x^{*\top}Ay^* + \alpha H(x^*)`,
   and likewise for :math:`y^*`; adding,

   .. math:: \mathrm{gap}(x^*, y^*) \le \alpha\,(H(x^*) + H(y^*)) \le \alpha\,(\ln m + \ln n).

5. **MMD linear rate** (Sokota et al. 2023, "A unified approach to reinforcement learning,
   quantal response equilibria, and two-player zero-sum games", ICLR, Thm. 3.4): with the
   negative entropy (1-strongly convex in :math:`\ell_1`) and :math:`F(x,y) = (-Ay, A^\top x)`,
   :math:`L`-Lipschitz from :math:`\ell_1` to :math:`\ell_\infty` with :math:`L = \max|A_{ij}|`,
   any step :math:`\eta \le \alpha/L^2` gives
   :math:`\mathrm{KL}(z^*\|z_{t+1}) \le (1+\eta\alpha)^{-t}\,\mathrm{KL}(z^*\|z_1)`, where
   :math:`\mathrm{KL}(z^*\|z) = \mathrm{KL}(x^*\|x) + \mathrm{KL}(y^*\|y)`.

Every function validates its inputs and raises ``TypeError``/``ValueError`` naming the argument.
``T`` may be an integer or an array of integers (a grid); the result then has its shape.

Examples:
    >>> round(hedge_horizon_tuned_regret_bound(10_000, 3, 2.0), 6)
    148.230381
    >>> round(hedge_regret_bound(10_000, 3, 2.0, eta=(8 * math.log(3) / 10_000) ** 0.5 / 2.0), 6)
    148.230381
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from gpo_core._validate import as_real_array, check_nonnegative, check_positive, short

__all__ = [
    "hedge_regret_bound",
    "hedge_horizon_tuned_regret_bound",
    "hedge_anytime_regret_bound",
    "hedge_anytime_regret_bound_cbl",
    "folk_theorem_gap_bound",
    "qre_nash_gap_bound",
    "qre_nash_gap_entropy_bound",
    "mmd_max_step",
    "mmd_contraction",
    "mmd_divergence_bound",
]


# ----------------------------------------------------------------------------------- helpers
def _steps(value: Any, name: str = "T") -> float | np.ndarray:
    """An integer >= 1, or an array of them, as float64 (scalar stays a Python float)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer >= 1 or an array of them, got {value!r}")
    if isinstance(value, numbers.Integral):
        if int(value) < 1:
            raise ValueError(f"{name} must be an integer >= 1 (a number of rounds), got {value}")
        return float(value)
    if isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be an integer >= 1 (a number of rounds), got the float {value!r}; "
            "pass int(T)"
        )
    arr = as_real_array(value, name, min_ndim=1)
    if arr.size == 0:
        raise ValueError(f"{name} must hold at least one round count, got an empty array")
    if np.any(arr < 1) or np.any(arr != np.round(arr)):
        raise ValueError(
            f"{name} must hold integers >= 1 (round counts), got {short(np.asarray(value).tolist())}"
        )
    return arr


def _actions(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= 1 (a number of actions), got {short(value)}")
    if int(value) < 1:
        raise ValueError(f"{name} must be an integer >= 1 (a number of actions), got {value}")
    return int(value)


def _log_prior(n: int, prior_min: Any) -> float:
    """``ln n`` for the uniform start, else ``ln(1 / prior_min)``."""
    if prior_min is None:
        return math.log(n)
    p = check_positive(prior_min, "prior_min")
    if p > 1.0 / n + 1e-12:
        raise ValueError(
            f"prior_min must be the smallest initial probability, which is <= 1/n = {1.0 / n:g} "
            f"for n = {n} actions, got {p!r}"
        )
    return -math.log(min(p, 1.0 / n))


def _out(value: float | np.ndarray) -> float | np.ndarray:
    return float(value) if np.ndim(value) == 0 else value


# ------------------------------------------------------------------------------------ Hedge
def hedge_regret_bound(
    T: Any, n: int, B: float, eta: float, *, prior_min: float | None = None
) -> float | np.ndarray:
    r"""Regret bound of Hedge with a constant step: :math:`\ln n/\eta + \eta T B^2/8`.

    Cesa-Bianchi & Lugosi 2006, Thm. 2.2 (losses in :math:`[0,1]`), scaled to gains of per-round
    range ``B``. It holds at every round ``T`` of a run with step ``eta``, for any (adaptive)
    gain sequence.

    Args:
        T: number of rounds (int >= 1, or an array of them).
        n: number of actions.
        B: per-round range of the gains (``max A - min A`` in a matrix game), ``>= 0``.
        eta: the constant step size ``> 0``.
        prior_min: smallest initial probability if the start is not uniform (replaces ``1/n``).

    Examples:
        >>> round(hedge_regret_bound(100, 2, 1.0, eta=0.5), 6)
        7.636294
    """
    t = _steps(T)
    n = _actions(n, "n")
    B = check_nonnegative(B, "B")
    eta = check_positive(eta, "eta")
    return _out(_log_prior(n, prior_min) / eta + eta * t * B * B / 8.0)


def hedge_horizon_tuned_regret_bound(T: Any, n: int, B: float) -> float | np.ndarray:
    r""":math:`B\sqrt{T\ln n/2}`: :func:`hedge_regret_bound` at the tuned step.

    The step :math:`\eta = \sqrt{8\ln n/T}/B` (:func:`gpo_core.horizon_tuned`) minimises the
    constant-step bound for a known horizon ``T`` (Cesa-Bianchi & Lugosi 2006, Thm. 2.2).

    Examples:
        >>> round(hedge_horizon_tuned_regret_bound(800, 2, 1.0), 6)
        16.651092
    """
    t = _steps(T)
    n = _actions(n, "n")
    B = check_nonnegative(B, "B")
    return _out(B * np.sqrt(t * math.log(n) / 2.0))


def hedge_anytime_regret_bound(
    T: Any, n: int, B: float, c: float, *, prior_min: float | None = None
) -> float | np.ndarray:
    r"""Regret bound of anytime Hedge :math:`\eta_t = c/\sqrt t` (dual-averaging form).

    :math:`R_T \le \sqrt{T+1}\,\ln n / c + c B^2 (2\sqrt T - 1)/8`, valid at every ``T`` for the
    indexing the core uses (round ``t`` plays :math:`\propto \pi_1 e^{\eta_t U_{t-1}}`); derived
    in the module docstring by the potential argument of Cesa-Bianchi & Lugosi 2006, Thm. 2.3.

    Args:
        T: number of rounds (int >= 1, or an array of them).
        n: number of actions.
        B: per-round range of the gains, ``>= 0``.
        c: the schedule's constant ``> 0`` (:func:`gpo_core.inverse_sqrt` ``(c)``).
        prior_min: smallest initial probability if the start is not uniform.

    Examples:
        >>> c = math.sqrt(8 * math.log(2))
        >>> bool(hedge_anytime_regret_bound(1000, 2, 1.0, c) <= hedge_anytime_regret_bound_cbl(1000, 2, 1.0))
        True
    """
    t = _steps(T)
    n = _actions(n, "n")
    B = check_nonnegative(B, "B")
    c = check_positive(c, "c")
    return _out(np.sqrt(t + 1.0) * _log_prior(n, prior_min) / c + c * B * B * (2.0 * np.sqrt(t) - 1.0) / 8.0)


def hedge_anytime_regret_bound_cbl(T: Any, n: int, B: float) -> float | np.ndarray:
    r"""Cesa-Bianchi & Lugosi 2006, Thm. 2.3 as stated: :math:`B(2\sqrt{T\ln n/2} + \sqrt{\ln n/8})`.

    It applies to the schedule :math:`\eta_t = \sqrt{8\ln n/t}/B` only (``c = sqrt(8 ln n)/B``)
    and is looser than :func:`hedge_anytime_regret_bound` at that ``c``; kept for comparison.

    Examples:
        >>> round(hedge_anytime_regret_bound_cbl(1000, 2, 1.0), 6)
        37.527327
    """
    t = _steps(T)
    n = _actions(n, "n")
    B = check_nonnegative(B, "B")
    ln_n = math.log(n)
    return _out(B * (2.0 * np.sqrt(t * ln_n / 2.0) + math.sqrt(ln_n / 8.0)))


# --------------------------------------------------------------------------- folk theorem
def folk_theorem_gap_bound(regret_row: Any, regret_col: Any, T: Any) -> float | np.ndarray:
    r"""Nash gap of the uniform average of the played iterates: :math:`(R^x_T + R^y_T)/T`.

    Freund & Schapire 1999 (and Cesa-Bianchi & Lugosi 2006, §7.2). In a zero-sum matrix game it is
    an identity, :math:`\mathrm{gap}(\bar x_T,\bar y_T) = (R^x_T + R^y_T)/T`, so feeding it regret
    *bounds* gives a gap bound, and feeding it measured regrets gives the measured gap.

    Args:
        regret_row, regret_col: the players' regrets (or regret bounds) after ``T`` rounds;
            finite reals, scalars or arrays broadcastable with ``T``.
        T: number of rounds (int >= 1, or an array of them).

    Examples:
        >>> folk_theorem_gap_bound(3.0, 5.0, 4)
        2.0
    """
    t = _steps(T)
    r_row = as_real_array(regret_row, "regret_row")
    r_col = as_real_array(regret_col, "regret_col")
    try:
        out = (r_row + r_col) / t
    except ValueError as exc:
        raise ValueError(
            f"regret_row {r_row.shape}, regret_col {r_col.shape} and T {np.shape(t)} must "
            f"broadcast together ({exc})"
        ) from exc
    return _out(out)


# -------------------------------------------------------------------------------------- QRE
def qre_nash_gap_bound(alpha: float, m: int, n: int) -> float:
    r""":math:`\alpha(\ln m + \ln n)`: the unregularised Nash gap of the ``alpha``-QRE.

    Derived in the module docstring (item 4; the entropy-smoothing argument of Nesterov 2005).
    Uniform magnets are assumed (the logit QRE of :func:`gpo_core.solve_qre` with defaults).

    Examples:
        >>> round(qre_nash_gap_bound(0.1, 3, 3), 6)
        0.219722
    """
    alpha = check_positive(alpha, "alpha")
    m = _actions(m, "m")
    n = _actions(n, "n")
    return alpha * (math.log(m) + math.log(n))


def qre_nash_gap_entropy_bound(alpha: float, row_entropy: float, col_entropy: float) -> float:
    r""":math:`\alpha(H(x^*) + H(y^*))`: the sharper form of :func:`qre_nash_gap_bound`.

    Args:
        alpha: the regularisation weight ``> 0``.
        row_entropy, col_entropy: Shannon entropies (nats, ``>= 0``) of the QRE strategies.

    Examples:
        >>> qre_nash_gap_entropy_bound(0.5, 1.0, 0.5)
        0.75
    """
    alpha = check_positive(alpha, "alpha")
    h_x = check_nonnegative(row_entropy, "row_entropy")
    h_y = check_nonnegative(col_entropy, "col_entropy")
    return alpha * (h_x + h_y)


# -------------------------------------------------------------------------------------- MMD
def mmd_max_step(alpha: float, lipschitz: float) -> float:
    r"""The largest step :math:`\eta = \alpha/L^2` covered by Sokota et al. 2023, Thm. 3.4.

    Args:
        alpha: regularisation weight ``> 0``.
        lipschitz: :math:`L`, e.g. ``max |A_ij|`` for a matrix game (``> 0``).

    Examples:
        >>> mmd_max_step(0.5, 2.0)
        0.125
    """
    alpha = check_positive(alpha, "alpha")
    lipschitz = check_positive(lipschitz, "lipschitz")
    return alpha / lipschitz**2


def mmd_contraction(eta: float, alpha: float) -> float:
    r"""The per-step contraction :math:`1/(1+\eta\alpha)` of Sokota et al. 2023, Thm. 3.4.

    Examples:
        >>> mmd_contraction(0.5, 0.2)
        0.9090909090909091
    """
    eta = check_positive(eta, "eta")
    alpha = check_positive(alpha, "alpha")
    return 1.0 / (1.0 + eta * alpha)


def mmd_divergence_bound(
    t: Any, eta: float, alpha: float, initial_divergence: float
) -> float | np.ndarray:
    r""":math:`(1+\eta\alpha)^{-t}\,\mathrm{KL}(z^*\|z_1)`: the divergence after ``t`` MMD steps.

    Sokota et al. 2023, Thm. 3.4, valid for :math:`\eta \le \alpha/L^2` (:func:`mmd_max_step`).

    Args:
        t: number of steps taken (int >= 1, or an array of them).
        eta: step size ``> 0``.
        alpha: regularisation weight ``> 0``.
        initial_divergence: :math:`\mathrm{KL}(x^*\|x_1) + \mathrm{KL}(y^*\|y_1) \ge 0`.

    Examples:
        >>> round(mmd_divergence_bound(2, 1.0, 1.0, 1.0), 6)
        0.25
    """
    steps = _steps(t, "t")
    rate = mmd_contraction(eta, alpha)
    d0 = check_nonnegative(initial_divergence, "initial_divergence")
    with np.errstate(under="ignore"):
        return _out(d0 * np.power(rate, steps))
