r"""Exact Nash equilibria by pivoting on supports, warm-started by regret matching+.

**The bases are support pairs.** The row player's LP
:math:`\max v` s.t. :math:`A^\top x - v\mathbf 1 - s = 0,\ \mathbf 1^\top x = 1,\ x, s \ge 0`
and its dual, the column player's LP
:math:`A y - w\mathbf 1 + t = 0,\ \mathbf 1^\top y = 1,\ y, t \ge 0`, share their bases: a basis
is a pair of supports :math:`(S, T)` with :math:`|S| = |T| = k`, whose basic variables are
:math:`x_S`, the column slacks :math:`s_j = (x^\top A)_j - v` for :math:`j \notin T`,
:math:`y_T` and the row slacks :math:`t_i = w - (A y)_i` for :math:`i \notin S`. All of them are
read off the bordered matrix
:math:`M = \begin{pmatrix} 0 & \mathbf 1^\top \\ \mathbf 1 & A_{ST}\end{pmatrix}`:

.. math:: M^\top \binom{-v}{x_S} = e_0, \qquad M \binom{-w}{y_T} = e_0, \qquad v = w,

and :math:`(S, T)` is an equilibrium iff :math:`x_S, y_T, s, t \ge 0`. The pairs
:math:`x_i \leftrightarrow t_i` and :math:`s_j \leftrightarrow y_j` are complementary: each
action is basic on exactly one side.

**Dantzig's self-dual parametric simplex** (Dantzig 1963, §11.2; Vanderbei, *Linear
Programming*, 2020, ch. 7) starts from *any* basis: it adds :math:`\mu\, r` with random
:math:`r > 0` to every basic variable (a fixed perturbation of both LPs' right-hand sides), so
the start is feasible for large :math:`\mu`, and lowers :math:`\mu`. At each breakpoint the
variable that reaches zero leaves its side's basis, which is a primal simplex pivot on the other
side (its complement enters there, a ratio test picks who leaves); the two sides trade the pair.
When :math:`\mu` passes 0 the basis is optimal for the unperturbed game. Each pivot changes
:math:`M` by one row, one column, or one border, so :math:`M^{-1}` is kept by rank-one updates
(:math:`O(k^2)`) and a pivot costs two matrix-vector products with :math:`A_S` and :math:`A_T`.
The method is finite for nondegenerate games; the random :math:`r` makes breakpoint ties a
measure-zero event.

**Warm start.** A near-equilibrium tells the method where to begin: ``warm_steps`` of
alternating discounted regret matching+ with quadratic averaging
(:func:`gpo_core.discounted_regret_matching_plus` in :func:`gpo_core.play`, on a float32 copy),
then :math:`S, T` = the :math:`k` largest entries of the average strategies, with :math:`k` the
mean support size of the last iterates. The closer the start, the fewer pivots:
on random 100 x 100 games the default 40 warm steps leave a handful.

**Degenerate games** (ties, duplicate strategies, many equilibria) make exact zeros that rounding
blurs: the ratio test is Harris's (among near-ties, pivot on the largest element), a singular
warm basis is halved until it is not, and a breakdown restarts once from a pure basis
(:math:`k = 1`, never singular).

**Certified.** The answer is checked, never trusted: the Nash gap of the returned profile is
computed from full products, and if it exceeds ``tol`` the game is solved by
:func:`gpo_core.solve_lp` (HiGHS) instead and ``method`` says so.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import numpy as np
import scipy.linalg
from scipy.linalg import blas

from gpo_core._validate import check_positive, short
from gpo_core.discounted import discounted_regret_matching_plus
from gpo_core.dynamics import play
from gpo_core.exact import _check_game, _host_payoff, _solve_one
from gpo_core.games import MatrixGame

__all__ = ["PivotSolution", "default_warm_steps", "solve_pivot"]


class PivotSolution(NamedTuple):
    """An exact Nash equilibrium ``(row, col)``, the game's ``value``, the number of ``pivots``
    made and the ``method`` that produced it: ``"pivot"``, or ``"highs"`` when the pivoting
    answer failed its certificate and :func:`gpo_core.solve_lp` was used."""

    row: np.ndarray
    col: np.ndarray
    value: np.ndarray
    pivots: np.ndarray
    method: np.ndarray


class _Breakdown(Exception):
    """Numerical trouble inside the pivoting (a singular start, a near-zero pivot, a failed
    ratio test); ``pivots`` says how many were made before it."""

    def __init__(self, message: str, pivots: int = 0, at_start: bool = False) -> None:
        super().__init__(message)
        self.pivots = pivots
        self.at_start = at_start


def solve_pivot(
    game: Any,
    *,
    warm_steps: int | None = None,
    tol: float = 1e-9,
    max_pivots: int | None = None,
    seed: int = 0,
) -> PivotSolution:
    """Solve the zero-sum game exactly by support pivoting, warm-started by discounted RM+.

    Args:
        game: a :class:`gpo_core.MatrixGame` (batched games are looped; any array library and
            dtype is solved on a float64 numpy copy, like :func:`gpo_core.solve_lp`).
        warm_steps: discounted RM+ steps before pivoting; ``None`` picks :func:`default_warm_steps`
            (``ceil(min(m, n) ** 0.8)``), ``0`` starts from a pure-strategy basis.
        tol: the largest Nash gap accepted, relative to ``max |A|``; a worse answer is replaced
            by :func:`gpo_core.solve_lp`'s.
        max_pivots: give up pivoting (and use HiGHS) after this many; ``None`` is
            ``10 (m + n) + 100``.
        seed: seed of the random perturbation (the answer does not depend on it for games with a
            unique equilibrium).

    Memory: besides the game, about the matrix's size again (contiguous copies of the rows in S
    and the columns in T, which halve each pivot's reads) and the ``(k+1)^2`` inverse, ``k``
    the support size (about half the actions on random games). Time: each pivot reads about
    the whole matrix once, so games of many thousands of actions take minutes; ``play`` with
    a regret-matching rule reaches a small gap far sooner there.

    Returns:
        A :class:`PivotSolution`; for a batched game every field has the batch shape in front.

    Examples:
        >>> import gpo_core as gc
        >>> sol = gc.solve_pivot(gc.MatrixGame([[2, -1], [-1, 1]]))
        >>> sol.row.round(6).tolist(), sol.col.round(6).tolist(), round(float(sol.value), 6)
        ([0.4, 0.6], [0.4, 0.6], 0.2)
        >>> str(sol.method)
        'pivot'
    """
    game = _check_game(game)
    m, n = game.shape
    if warm_steps is None:
        warm_steps = default_warm_steps(m, n)
    if (
        isinstance(warm_steps, bool)
        or not isinstance(warm_steps, (int, np.integer))
        or warm_steps < 0
    ):
        raise ValueError(
            "warm_steps must be an integer >= 0 (discounted RM+ steps before pivoting), "
            f"got {short(warm_steps)}"
        )
    tol = check_positive(tol, "tol")
    if max_pivots is None:
        max_pivots = 10 * (m + n) + 100
    if (
        isinstance(max_pivots, bool)
        or not isinstance(max_pivots, (int, np.integer))
        or max_pivots < 0
    ):
        raise ValueError(f"max_pivots must be an integer >= 0 (or None), got {short(max_pivots)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {short(seed)}")

    payoff = _host_payoff(game)
    batch = game.batch_shape
    rows, cols = np.empty((*batch, m)), np.empty((*batch, n))
    values, pivots = np.empty(batch), np.empty(batch, dtype=np.int64)
    methods = np.empty(batch, dtype="<U5")
    for idx in np.ndindex(*batch):
        rng = np.random.default_rng(seed)  # per game: a batch gives a loop's answers
        # Solved at unit scale: the pivoting's tolerances are absolute, the equilibrium is not.
        scale = float(np.abs(payoff[idx]).max())
        scale = scale if scale > 0 else 1.0
        a = payoff[idx] / scale
        answer, count = None, 0
        S, T = _warm_supports(a, int(warm_steps))
        k = len(S)
        while True:
            try:
                x, y, v, used = _pivot(a, S[:k], T[:k], rng, int(max_pivots))
            except _Breakdown as err:
                count += err.pivots
                if err.at_start and k > 1:
                    k //= 2  # a degenerate game: a smaller basis from the same ranking
                    continue
            else:
                count += used
                if _certified(a, x, y, tol):
                    answer = x, y, v
                    break
            if k == 1:
                break  # HiGHS
            k = 1  # one more try from a pure basis, which is never singular
        methods[idx] = "pivot" if answer is not None else "highs"
        x, y, v = answer if answer is not None else _solve_one(a)
        rows[idx], cols[idx], values[idx] = x, y, v * scale
        pivots[idx] = count
    return PivotSolution(rows, cols, values, pivots, methods)


def default_warm_steps(m: int, n: int) -> int:
    """The warm start :func:`solve_pivot` uses on an ``m x n`` game: ``ceil(min(m, n) ** 0.8)``.

    More warm-up steps leave fewer pivots; on random games this grows the warm start about as
    fast as the pivots it saves cost (40 steps at n = 100, 252 at 1000, 605 at 3000).
    """
    return math.ceil(min(m, n) ** 0.8)


def _certified(a: np.ndarray, x: np.ndarray, y: np.ndarray, tol: float) -> bool:
    """The returned profile (already clipped to the simplex) is an equilibrium within ``tol``."""
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return False
    return bool((a @ y).max() - (x @ a).min() <= tol)


def _warm_supports(a: np.ndarray, steps: int) -> tuple[list[int], list[int]]:
    """Equal-size supports guessed from ``steps`` of alternating discounted RM+ (quadratic
    averaging),
    each ranked by weight (its first ``k'`` entries are the guess of size ``k'``)."""
    m, n = a.shape
    if steps == 0:
        # A pure basis is always nonsingular: M = [[0, 1], [1, a_ij]].
        i = int(np.argmax(a.mean(axis=1)))
        return [i], [int(np.argmin(a[i]))]
    # float32 halves the bytes each step streams; the warm start only ranks actions, and the
    # pivoting that follows is float64 throughout.
    traj = play(
        MatrixGame._adopt(a.astype(np.float32)),  # a is finite and scaled to max |a| = 1
        discounted_regret_matching_plus(),
        steps=steps,
        alternating=True,
        averaging="quadratic",
        record_every=steps,
    )
    xl, yl = traj.last.row, traj.last.col
    k = max(1, min(m, n, (int((xl > 0).sum()) + int((yl > 0).sum())) // 2))
    xa, ya = traj.average.row, traj.average.col
    S = np.argsort(-xa, kind="stable")[:k]
    T = np.argsort(-ya, kind="stable")[:k]
    return [int(i) for i in S], [int(j) for j in T]


def _bordered(a: np.ndarray, S: Any, T: Any) -> np.ndarray:
    k = len(S)
    M = np.zeros((k + 1, k + 1))
    M[0, 1:] = 1.0
    M[1:, 0] = 1.0
    M[1:, 1:] = a[np.ix_(S, T)]
    return M


def _pivot(
    a: np.ndarray, S: list[int], T: list[int], rng: np.random.Generator, max_pivots: int
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """The self-dual parametric simplex from the basis (S, T); returns x, y, v and the pivots.

    Index space of both sides: ``0..m-1`` are row actions (``x_i`` on the row side, ``t_i`` on
    the column side), ``m..m+n-1`` column actions (``s_j`` on the row side, ``y_j`` on the
    column side); ``rb[q]`` says that ``q`` is basic on the row side (else on the column side).
    ``val + mu * rate`` is the value of each basic variable along the parametric path.
    """
    basis = _Basis(a, S, T)
    m, n = a.shape
    N = m + n
    rb = np.zeros(N, dtype=bool)
    rb[S] = True
    rb[m:] = True
    rb[m + np.asarray(T)] = False

    # The perturbation, fixed once as right-hand sides of both LPs: at the start every basic
    # variable moves at a random positive rate in mu and the free v, w do not move.
    r = rng.uniform(0.5, 1.5, N)
    rx = np.where(rb[:m], r[:m], 0.0)
    rs = np.where(rb[m:], r[m:], 0.0)
    ry = np.where(rb[m:], 0.0, r[m:])
    rt = np.where(rb[:m], 0.0, r[:m])
    b_rate = np.r_[rx.sum(), a.T @ rx - rs]  # row LP:  [1^T x ; A^T x - v - s]
    c_rate = np.r_[ry.sum(), a @ ry + rt]  # column LP: [1^T y ; A y - w + t]

    def recompute() -> tuple[np.ndarray, np.ndarray]:
        k, Minv = basis.k, basis.Minv
        Sa, Ta = np.asarray(basis.S), np.asarray(basis.T)
        rhs = np.zeros((k + 1, 2))
        rhs[0] = 1.0, b_rate[0]
        rhs[1:, 1] = b_rate[1 + Ta]
        z = Minv.T @ rhs
        x = np.zeros((m, 2))
        x[Sa] = z[1:]
        s = a.T @ x + z[0]
        s[:, 1] -= b_rate[1:]
        rhs[0] = 1.0, c_rate[0]
        rhs[1:, 0] = 0.0
        rhs[1:, 1] = c_rate[1 + Sa]
        z = Minv @ rhs
        y = np.zeros((n, 2))
        y[Ta] = z[1:]
        t = -(a @ y) - z[0]
        t[:, 1] += c_rate[1:]
        val = np.where(rb, np.r_[x[:, 0], s[:, 0]], np.r_[t[:, 0], y[:, 0]])
        rate = np.where(rb, np.r_[x[:, 1], s[:, 1]], np.r_[t[:, 1], y[:, 1]])
        return val, rate

    val, rate = recompute()
    mu = np.inf
    count = since_refactor = 0
    muv = np.empty(N)
    try:
        while True:
            muv.fill(-np.inf)
            np.divide(-val, rate, out=muv, where=rate > 0)
            b = int(np.argmax(muv))
            if not muv[b] > 0:
                break  # optimal at mu = 0
            if count >= max_pivots:
                raise _Breakdown(f"no optimal basis after {max_pivots} pivots")
            mu = min(mu, float(muv[b]))
            # b reached zero on its side and leaves it: its complement enters the other side P.
            p_row = not rb[b]
            e = b
            dP, zP = basis.direction(p_row, e, rb)
            basic_p = rb if p_row else ~rb
            lv = _ratio_test(dP, np.maximum(val + mu * rate, 0.0), basic_p, e)
            # The other side Q: lv's complement enters, e's complement (at zero) leaves.
            dQ, zQ = basis.direction(not p_row, lv, rb)
            if not dQ[e] > 1e-13:
                raise _Breakdown("inconsistent pivot")
            tv, tr = -val[lv] / dP[lv], -rate[lv] / dP[lv]
            qv, qr = -val[e] / dQ[e], -rate[e] / dQ[e]
            val = val + np.where(basic_p, tv * dP, qv * dQ)
            rate = rate + np.where(basic_p, tr * dP, qr * dQ)
            val[e], rate[e] = tv, tr
            val[lv], rate[lv] = qv, qr
            rb[e], rb[lv] = p_row, not p_row
            z_row, z_col = (zP, zQ) if p_row else (zQ, zP)
            basis.update(e, lv, p_row, z_row, z_col)
            count += 1
            since_refactor += 1
            # Rank-one updates drift: refactor now and then (a refactor costs about k pivots).
            if since_refactor >= max(128, basis.k):
                since_refactor = 0
                basis.refactor()
                val, rate = recompute()

        S, T, k = basis.S, basis.T, basis.k
        # the final basis afresh (the updated inverse has drifted): one LU solves both sides
        with warnings.catch_warnings():  # an exactly singular basis warns; it is checked below
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            lu = scipy.linalg.lu_factor(_bordered(a, S, T), check_finite=False)
        if not np.abs(np.diagonal(lu[0])).min() > 0:
            raise _Breakdown("singular final basis")
        e0 = np.zeros(k + 1)
        e0[0] = 1.0
        zx = scipy.linalg.lu_solve(lu, e0, trans=1, check_finite=False)
        zy = scipy.linalg.lu_solve(lu, e0, check_finite=False)
    except (_Breakdown, np.linalg.LinAlgError) as err:
        raise _Breakdown(str(err), count) from None
    x, y = np.zeros(m), np.zeros(n)
    x[S] = zx[1:]
    y[T] = zy[1:]
    x = np.clip(x, 0.0, None)
    y = np.clip(y, 0.0, None)
    return x / x.sum(), y / y.sum(), float(-zx[0]), count


class _Basis:
    """The support pair (S, T), ``M^{-1}`` and contiguous copies of the rows ``A_S`` and the
    columns ``A_T`` (as rows): the products of a pivot touch only those, and ``M^{-1}`` is
    updated by rank-one formulas whose vectors the pivot's two directions already computed.

    Position ``p`` of ``S`` is row ``p + 1`` of ``M`` (column ``p + 1`` of ``M^{-1}``); position
    ``q`` of ``T`` is column ``q + 1`` of ``M`` (row ``q + 1`` of ``M^{-1}``).
    """

    def __init__(self, a: np.ndarray, S: list[int], T: list[int]) -> None:
        m, n = a.shape
        self.a, self.m = a, m
        self.S, self.T = list(S), list(T)
        self.posS = {i: p for p, i in enumerate(self.S)}
        self.posT = {j: q for q, j in enumerate(self.T)}
        cap = min(m, n)
        self.AS = np.empty((cap, n))
        self.AT = np.empty((cap, m))
        self.AS[: self.k] = a[self.S]
        self.AT[: self.k] = a[:, self.T].T
        M = _bordered(a, self.S, self.T)
        try:
            self.Minv = np.linalg.inv(M)
        except np.linalg.LinAlgError:
            raise _Breakdown("singular start basis", at_start=True) from None
        # e.g. a constant game, where every A_ST with k >= 2 is singular
        cond = np.abs(M).sum(0).max() * np.abs(self.Minv).sum(0).max()
        if not np.isfinite(self.Minv).all() or cond > 1e12:
            raise _Breakdown("ill-conditioned start basis", at_start=True)

    @property
    def k(self) -> int:
        """The support size |S| = |T|."""
        return len(self.S)

    def refactor(self) -> None:
        self.Minv = np.linalg.inv(_bordered(self.a, self.S, self.T))

    def direction(self, row_side: bool, e: int, rb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Change of one side's basic variables per unit increase of its nonbasic ``e``, and the
        core solution ``dz`` (``-[1, A_eT] M^{-1}`` when ``x_e`` enters, ``-M^{-1} [1; A_Sj]``
        when ``y_j`` enters: the rank-one updates reuse them)."""
        a, m, k, Minv = self.a, self.m, self.k, self.Minv
        d = np.zeros(rb.shape[0])
        if row_side:
            if e < m:  # x_e enters: M^T dz = -[1; A_eT]
                dz = -(np.r_[1.0, self.AT[:k, e]] @ Minv)
            else:  # s_j leaves zero (j in T): M^T dz = e_q
                dz = Minv[self.posT[e - m] + 1].copy()
            d[self.S] = dz[1:]
            ds = dz[1:] @ self.AS[:k] + dz[0]
            if e < m:
                ds += a[e]
            d[m:] = ds
            d[~rb] = 0.0
        else:
            if e >= m:  # y_j enters: M dz = -[1; A_Sj]
                dz = -(Minv @ np.r_[1.0, self.AS[:k, e - m]])
            else:  # t_i leaves zero (i in S): M dz = -e_p
                dz = -Minv[:, self.posS[e] + 1]
            d[m + np.asarray(self.T)] = dz[1:]
            dt = -(dz[1:] @ self.AT[:k]) - dz[0]
            if e >= m:
                dt -= a[:, e - m]
            d[:m] = dt
            d[rb] = 0.0
        d[e] = 1.0
        return d, dz

    def update(self, e: int, lv: int, p_row: bool, z_row: np.ndarray, z_col: np.ndarray) -> None:
        """Apply the pivot: ``e`` became basic on side P, ``lv`` on the other side. A row action
        joins S when it becomes row-basic, a column action joins T when it becomes column-basic.
        ``z_row`` / ``z_col`` are the row / column side's ``dz`` of this pivot."""
        a, m, k = self.a, self.m, self.k
        joins_S = leaves_S = joins_T = leaves_T = None
        for q, to_row in ((e, p_row), (lv, not p_row)):
            if q < m:
                if to_row:
                    joins_S = q
                else:
                    leaves_S = q
            elif to_row:
                leaves_T = q - m
            else:
                joins_T = q - m
        Minv = self.Minv
        if joins_S is not None and leaves_S is not None:
            # Row p+1 of M becomes [1, A_iT]: Sherman-Morrison with eta = [1, A_iT] M^{-1},
            # which is -z_row (x_i entered the row side), and [1, A_oldT] M^{-1} = e_{p+1}.
            p = self.posS.pop(leaves_S)
            eta = -z_row
            _check_pivot(eta[p + 1])
            col = Minv[:, p + 1].copy()
            eta[p + 1] -= 1.0
            _rank_one(Minv, col, eta, -1.0 / (eta[p + 1] + 1.0))
            self.S[p] = joins_S
            self.posS[joins_S] = p
            self.AS[p] = a[joins_S]
        elif joins_T is not None and leaves_T is not None:
            # Column q+1 of M becomes [1; A_Sj]: zeta = M^{-1} [1; A_Sj] = -z_col.
            q = self.posT.pop(leaves_T)
            zeta = -z_col
            _check_pivot(zeta[q + 1])
            row = Minv[q + 1].copy()
            zeta[q + 1] -= 1.0
            _rank_one(Minv, zeta, row, -1.0 / (zeta[q + 1] + 1.0))
            self.T[q] = joins_T
            self.posT[joins_T] = q
            self.AT[q] = a[:, joins_T]
        elif joins_S is not None:
            # Border M with row [1, A_iT, a_ij] and column [1; A_Sj]: Schur complement sigma.
            i, j = joins_S, joins_T
            eta, zeta = -z_row, -z_col
            sigma = a[i, j] - (eta[0] + eta[1:] @ self.AS[:k, j])
            _check_pivot(sigma)
            new = np.empty((k + 2, k + 2))
            new[: k + 1, : k + 1] = Minv + np.outer(zeta, eta / sigma)
            new[: k + 1, k + 1] = -zeta / sigma
            new[k + 1, : k + 1] = -eta / sigma
            new[k + 1, k + 1] = 1.0 / sigma
            self.Minv = new
            self.S.append(i)
            self.T.append(j)
            self.posS[i], self.posT[j] = k, k
            self.AS[k] = a[i]
            self.AT[k] = a[:, j]
        else:
            # Drop row p+1 and column q+1 of M: move both to the end first (a permutation of
            # M^{-1}'s columns and rows), then M^{-1} loses its last row and column.
            p, q = self.posS.pop(leaves_S), self.posT.pop(leaves_T)
            self._swap_to_end(p, q)
            piv = Minv[k, k]
            _check_pivot(piv)
            self.Minv = Minv[:k, :k] - np.outer(Minv[:k, k], Minv[k, :k] / piv)
            self.S.pop()
            self.T.pop()

    def _swap_to_end(self, p: int, q: int) -> None:
        """Move S position p and T position q to the last position (k - 1)."""
        k, Minv = self.k, self.Minv
        last = k - 1
        if p != last:
            i = self.S[last]
            self.S[p], self.S[last] = i, self.S[p]
            self.posS[i] = p
            self.AS[[p, last]] = self.AS[[last, p]]
            Minv[:, [p + 1, k]] = Minv[:, [k, p + 1]]
        if q != last:
            j = self.T[last]
            self.T[q], self.T[last] = j, self.T[q]
            self.posT[j] = q
            self.AT[[q, last]] = self.AT[[last, q]]
            Minv[[q + 1, k]] = Minv[[k, q + 1]]


def _ratio_test(d: np.ndarray, cur: np.ndarray, basic: np.ndarray, e: int) -> int:
    """The basic variable that reaches zero first as the entering one grows (Harris's two-pass
    test: among those reaching zero within a tolerance of the first, the one with the largest
    rate of decrease, so that degenerate games, whose ties are exact, never pivot on a
    rounding-sized element)."""
    drop = -d
    cand = basic & (drop > 1e-9 * max(1.0, float(np.abs(d).max())))
    cand[e] = False
    if not cand.any():
        raise _Breakdown("unbounded ratio test")
    idx = np.flatnonzero(cand)
    bound = ((cur[idx] + 1e-12) / drop[idx]).min()
    near = idx[cur[idx] / drop[idx] <= bound]
    return int(near[np.argmax(drop[near])])


def _check_pivot(value: float) -> None:
    if not abs(value) > 1e-11:
        raise _Breakdown(f"near-zero pivot {value!r}")


def _rank_one(target: np.ndarray, u: np.ndarray, w: np.ndarray, alpha: float) -> None:
    """``target += alpha * outer(u, w)`` in place (BLAS ger on the Fortran view, no temporary)."""
    out = blas.dger(alpha, w, u, a=target.T, overwrite_a=True)
    if not np.shares_memory(out, target):  # pragma: no cover - f2py copied (never for C order)
        target[...] = out.T
